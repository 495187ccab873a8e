//! Webhook signing secrets at rest: sealed with AES-256-GCM under an operator-supplied key.
//!
//! A sealed value is `sealed:v1:{key id}:{base64(nonce ‖ ciphertext ‖ tag)}`: the key ID
//! travels with each row, so keys rotate (the first configured key seals; the others only
//! open), and the row's ID is the associated data, so a sealed secret copied onto another
//! endpoint does not open. A value without the prefix is a plaintext secret, as stored before
//! keys were configured (or while none is). Pure: no IO.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;

use super::{DomainError, Result};

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 12;
/// Longest key ID.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Most keys configured (the current one and those being rotated out).
pub const MAX_KEYS: usize = 10;

/// The configured keys, the sealing one first. Its `Debug` names the key IDs only.
pub struct SecretKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

/// Why a stored secret cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("it is sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("it is sealed, and no key is configured")]
    NoKeys,
    #[error("it does not open with key {0:?} (wrong key, or not this endpoint's)")]
    Corrupt(String),
}

impl SecretKeys {
    /// Parses `id:base64-key` entries (the key 32 bytes, standard base64), the sealing key
    /// first. IDs: 1-32 of `A-Z a-z 0-9 _ -`, distinct. Errors name the entry by position, never
    /// its key.
    pub fn parse(entries: &[&str]) -> Result<Self> {
        let bad = |message: String| DomainError::invalid("webhook_secret_keys", message);
        if entries.is_empty() || entries.len() > MAX_KEYS {
            return Err(bad(format!("1 to {MAX_KEYS} keys")));
        }
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let Some((id, key)) = entry.trim().split_once(':') else {
                return Err(bad(format!("entry {i} is not id:base64-key")));
            };
            if id.is_empty()
                || id.len() > MAX_KEY_ID_LEN
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(bad(format!(
                    "entry {i}'s ID must be 1-{MAX_KEY_ID_LEN} of A-Z a-z 0-9 _ -"
                )));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(bad(format!("key ID {id:?} is listed twice")));
            }
            let cipher = BASE64
                .decode(key.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .and_then(|k| Aes256Gcm::new_from_slice(&k).ok())
                .ok_or_else(|| bad(format!("key {id:?} is not 32 bytes in standard base64")))?;
            keys.push((id.to_owned(), cipher));
        }
        Ok(Self { keys })
    }

    /// The sealing key's ID.
    pub fn current(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `secret` under the current key, bound to `owner` (the endpoint's ID).
    pub fn seal(&self, secret: &str, owner: &[u8]) -> Result<String> {
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: owner,
                },
            )
            .map_err(|_| DomainError::internal("sealing a webhook secret failed"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{id}:{}", BASE64.encode(bytes)))
    }
}

/// The key ID `stored` is sealed with (`None`: plaintext).
pub fn sealed_with(stored: &str) -> Option<&str> {
    stored
        .strip_prefix(PREFIX)
        .map(|rest| rest.split_once(':').map_or(rest, |(id, _)| id))
}

/// The secret `stored` holds for `owner`: a plaintext one as is, a sealed one opened with its
/// key.
pub fn open(keys: Option<&SecretKeys>, stored: &str, owner: &[u8]) -> Result<String, OpenError> {
    let Some(rest) = stored.strip_prefix(PREFIX) else {
        return Ok(stored.to_owned());
    };
    let (id, body) = rest.split_once(':').unwrap_or((rest, ""));
    let keys = keys.ok_or(OpenError::NoKeys)?;
    let (_, cipher) = keys
        .keys
        .iter()
        .find(|(k, _)| k == id)
        .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
    let corrupt = || OpenError::Corrupt(id.to_owned());
    let bytes = BASE64.decode(body).map_err(|_| corrupt())?;
    if bytes.len() < NONCE_LEN {
        return Err(corrupt());
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| corrupt())?;
    let plain = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: owner,
            },
        )
        .map_err(|_| corrupt())?;
    String::from_utf8(plain).map_err(|_| corrupt())
}

/// Whether `stored` is as `keys` would store it now: sealed with the current key, or plaintext
/// when no key is configured.
pub fn is_current(keys: Option<&SecretKeys>, stored: &str) -> bool {
    sealed_with(stored) == keys.map(SecretKeys::current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    #[test]
    fn a_sealed_secret_hides_it_and_opens_only_for_its_endpoint_with_a_known_key() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let keys = SecretKeys::parse(&[K1]).unwrap();
        let sealed = keys.seal(secret, b"endpoint-a").unwrap();
        assert!(sealed.starts_with("sealed:v1:k1:"), "{sealed}");
        assert!(!sealed.contains("MfKQ9r8GKYqr"), "{sealed}");
        assert_ne!(
            keys.seal(secret, b"endpoint-a").unwrap(),
            sealed,
            "fresh nonce"
        );
        assert_eq!(open(Some(&keys), &sealed, b"endpoint-a").unwrap(), secret);
        assert_eq!(
            open(Some(&keys), &sealed, b"endpoint-b"),
            Err(OpenError::Corrupt("k1".into()))
        );
        assert_eq!(open(None, &sealed, b"endpoint-a"), Err(OpenError::NoKeys));
        let other = SecretKeys::parse(&[K2]).unwrap();
        assert_eq!(
            open(Some(&other), &sealed, b"endpoint-a"),
            Err(OpenError::UnknownKey("k1".into()))
        );
        // Rotation: k2 seals, k1 still opens.
        let rotated = SecretKeys::parse(&[K2, K1]).unwrap();
        assert_eq!(
            open(Some(&rotated), &sealed, b"endpoint-a").unwrap(),
            secret
        );
        assert!(!is_current(Some(&rotated), &sealed));
        assert!(is_current(Some(&keys), &sealed));
        // Plaintext: read as is; current only without keys.
        assert_eq!(open(Some(&keys), secret, b"x").unwrap(), secret);
        assert!(is_current(None, secret) && !is_current(Some(&keys), secret));
        assert_eq!(format!("{rotated:?}"), r#"["k2", "k1"]"#);
    }

    #[test]
    fn keys_are_validated_without_echoing_them() {
        for bad in [
            vec![],
            vec!["nokey"],
            vec!["k1:c2hvcnQ="],
            vec![":AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
            vec!["k 1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
            vec![K1, K1],
        ] {
            let err = SecretKeys::parse(&bad).unwrap_err().to_string();
            assert!(err.contains("webhook_secret_keys"), "{bad:?}: {err}");
            assert!(!err.contains("AAECAwQF"), "{err}");
        }
    }
}
