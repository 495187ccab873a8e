//! Idempotency keys: a write given a key stores its answer in its own transaction, and a retry
//! with the same key and request replays that answer (a different request is refused).

use chrono::{DateTime, Utc};

use super::Engine;
use super::ports::{IdempotencyRecord, Storage};
use crate::domain::{DomainError, Grant, Result};

// The same request fingerprint as the tenant service's keys (and the one grants' stored keys
// were always written with: the pinned value in common's tests).
pub use tenantry_common::idempotency::fingerprint;

/// The answer an idempotency key replays: written in the transaction of the first call,
/// with the revision that call committed, so a retry answers exactly as the first call did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Replay {
    pub(super) ids: Vec<String>,
    pub(super) count: u64,
    /// Absent only in records written before revisions were kept (replayed with the
    /// current revision, which includes the write).
    #[serde(default)]
    pub(super) revision: Option<u64>,
    /// The created grants as first returned (single creates only: a batch answers with ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) grants: Option<Vec<Grant>>,
}

/// An idempotency record inserted at the start of a write, completed at commit.
#[derive(Debug)]
pub(super) struct PendingReplay {
    key: String,
    pub(super) replay: Replay,
}

/// What a batch write returns: the affected ids in request order (or a count) and the
/// revision that includes it; `grants` when the write (or the stored answer) has them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    pub ids: Vec<String>,
    pub count: u64,
    pub revision: u64,
    pub grants: Option<Vec<Grant>>,
}

/// The longest idempotency key, in bytes.
const MAX_KEY_BYTES: usize = 256;

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| DomainError::Internal {
        message: "serialize an idempotent answer".into(),
        source: Some(Box::new(e)),
    })
}

fn from_json<T: for<'de> serde::Deserialize<'de>>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| DomainError::Internal {
        message: "decode a stored idempotent answer".into(),
        source: Some(Box::new(e)),
    })
}

impl<S: Storage> Engine<S> {
    /// Replays an idempotency key's stored answer: `Ok(Some)` for the same request, an error
    /// for a different one, `Ok(None)` for a new key.
    async fn replay(
        &self,
        key: Option<&str>,
        operation: &str,
        fingerprint: &str,
    ) -> Result<Option<BatchOutcome>> {
        let Some(key) = key else { return Ok(None) };
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(DomainError::invalid(
                "idempotency_key",
                "must be 1 to 256 bytes",
            ));
        }
        match self.store.idempotency_record(key, operation).await? {
            Some(record) if record.fingerprint == fingerprint => {
                let replay: Replay = from_json(&record.response)?;
                let revision = match replay.revision {
                    Some(revision) => revision,
                    None => self.store.revision().await?,
                };
                Ok(Some(BatchOutcome {
                    ids: replay.ids,
                    count: replay.count,
                    revision,
                    grants: replay.grants,
                }))
            }
            Some(_) => Err(DomainError::IdempotencyKeyReused(key.to_owned())),
            None if self.store.idempotency_key_exists(key).await? => {
                Err(DomainError::IdempotencyKeyReused(key.to_owned()))
            }
            None => Ok(None),
        }
    }

    /// Runs an idempotent write: a stored answer is replayed; otherwise `write` runs and
    /// stores its answer in its own transaction. A concurrent twin with the same key loses on
    /// the key's primary key and then replays the winner's answer.
    pub(super) async fn idempotent<F, Fut>(
        &self,
        key: Option<&str>,
        operation: &'static str,
        fingerprint: &str,
        write: F,
    ) -> Result<BatchOutcome>
    where
        F: FnOnce(Option<(String, String)>) -> Fut,
        Fut: std::future::Future<Output = Result<BatchOutcome>>,
    {
        if let Some(done) = self.replay(key, operation, fingerprint).await? {
            return Ok(done);
        }
        let record = key.map(|k| (k.to_owned(), fingerprint.to_owned()));
        match write(record).await {
            Err(DomainError::IdempotencyKeyTaken) if key.is_some() => self
                .replay(key, operation, fingerprint)
                .await?
                .ok_or_else(|| DomainError::Unavailable("concurrent retry; try again".into())),
            other => other,
        }
    }

    /// Inserts the key's record first thing in the write's transaction (a concurrent twin
    /// then waits on it and replays), with the answer but not yet the revision, which
    /// [`Engine::commit_encoded`] adds.
    pub(super) async fn remember(
        &self,
        txn: &S::Txn,
        record: Option<(String, String)>,
        operation: &str,
        replay: Replay,
    ) -> Result<Option<PendingReplay>> {
        let Some((key, fingerprint)) = record else {
            return Ok(None);
        };
        let record = IdempotencyRecord {
            fingerprint,
            response: to_json(&replay)?,
        };
        self.store
            .store_idempotency_record(txn, &key, operation, &record, self.now())
            .await?;
        Ok(Some(PendingReplay { key, replay }))
    }

    /// Completes a pending record with the revision its write commits under.
    pub(super) async fn complete_replay(
        &self,
        txn: &S::Txn,
        mut pending: PendingReplay,
        revision: u64,
    ) -> Result<()> {
        pending.replay.revision = Some(revision);
        let response = to_json(&pending.replay)?;
        self.store
            .set_idempotent_response(txn, &pending.key, &response)
            .await
    }

    /// Deletes idempotency keys stored before `before`, at most `limit`; returns how many went.
    pub async fn prune_idempotency_keys(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        self.store.prune_idempotency_keys(before, limit).await
    }
}
