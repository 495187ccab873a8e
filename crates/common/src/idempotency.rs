//! Idempotency keys, one rule for every create of both services: a client sends a key
//! (REST `Idempotency-Key`, gRPC `idempotency_key`); the first request's answer is stored with
//! the key in the transaction of its write, and a retry with the same key and the same request
//! gets that answer again, while the same key with a different request is refused
//! ([`KEY_REUSED`], FAILED_PRECONDITION). Keys live in the caller's scope (see [`scope`]).

use std::{future::Future, hash::Hasher as _, time::Duration};

use fnv::FnvHasher;

use crate::{
    CancellationToken,
    db::{StorageFaultSource, StorageHealth},
};

/// The REST header carrying the key (lowercase, as `http` names headers).
pub const HEADER: &str = "idempotency-key";
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// What a valid key is, for error messages.
pub const KEY_RULE: &str = "must be 1-255 visible characters";
/// Reason (in `ErrorDetails.reason`) of a key sent again with a different request.
pub const KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";

/// Keys a pruner deletes per statement: no single statement grows with the backlog.
pub const PRUNE_BATCH: u64 = 500;
/// How often pruners look for expired keys (a read on an index when there are none).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// Whether `key` is a valid idempotency key: 1 to [`MAX_KEY_BYTES`] printable ASCII characters
/// (spaces allowed), so it fits an HTTP header and the key columns.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// FNV-1a over bytes, twice with different offsets, and the length: a stable request
/// fingerprint (std's hasher is seeded per process; fingerprints are stored with their keys,
/// so they must not change across versions). Not a defence against collisions chosen on
/// purpose: a caller can only collide with its own keys.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut f = Fingerprinter::default();
    f.update(bytes);
    f.finish()
}

/// [`fingerprint`] of a request that arrives in parts (a client stream): the parts' bytes
/// in order give the fingerprint of their concatenation.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprinter {
    a: u64,
    b: u64,
    len: u64,
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Self {
            // FNV-1a's own offset basis, and the high half of FNV-128's as the second.
            a: FnvHasher::default().finish(),
            b: 0x6c62_272e_07bb_0142,
            len: 0,
        }
    }
}

impl Fingerprinter {
    pub fn update(&mut self, bytes: &[u8]) {
        let fnv = |state: u64| {
            let mut hasher = FnvHasher::with_key(state);
            hasher.write(bytes);
            hasher.finish()
        };
        self.a = fnv(self.a);
        self.b = fnv(self.b);
        self.len += bytes.len() as u64;
    }

    pub fn finish(&self) -> String {
        format!("{:016x}{:016x}{:08x}", self.a, self.b, self.len)
    }
}

/// The scope a caller's keys live in: the principal the gateway names in
/// `x-tenantry-principal` (`environment:<clientId>` or `user:<sub>`), or the empty scope of
/// internal callers that name none. One caller can neither replay nor block another's keys.
pub fn scope(principal: Option<&str>) -> String {
    principal.unwrap_or_default().to_owned()
}

/// One request's idempotency key: validated, in its caller's scope, with the fingerprint of
/// the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
}

/// A stored key as a retry finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    pub operation: String,
    pub fingerprint: String,
    pub response: String,
}

/// What a request with a key does, given what is stored under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing stored: run the write, storing the key with it.
    Fresh,
    /// The same operation with the same request: answer with the stored response.
    Replay(String),
    /// Another operation or another request: refuse with [`KEY_REUSED`].
    Reused,
}

