//! Background work: running migration jobs, waking change-feed followers on PostgreSQL
//! NOTIFY (writes by other replicas), and pruning the change feed and idempotency keys past
//! their retention.

use std::{sync::Arc, time::Duration};

use tenantry_common::{CancellationToken, db::StorageHealth};
use tokio::{sync::Notify, task::JoinHandle};

use crate::{
    domain::{Error, MIGRATION_BATCH},
    storage::{BatchProgress, Store},
};

/// How often idle runners look for jobs submitted through another replica.
const MIGRATION_POLL: Duration = Duration::from_secs(5);
/// Uploads older than this that never finished belong to a process that died.
const ABANDONED_UPLOAD_AGE: chrono::Duration = chrono::Duration::hours(1);

/// Change events deleted per pruning transaction: short transactions, so writers (which take
/// the SQLite write lock) never wait long behind one.
const PRUNE_BATCH: u64 = 1_000;
/// Pruning runs at most this far apart (more often under a short retention age).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How much of the change feed to keep; [`FeedRetention::default`] keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedRetention {
    pub max_age: Option<Duration>,
    pub max_events: Option<u64>,
}

impl FeedRetention {
    pub fn from_config(config: &tenantry_common::Config) -> Self {
        Self {
            max_age: config.feed_retention_age(),
            max_events: (config.feed_retention_events > 0).then_some(config.feed_retention_events),
        }
    }

    fn is_bounded(self) -> bool {
        self.max_age.is_some() || self.max_events.is_some()
    }

    /// A tenth of the age, so an event outlives its retention by at most ~10%.
    fn interval(self) -> Duration {
        self.max_age
            .map_or(PRUNE_EVERY, |age| age / 10)
            .clamp(Duration::from_secs(1), PRUNE_EVERY)
    }
}

/// Handles to the background tasks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Workers {
    migrations: Arc<Notify>,
    handles: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Workers {
    /// Tells the migration runner a job is waiting.
    pub fn wake_migrations(&self) {
        self.migrations.notify_one();
    }

    /// Waits for the background tasks to end (after shutdown fired).
    pub async fn join(&self) {
        let handles = match self.handles.lock() {
            Ok(mut handles) => std::mem::take(&mut *handles),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for handle in handles {
            if let Err(err) = handle.await {
                tracing::warn!(error = %err, "background task ended abnormally");
            }
        }
    }
}

/// Starts the background tasks; they end when `shutdown` fires. Idempotency keys are kept
/// `key_retention`. A write of theirs that storage refuses is reported to `storage`, as a
/// request's is: the service is unready until storage takes writes again.
pub fn start(
    store: &Store,
    retention: FeedRetention,
    key_retention: Duration,
    audit_retention: Option<chrono::Duration>,
    storage: &StorageHealth,
    shutdown: &CancellationToken,
) -> Workers {
    let migrations = Arc::new(Notify::new());
    let mut handles = vec![
        tokio::spawn(run_migrations(
            store.clone(),
            migrations.clone(),
            storage.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(prune_idempotency_keys(
            store.clone(),
            key_retention,
            storage.clone(),
            shutdown.clone(),
        )),
    ];
    if let Some(audit_retention) = audit_retention {
        handles.push(tokio::spawn(prune_audit(
            store.clone(),
            audit_retention,
            storage.clone(),
            shutdown.clone(),
        )));
    }
    if retention.is_bounded() {
        handles.push(tokio::spawn(prune_feed(
            store.clone(),
            retention,
            storage.clone(),
            shutdown.clone(),
        )));
    }
    // Followers still poll: a notification only wakes them early.
    if let Some(notifications) =
        tenantry_common::notify::Notifications::new(store.connection(), store.notify_channel())
    {
        handles.push(tokio::spawn(listen_for_changes(
            store.clone(),
            notifications,
            shutdown.clone(),
        )));
    }
    Workers {
        migrations,
        handles: Arc::new(std::sync::Mutex::new(handles)),
    }
}

async fn run_migrations(
    store: Store,
    wake: Arc<Notify>,
    storage: StorageHealth,
    shutdown: CancellationToken,
) {
    match store
        .sweep_abandoned_uploads(crate::domain::now() - ABANDONED_UPLOAD_AGE)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "discarded abandoned migration uploads"),
        Err(err) => {
            storage.report(&err);
            tracing::warn!(error = %err, "cannot discard abandoned migration uploads");
        }
    }
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let next = match store.next_runnable_migration().await {
            Ok(next) => next,
            Err(err) => {
                tracing::warn!(error = %err, "cannot look for migration jobs");
                None
            }
        };
        let Some(migration_id) = next else {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(MIGRATION_POLL) => {}
                () = shutdown.cancelled() => return,
            }
            continue;
        };
        tracing::info!(migration_id = %migration_id, "migration job running");
        // Between batches only: a batch is one short transaction, left to finish.
        while !shutdown.is_cancelled() {
            match store
                .run_migration_batch(&migration_id, MIGRATION_BATCH)
                .await
            {
                Ok(BatchProgress::More) => {
                    // A committed batch proves the storage takes writes again.
                    storage.recovered();
                    backoff = Duration::from_millis(200);
                }
                Ok(BatchProgress::Finished) => {
                    storage.recovered();
                    tracing::info!(migration_id = %migration_id, "migration job finished");
                    break;
                }
                // Nothing of the batch was written: it runs again once the database (or its
                // storage) takes writes.
                Err(
                    err @ (Error::Unavailable(_) | Error::StorageFull(_) | Error::StorageFailed(_)),
                ) => {
                    storage.report(&err);
                    tracing::warn!(migration_id = %migration_id, error = %err, "migration batch postponed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(err) => {
                    tracing::error!(migration_id = %migration_id, error = %err, source = ?std::error::Error::source(&err), "migration job failed");
                    let message = format!("the job stopped on an internal error: {err}");
                    if let Err(err) = store.fail_migration(&migration_id, &message).await {
                        tracing::warn!(migration_id = %migration_id, error = %err, "cannot mark migration failed");
                    }
                    break;
                }
            }
        }
    }
}

