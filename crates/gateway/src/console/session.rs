//! Console sessions: a sealed cookie (ChaCha20-Poly1305 under `console_session_key`) holding
//! who signed in, until when, and the session's CSRF token. The gateway keeps no session state,
//! so every replica configured with the same key serves every session, and a restart keeps
//! them; without a configured key, dev mode generates one into `data_dir` once and reuses it.
//! A cookie that does not open (another key, tampered, expired) is no session at all.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenantry_common::{Config, RunError};

use crate::auth::Principal;

/// The session cookie's name.
pub const COOKIE: &str = "tenantry_console";
/// Where the cookie is sent: the console only, never the REST API.
pub const COOKIE_PATH: &str = "/console";
/// How long a session that has not signed in yet (the sign-in form's CSRF token) lasts.
pub const ANONYMOUS_TTL_SECS: u64 = 3_600;
/// Binds a sealed cookie to its purpose, so nothing else sealed with the key opens as one.
const AAD: &[u8] = b"tenantry-console-session-v1";

/// One session, as sealed in the cookie.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// Unix seconds after which the session is void.
    pub exp: u64,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
    /// Who signed in; `None` before sign-in.
    pub who: Option<Principal>,
}

/// Seals and opens session cookies.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// The configured key, or (dev mode) one generated once into `data_dir` and reused.
    pub fn from_config(config: &Config) -> Result<Self, RunError> {
        let rng = SystemRandom::new();
        let material: Vec<u8> = match &config.console_session_key {
            Some(key) => key.expose().as_bytes().to_vec(),
            None => crate::credentials::dev_console_key(config)?
                .expose()
                .as_bytes()
                .to_vec(),
        };
        // A fixed-length key whatever the configured string's length.
        let digest = Sha256::new()
            .chain_update(AAD)
            .chain_update(&material)
            .finalize();
        let key = UnboundKey::new(&CHACHA20_POLY1305, &digest).map_err(|_| random_failed())?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng,
        })
    }

    /// A new session's random CSRF token.
    pub fn token(&self) -> String {
        let mut bytes = [0u8; 32];
        // SystemRandom reads the OS generator; it fails only on a broken system, where a
        // predictable token must not be used: the all-zero one never matches a real form
        // because `open` refuses sessions holding it.
        if self.rng.fill(&mut bytes).is_err() {
            tracing::error!("the system random generator failed; the console session is void");
            return String::new();
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cookie value of `session`.
    pub fn seal(&self, session: &Session) -> Option<String> {
        let mut data = serde_json::to_vec(session).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// The live session a cookie value holds; `None` when it does not open or has expired.
    pub fn open(&self, value: &str) -> Option<Session> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut sealed)
            .ok()?;
        let session: Session = serde_json::from_slice(plain).ok()?;
        (session.exp > unix_now() && !session.csrf.is_empty()).then_some(session)
    }
}

fn random_failed() -> RunError {
    RunError::Config(tenantry_common::config::ConfigError::Invalid {
        key: "console_session_key",
        message: "no key could be drawn from the system random generator".to_owned(),
    })
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The value of the session cookie among the request's `Cookie` headers.
pub fn cookie_value(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// The `Set-Cookie` value carrying `sealed` for `max_age` seconds (0 removes the cookie).
pub fn set_cookie(sealed: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={sealed}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// Compares CSRF tokens in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_common::Secret;

    fn sealer(key: &str) -> Sealer {
        Sealer::from_config(&Config {
            console_session_key: Some(Secret::new(key)),
            ..Config::default()
        })
        .unwrap()
    }

    fn session(exp: u64) -> Session {
        Session {
            exp,
            csrf: "token".into(),
            who: Some(Principal::Environment {
                client_id: "ops".into(),
            }),
        }
    }

    #[test]
    fn a_sealed_session_opens_only_with_its_key_untampered_and_unexpired() {
        let a = sealer(&"a".repeat(32));
        let cookie = a.seal(&session(unix_now() + 60)).unwrap();
        let opened = a.open(&cookie).unwrap();
        assert!(
            matches!(opened.who, Some(Principal::Environment { client_id }) if client_id == "ops")
        );
        // Another replica with the same key opens it too.
        assert!(sealer(&"a".repeat(32)).open(&cookie).is_some());
        assert!(sealer(&"b".repeat(32)).open(&cookie).is_none());
        // The client ID is not readable in the cookie.
        assert!(!cookie.contains("ops"));
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&cookie)
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert!(a.open(&tampered).is_none());
        let expired = a.seal(&session(unix_now() - 1)).unwrap();
        assert!(a.open(&expired).is_none());
        assert!(a.open("not base64 !").is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; tenantry_console=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&headers), Some("abc"));
        let set = set_cookie("abc", 60, true);
        for part in [
            "Path=/console",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=60",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set_cookie("abc", 60, false).contains("Secure"));
        assert!(same_token("x1", "x1"));
        assert!(!same_token("x1", "x2"));
        assert!(!same_token("", ""));
    }
}
