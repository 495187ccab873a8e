//! Webhook requests over HTTP: reqwest over rustls (ring, webpki roots), no redirects, no
//! proxy from the environment, a deadline per attempt and a cap on the answer read. Unless
//! private networks are allowed, a name is resolved here and only its vetted addresses are
//! handed to the connector, so the address connected to is the address checked (no
//! DNS-rebinding gap); an IP literal is checked before the request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::app::webhooks::{SendOutcome, WebhookSender};
use crate::domain::webhook::{refused_address, validate_url};
use crate::domain::{DomainError, Result};

/// The most of an answer read (the rest is dropped unread).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The answer's excerpt kept in the delivery log.
const EXCERPT_BYTES: usize = 1024;

/// Resolves names to the addresses deliveries may reach.
#[derive(Debug, Clone, Copy)]
struct VettedResolver {
    allow_private: bool,
}

async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

impl Resolve for VettedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = lookup(&host, 0).await?;
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || refused_address(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                return Err("the host resolves only to addresses webhooks may not reach".into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The webhook HTTP client.
#[derive(Debug, Clone)]
pub struct HttpWebhookSender {
    client: reqwest::Client,
    allow_private: bool,
}

impl HttpWebhookSender {
    pub fn new(timeout: Duration, allow_private: bool) -> std::result::Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(4)
            .user_agent("tenantry-webhooks")
            .dns_resolver(Arc::new(VettedResolver { allow_private }))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            client,
            allow_private,
        })
    }
}

fn refused_url(reason: &str) -> DomainError {
    DomainError::invalid(
        "url",
        format!("points to a {reason} address, which webhooks may not reach"),
    )
}

/// The error's kind, without the URL (which may hold a token in its query).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "reading the answer failed"
    } else if err.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn vet(&self, host: &str, port: u16) -> Result<()> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return match refused_address(ip) {
                Some(reason) => Err(refused_url(reason)),
                None => Ok(()),
            };
        }
        let found = lookup(host, port)
            .await
            .map_err(|_| DomainError::invalid("url", "the host name does not resolve"))?;
        if found.is_empty() {
            return Err(DomainError::invalid(
                "url",
                "the host name does not resolve",
            ));
        }
        // Any address of the name refused: a round-robin name must not reach inside either.
        match found.iter().find_map(|a| refused_address(a.ip())) {
            Some(reason) => Err(refused_url(reason)),
            None => Ok(()),
        }
    }

    async fn send(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: String,
    ) -> SendOutcome {
        let failed = |error: String| SendOutcome {
            status: None,
            excerpt: None,
            error: Some(error),
        };
        let host = match validate_url(url) {
            Ok((host, _)) => host,
            Err(_) => return failed("the endpoint's URL is not valid".into()),
        };
        if !self.allow_private
            && let Ok(ip) = host.parse::<IpAddr>()
            && let Some(reason) = refused_address(ip)
        {
            return failed(format!("refused: a {reason} address"));
        }
        let mut request = self.client.post(url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => return failed(describe(&err)),
        };
        let status = response.status().as_u16();
        let mut read = Vec::new();
        let mut error = None;
        while read.len() < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(err) => {
                    error = Some(describe(&err));
                    break;
                }
            }
        }
        read.truncate(EXCERPT_BYTES);
        let excerpt = String::from_utf8_lossy(&read).into_owned();
        SendOutcome {
            status: Some(status),
            excerpt: (!excerpt.is_empty()).then_some(excerpt),
            error,
        }
    }
}