impl Idempotency {
    /// A key sent by `principal` with the request encoded as `request` (without its key), or
    /// [`KEY_RULE`] when the key is not valid.
    pub fn new(principal: Option<&str>, key: String, request: &[u8]) -> Result<Self, &'static str> {
        Self::with_fingerprint(principal, key, fingerprint(request))
    }

    /// [`Idempotency::new`] with the request's fingerprint already taken.
    pub fn with_fingerprint(
        principal: Option<&str>,
        key: String,
        fingerprint: String,
    ) -> Result<Self, &'static str> {
        if !is_valid_key(&key) {
            return Err(KEY_RULE);
        }
        Ok(Self {
            scope: scope(principal),
            key,
            fingerprint,
        })
    }

    /// [`Idempotency::new`] for a request that may carry no key.
    pub fn optional(
        principal: Option<&str>,
        key: Option<String>,
        request: &[u8],
    ) -> Result<Option<Self>, &'static str> {
        key.map(|key| Self::new(principal, key, request))
            .transpose()
    }

    /// Decides a request with this key for `operation`, given the record stored under it.
    pub fn decide(&self, operation: &str, stored: Option<StoredKey>) -> Decision {
        match stored {
            None => Decision::Fresh,
            Some(s) if s.operation == operation && s.fingerprint == self.fingerprint => {
                Decision::Replay(s.response)
            }
            Some(_) => Decision::Reused,
        }
    }
}

/// Deletes expired keys every [`PRUNE_INTERVAL`] until `shutdown`: `prune_batch` deletes up to
/// [`PRUNE_BATCH`] keys past the retention and says how many went; a full batch is followed at
/// once by another. A batch refused for a storage fault is reported to `storage`. Every
/// replica runs one; they overlap harmlessly.
pub async fn prune_expired_keys<F, Fut, E>(
    shutdown: CancellationToken,
    storage: StorageHealth,
    mut prune_batch: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
    E: std::fmt::Display + StorageFaultSource,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
        loop {
            match prune_batch().await {
                Ok(n) if n >= PRUNE_BATCH && !shutdown.is_cancelled() => {}
                Ok(0) => break,
                Ok(n) => {
                    tracing::debug!(pruned = n, "pruned expired idempotency keys");
                    break;
                }
                Err(err) => {
                    storage.report(&err);
                    tracing::warn!(error = %err, "pruning idempotency keys failed; will retry");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_visible_characters() {
        assert!(is_valid_key("a"));
        assert!(is_valid_key("order 42/retry-1"));
        assert!(is_valid_key(&"k".repeat(255)));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key(&"k".repeat(256)));
        assert!(!is_valid_key("tab\there"));
        assert!(!is_valid_key("new\nline"));
        assert!(!is_valid_key("clé"));
    }

    #[test]
    fn fingerprints_are_stable_and_tell_requests_apart() {
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
        assert_ne!(fingerprint(b""), fingerprint(b"\0"));
        assert_eq!(fingerprint(b"abc").len(), 40);
        // Stored with the keys: a release that changed it would refuse every retry of a
        // request made before the upgrade. FNV-1a 64 of "abc" is e71fa2190541574b.
        assert_eq!(
            fingerprint(b"abc"),
            "e71fa2190541574b8b7ebb2d468f71e600000003"
        );
        // The value grants' stored keys were written with: an upgrade keeps them matching.
        assert_eq!(
            fingerprint(b"abc"),
            "e71fa2190541574b8b7ebb2d468f71e600000003"
        );
        let mut parts = Fingerprinter::default();
        parts.update(b"ab");
        parts.update(b"c");
        assert_eq!(parts.finish(), fingerprint(b"abc"));
    }

    #[test]
    fn a_key_replays_only_its_own_operation_and_request() {
        let key = Idempotency {
            scope: "environment:x".into(),
            key: "k".into(),
            fingerprint: "f1".into(),
        };
        let stored = |operation: &str, fingerprint: &str| {
            Some(StoredKey {
                operation: operation.into(),
                fingerprint: fingerprint.into(),
                response: "r".into(),
            })
        };
        assert_eq!(key.decide("create_account", None), Decision::Fresh);
        assert_eq!(
            key.decide("create_account", stored("create_account", "f1")),
            Decision::Replay("r".into())
        );
        assert_eq!(
            key.decide("create_account", stored("create_account", "f2")),
            Decision::Reused
        );
        assert_eq!(
            key.decide("create_account", stored("add_membership", "f1")),
            Decision::Reused
        );
    }
}
