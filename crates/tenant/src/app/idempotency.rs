//! Idempotent creates: a key's first answer is stored in the create's own transaction and
//! replayed to retries of the same request, so a client that lost an answer (a timeout, a
//! killed connection) retries without creating twice or meeting its own 409.

use std::future::Future;

use serde::de::DeserializeOwned;

use super::ports::IdempotencyStore;
use crate::domain::{
    Claim, Error, Idempotency,
    error::Result,
    idempotency::{Decision, KEY_TAKEN},
};

/// Runs `write` (which stores the claim it is given in its transaction) under `key`: a stored
/// answer to the same request is returned without writing, a stored different request is
/// IDEMPOTENCY_KEY_REUSED. Of two concurrent requests with one key, one writes and the other,
/// finding the key taken when it tries to store it, returns the first one's answer.
pub async fn idempotent<'a, S, T, F, Fut>(
    store: &S,
    key: Option<&'a Idempotency>,
    operation: &'static str,
    write: F,
) -> Result<T>
where
    S: IdempotencyStore,
    T: DeserializeOwned,
    F: FnOnce(Option<Claim<'a>>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let Some(key) = key else {
        return write(None).await;
    };
    if let Some(answer) = replay(store, key, operation).await? {
        return Ok(answer);
    }
    match write(Some(Claim { key, operation })).await {
        Err(Error::AlreadyExists {
            reason: KEY_TAKEN, ..
        }) => replay(store, key, operation).await?.ok_or_else(|| {
            Error::Unavailable(
                "a concurrent request with this idempotency key did not finish; retry".into(),
            )
        }),
        other => other,
    }
}

/// The stored answer to `key` for this request, if any; an error if it answered another.
async fn replay<S: IdempotencyStore, T: DeserializeOwned>(
    store: &S,
    key: &Idempotency,
    operation: &str,
) -> Result<Option<T>> {
    let stored = store.idempotent_response(&key.scope, &key.key).await?;
    match key.decide(operation, stored) {
        Decision::Fresh => Ok(None),
        Decision::Replay(response) => serde_json::from_str(&response)
            .map(Some)
            .map_err(|e| Error::internal("decode idempotent answer", e)),
        Decision::Reused => Err(Error::key_reused(&key.key)),
    }
}
