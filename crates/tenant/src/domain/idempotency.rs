//! Idempotency keys of the creates (the rule is shared: `tenantry_common::idempotency`).

pub use tenantry_common::idempotency::{Decision, Idempotency, StoredKey};

use super::error::Error;

/// Reason of a write whose key another request stored first (a concurrent twin): the write
/// is dropped and the twin's answer replayed.
pub const KEY_TAKEN: &str = "IDEMPOTENCY_KEY_TAKEN";

/// A key a write stores in its own transaction, for `operation`.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub key: &'a Idempotency,
    pub operation: &'static str,
}

impl Error {
    /// The key came before with another request (or for another operation).
    pub fn key_reused(key: &str) -> Self {
        Self::precondition(
            tenantry_common::idempotency::KEY_REUSED,
            format!("idempotency key {key} was already used for a different request"),
        )
    }

    /// A malformed key.
    pub fn key_invalid() -> Self {
        Self::invalid("idempotency_key", tenantry_common::idempotency::KEY_RULE)
    }
}