/// LISTENs on the store's channel and wakes local followers when another process commits.
async fn listen_for_changes(
    store: Store,
    mut notifications: tenantry_common::notify::Notifications,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            payload = notifications.recv() => store.wake_followers(payload.parse().unwrap_or(0)),
            () = shutdown.cancelled() => return,
        }
    }
}

/// Prunes the change feed past `retention` now and then. Every replica runs it; they may
/// overlap harmlessly (see `Store::prune_changes`).
async fn prune_feed(
    store: Store,
    retention: FeedRetention,
    storage: StorageHealth,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(retention.interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let policy = crate::domain::Retention {
            older_than: retention.max_age.and_then(|age| {
                chrono::Duration::from_std(age)
                    .ok()
                    .map(|age| crate::domain::now() - age)
            }),
            keep_events: retention.max_events,
        };
        match store.prune_changes(policy, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(events) => tracing::info!(events, "change feed events past retention pruned"),
            Err(err) => {
                storage.report(&err);
                tracing::warn!(error = %err, "pruning the change feed failed");
            }
        }
    }
}

/// Deletes idempotency keys stored more than `retention` ago.
async fn prune_idempotency_keys(
    store: Store,
    retention: Duration,
    storage: StorageHealth,
    shutdown: CancellationToken,
) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    tenantry_common::idempotency::prune_expired_keys(shutdown, storage, || {
        let before = crate::domain::now()
            .checked_sub_signed(retention)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let store = store.clone();
        async move {
            store
                .prune_idempotency_keys(before, tenantry_common::idempotency::PRUNE_BATCH)
                .await
        }
    })
    .await;
}

/// Deletes audit entries recorded more than `retention` ago.
async fn prune_audit(
    store: Store,
    retention: chrono::Duration,
    storage: StorageHealth,
    shutdown: CancellationToken,
) {
    tenantry_common::audit::prune_expired(shutdown, storage, || {
        let before = crate::domain::now()
            .checked_sub_signed(retention)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let store = store.clone();
        async move {
            store
                .prune_audit(before, tenantry_common::audit::PRUNE_BATCH)
                .await
        }
    })
    .await;
}
