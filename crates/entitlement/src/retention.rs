//! Retention of idempotency keys and audit entries (below): a key answers retries for `idempotency_retention`, then a
//! background task deletes it, in bounded batches so no single statement grows with the
//! backlog.

use std::{sync::Arc, time::Duration};

use tenantry_common::CancellationToken;

use crate::Engine;

/// How often expired keys are looked for (a read on an index when there are none).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(5);
/// Keys deleted per statement.
const PRUNE_BATCH: u64 = 500;

/// Deletes idempotency keys older than `retention` (by the engine's clock) every
/// [`PRUNE_INTERVAL`] until `shutdown`.
pub async fn prune_idempotency_keys(
    engine: Arc<Engine>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
        let before = engine.now() - retention;
        loop {
            match engine.prune_idempotency_keys(before, PRUNE_BATCH).await {
                Ok(n) if n == PRUNE_BATCH && !shutdown.is_cancelled() => {}
                Ok(0) => break,
                Ok(n) => {
                    tracing::debug!(pruned = n, "pruned expired idempotency keys");
                    break;
                }
                Err(err) => {
                    engine.storage_health().report(&err);
                    tracing::warn!(error = %err, "pruning idempotency keys failed; will retry");
                    break;
                }
            }
        }
    }
}

/// Deletes audit entries recorded more than `retention` ago (by the engine's clock) every
/// [`tenantry_common::audit::PRUNE_INTERVAL`] until `shutdown`.
pub async fn prune_audit(
    engine: Arc<Engine>,
    retention: chrono::Duration,
    shutdown: CancellationToken,
) {
    let storage = engine.storage_health().clone();
    tenantry_common::audit::prune_expired(shutdown, storage, || {
        let before = engine
            .now()
            .checked_sub_signed(retention)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let engine = engine.clone();
        async move {
            engine
                .prune_audit(before, tenantry_common::audit::PRUNE_BATCH)
                .await
        }
    })
    .await;
}
