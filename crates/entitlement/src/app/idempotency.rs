//! Idempotency keys (the rule is common's: `tenantry_common::idempotency`, the same as the
//! tenant service's): a keyed write claims its key in its own transaction and stores its answer
//! there, with the revision it commits under; a retry with the same key and request replays
//! that answer, the same key with another request (or for another write) is refused. Keys live
//! in the caller's scope.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tenantry_common::idempotency::Decision;

use super::Engine;
use super::ports::Storage;
use crate::domain::{DomainError, Grant, Result};

pub use tenantry_common::idempotency::{Idempotency, fingerprint};

/// A key a write stores in its transaction, for `operation` (not `Copy`, so a write's async
/// block takes it by value).
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    pub key: &'a Idempotency,
    pub operation: &'static str,
}

/// A key claimed in a write's transaction, awaiting its answer.
#[derive(Debug)]
pub(super) struct Claimed {
    scope: String,
    key: String,
}

impl Claimed {
    /// The answer to store: `answer` as a JSON object, whose `revision` is set at commit.
    pub(super) fn answer<T: Serialize>(self, answer: &T) -> Result<PendingReplay> {
        let answer = serde_json::to_value(answer).map_err(|e| DomainError::Internal {
            message: "serialize an idempotent answer".into(),
            source: Some(Box::new(e)),
        })?;
        let Value::Object(answer) = answer else {
            return Err(DomainError::internal(
                "an idempotent answer is not an object",
            ));
        };
        Ok(PendingReplay {
            claimed: self,
            answer,
        })
    }
}

/// A claimed key and its answer, written by [`Engine::commit_encoded`] with the revision the
/// write commits under, in the write's transaction: nothing is replayed that did not commit.
#[derive(Debug)]
pub(super) struct PendingReplay {
    claimed: Claimed,
    answer: serde_json::Map<String, Value>,
}

/// What a batch write returns: the affected ids in request order (or a count) and the
/// revision that includes it; `grants` when the write (or the stored answer) has them. Stored
/// as a key's answer (single creates keep the grants, batches only the ids).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchOutcome {
    pub ids: Vec<String>,
    pub count: u64,
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<Grant>>,
}

fn decode_err(e: serde_json::Error) -> DomainError {
    DomainError::Internal {
        message: "decode a stored idempotent answer".into(),
        source: Some(Box::new(e)),
    }
}

impl<S: Storage> Engine<S> {
    /// The stored answer to `key` for this request, if any; KEY_REUSED if it answered
    /// another request or another write.
    async fn replay<T: DeserializeOwned>(
        &self,
        key: &Idempotency,
        operation: &str,
    ) -> Result<Option<T>> {
        let stored = self.store.idempotency_record(&key.scope, &key.key).await?;
        let response = match key.decide(operation, stored) {
            Decision::Fresh => return Ok(None),
            Decision::Reused => return Err(DomainError::IdempotencyKeyReused(key.key.clone())),
            Decision::Replay(response) => response,
        };
        let mut answer: Value = serde_json::from_str(&response).map_err(decode_err)?;
        if let Value::Object(fields) = &mut answer {
            // Grants' records written before revisions were kept: the current revision,
            // which includes the write.
            if fields.get("revision").is_none_or(Value::is_null) {
                fields.insert("revision".into(), self.store.revision().await?.into());
            }
        }
        serde_json::from_value(answer).map(Some).map_err(decode_err)
    }

    /// Runs `write` (which claims the key it is given in its transaction, see
    /// [`Engine::claim`]) under `key`: a stored answer to the same request is returned without
    /// writing. Of two concurrent requests with one key, one writes; the other, finding the key
    /// taken when it claims it (after waiting for the first to commit), returns its answer.
    pub(super) async fn idempotent<'a, T, F, Fut>(
        &self,
        key: Option<&'a Idempotency>,
        operation: &'static str,
        write: F,
    ) -> Result<T>
    where
        T: DeserializeOwned,
        F: FnOnce(Option<Claim<'a>>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(key) = key else {
            return write(None).await;
        };
        if let Some(answer) = self.replay(key, operation).await? {
            return Ok(answer);
        }
        match write(Some(Claim { key, operation })).await {
            Err(DomainError::IdempotencyKeyTaken) => {
                self.replay(key, operation).await?.ok_or_else(|| {
                    DomainError::Unavailable(
                        "a concurrent request with this idempotency key did not finish; retry"
                            .into(),
                    )
                })
            }
            other => other,
        }
    }

    /// Stores a claimed key, without its answer yet, in `txn` (a concurrent twin's claim then
    /// waits for this transaction and fails with IdempotencyKeyTaken if it commits).
    pub(super) async fn claim(
        &self,
        txn: &S::Txn,
        claim: Option<Claim<'_>>,
    ) -> Result<Option<Claimed>> {
        let Some(Claim { key, operation }) = claim else {
            return Ok(None);
        };
        self.store
            .claim_idempotency_key(txn, key, operation, self.now())
            .await?;
        Ok(Some(Claimed {
            scope: key.scope.clone(),
            key: key.key.clone(),
        }))
    }

    /// [`Engine::claim`] in a write that knows its answer (but not its revision) already.
    pub(super) async fn claim_answering<T: Serialize>(
        &self,
        txn: &S::Txn,
        claim: Option<Claim<'_>>,
        answer: impl FnOnce() -> T,
    ) -> Result<Option<PendingReplay>> {
        match self.claim(txn, claim).await? {
            Some(claimed) => claimed.answer(&answer()).map(Some),
            None => Ok(None),
        }
    }

    /// Stores a claimed key's answer with the revision its write commits under.
    pub(super) async fn complete_replay(
        &self,
        txn: &S::Txn,
        pending: PendingReplay,
        revision: u64,
    ) -> Result<()> {
        let PendingReplay {
            claimed,
            mut answer,
        } = pending;
        answer.insert("revision".into(), revision.into());
        let response = Value::Object(answer).to_string();
        self.store
            .set_idempotent_response(txn, &claimed.scope, &claimed.key, &response)
            .await
    }

    /// Deletes idempotency keys stored before `before`, about `limit`; returns how many went.
    pub async fn prune_idempotency_keys(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        self.store.prune_idempotency_keys(before, limit).await
    }
}
