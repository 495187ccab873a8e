//! User-token keys from the identity provider's JWKS URL: fetched on first use, refreshed every
//! few minutes and when a token names an unknown `kid` (at most every few seconds, so garbage
//! tokens cannot make the gateway hammer the provider).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{
    Algorithm, DecodingKey, Header,
    jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm},
};
use tokio::sync::{Mutex, RwLock};

use crate::error::ApiError;

const REFRESH_EVERY: Duration = Duration::from_secs(300);
const MIN_REFETCH_GAP: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 512 * 1024;

pub struct JwksCache {
    url: String,
    alg: Algorithm,
    keys: RwLock<Option<(JwkSet, Instant)>>,
    /// Serialises fetches; holds when the last one started.
    fetching: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(url: String, alg: Algorithm) -> Self {
        Self {
            url,
            alg,
            keys: RwLock::new(None),
            fetching: Mutex::new(None),
        }
    }

    /// The key for a token's header; 401 when none fits, 503 when the JWKS cannot be fetched.
    pub async fn key_for(&self, header: &Header) -> Result<DecodingKey, ApiError> {
        if header.alg != self.alg {
            return Err(ApiError::unauthenticated(
                "the token's algorithm is not accepted",
            ));
        }
        if let Some(key) = self.cached(header, false).await? {
            return Ok(key);
        }
        self.refresh().await?;
        self.cached(header, true).await?.ok_or_else(|| {
            ApiError::unauthenticated("the token's signing key is not known to the gateway")
        })
    }

    async fn cached(&self, header: &Header, fresh: bool) -> Result<Option<DecodingKey>, ApiError> {
        let guard = self.keys.read().await;
        let Some((set, fetched)) = guard.as_ref() else {
            return Ok(None);
        };
        if !fresh && fetched.elapsed() > REFRESH_EVERY {
            return Ok(None);
        }
        let jwk = match &header.kid {
            Some(kid) => set.find(kid),
            // Without a kid, only an unambiguous set can answer.
            None if set.keys.len() == 1 => set.keys.first(),
            None => None,
        };
        let Some(jwk) = jwk else { return Ok(None) };
        if let Some(key_alg) = jwk.common.key_algorithm
            && !alg_matches(key_alg, self.alg)
        {
            return Err(ApiError::unauthenticated(
                "the token's algorithm does not match its key",
            ));
        }
        // A symmetric key in a JWKS would let a public document become an HMAC secret.
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(ApiError::unauthenticated(
                "the token's signing key is not usable",
            ));
        }
        DecodingKey::from_jwk(jwk)
            .map(Some)
            .map_err(|_| ApiError::unauthenticated("the token's signing key is not usable"))
    }

    async fn refresh(&self) -> Result<(), ApiError> {
        let mut last = self.fetching.lock().await;
        if let Some(at) = *last {
            let fresh_enough = self
                .keys
                .read()
                .await
                .as_ref()
                .is_some_and(|(_, fetched)| *fetched >= at);
            if at.elapsed() < MIN_REFETCH_GAP && fresh_enough {
                return Ok(());
            }
        }
        *last = Some(Instant::now());
        match fetch(&self.url).await {
            Ok(set) => {
                *self.keys.write().await = Some((set, Instant::now()));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot fetch the user-token JWKS");
                if self.keys.read().await.is_some() {
                    // Keep serving the keys we have.
                    Ok(())
                } else {
                    Err(ApiError::new(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "the identity provider's keys cannot be fetched; retry later",
                    ))
                }
            }
        }
    }
}

fn alg_matches(key: KeyAlgorithm, alg: Algorithm) -> bool {
    let name = format!("{key:?}");
    let wanted = format!("{alg:?}");
    name == wanted
}

async fn fetch(url: &str) -> Result<JwkSet, String> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, get(url))
        .await
        .map_err(|_| "timed out".to_owned())??;
    serde_json::from_slice(&body).map_err(|e| format!("not a JWKS document: {e}"))
}

/// A plain HTTP/1.1 GET over TCP or TLS (webpki roots): the only outbound HTTP the gateway makes.
async fn get(url: &str) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    let request = http::Request::get(path)
        .header(http::header::HOST, authority(&host, port, https))
        .header(http::header::USER_AGENT, "tenantry-gateway")
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<axum::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let tls = tls_connector()?
            .connect(
                rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("bad host name: {e}"))?,
                tcp,
            )
            .await
            .map_err(|e| format!("tls: {e}"))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<IO>(
    io: IO,
    request: http::Request<Empty<axum::body::Bytes>>,
) -> Result<Vec<u8>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(async move {
        // The connection ends with the response; its error is the response's error.
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("http: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

fn authority(host: &str, port: u16, https: bool) -> String {
    if (https && port == 443) || (!https && port == 80) {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
