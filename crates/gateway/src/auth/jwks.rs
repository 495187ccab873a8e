//! User-token keys from the identity provider's JWKS URL: fetched on first use, refreshed every
//! few minutes and when a token names an unknown `kid` (at most every few seconds, so garbage
//! tokens cannot make the gateway hammer the provider).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

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
    client: reqwest::Client,
    alg: Algorithm,
    keys: RwLock<Option<(JwkSet, Instant)>>,
    /// Serialises fetches; holds when the last one started.
    fetching: Mutex<Option<Instant>>,
}

impl JwksCache {
    /// Fails only when the HTTP client cannot be built (its TLS configuration).
    pub fn new(url: String, alg: Algorithm) -> Result<Self, String> {
        Ok(Self {
            url,
            client: client()?,
            alg,
            keys: RwLock::new(None),
            fetching: Mutex::new(None),
        })
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
        match fetch(&self.client, &self.url).await {
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

/// The client for JWKS fetches: the workspace's HTTP client over rustls (ring) trusting the
/// webpki roots, as the runtime image has no system certificate store; HTTP/1.1 only, no
/// redirects and no proxy taken from the environment.
fn client() -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("tenantry-gateway")
        .build()
        .map_err(|e| format!("http client: {e}"))
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<JwkSet, String> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, get(client, url))
        .await
        .map_err(|_| "timed out".to_owned())??;
    serde_json::from_slice(&body).map_err(|e| format!("not a JWKS document: {e}"))
}

/// The document at `url`, refused past [`MAX_JWKS_BYTES`] without reading further.
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("http: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let too_large = || format!("body: larger than {MAX_JWKS_BYTES} bytes");
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("body: {e}"))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
