//! Background work: following the tenant change feed, and keeping the index current with
//! other replicas' writes.
//!
//! Exactly-once feed effects: each received batch is applied in ONE transaction that first
//! locks the stored cursor row, skips events at or below it, applies the effects (hierarchy
//! copy, revocations, signup grants), stores the new cursor and commits. A crash before the
//! commit leaves neither effects nor cursor (the batch is replayed); after it, both (the
//! batch is skipped on replay). Replicas following the same feed serialize on the cursor row,
//! so two of them never apply the same event twice.
//!
//! Never wedged: when the feed says the cursor is older than what it retains
//! (`CURSOR_EXPIRED`), or when following fails at the same cursor again and again for a reason
//! retrying cannot cure (a message the client cannot decode, an event that cannot be applied),
//! the follower resynchronises: it reads the tenant service's snapshot of live accounts, applies
//! the difference with what it holds (creations with their signup plans, reactivations, parent
//! changes, and deletions, whose grants are revoked) and continues from the snapshot's
//! sequence. Nothing is skipped without the state it would have produced.
//!
//! Lag alarm: [`FeedStatus`] tracks the applied cursor, the feed head and when the follower was
//! last caught up; it is exported as metrics (`tenantry.entitlement.feed.lag_events`,
//! `tenantry.entitlement.feed.behind_seconds`), and while the follower has been behind for
//! longer than the configured `feed_lag_alarm_secs` a warning is logged and gRPC health reports
//! [`FEED_HEALTH_SERVICE`] NOT_SERVING (checks are still answered, so the server stays ready).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tenantry_common::Shutdown;
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::common::v1::ErrorDetails;
use tenantry_proto::tenant::v1::{
    AccountState, ChangeEvent, ChangeType, ReadSnapshotRequest, WatchChangesRequest,
    change_event::Detail, change_feed_service_client::ChangeFeedServiceClient,
};
use tokio_stream::StreamExt;

use serde_json::Value;

use crate::domain::{DomainError, Grant, GrantSource, IndexChange, revoke_grant};
use crate::service::{Engine, SYSTEM_PRINCIPAL};
use crate::storage::{Catalog, Result};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most feed events applied in one transaction while catching up.
const MAX_EVENTS_PER_APPLY: usize = 2_000;
/// Failures at the same cursor, for reasons retrying does not cure, before resynchronising.
const STUCK_ATTEMPTS: u32 = 3;
/// The gRPC health name reporting whether the follower keeps up with the tenant feed.
pub const FEED_HEALTH_SERVICE: &str = "tenantry.entitlement.v1.TenantFeed";
/// The reason the tenant feed gives for a cursor older than what it retains.
const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";

/// Where the follower stands, shared with the metrics and the lag alarm.
#[derive(Debug)]
pub struct FeedStatus {
    cursor: AtomicU64,
    head: AtomicU64,
    /// Unix milliseconds at which the follower last held every event of the feed.
    caught_up_at_ms: AtomicU64,
}

impl FeedStatus {
    fn new() -> Self {
        Self {
            cursor: AtomicU64::new(0),
            head: AtomicU64::new(0),
            caught_up_at_ms: AtomicU64::new(unix_ms()),
        }
    }

    /// Records the applied cursor and the head the feed last reported.
    fn observe(&self, cursor: u64, head: u64) {
        self.cursor.store(cursor, Ordering::Relaxed);
        self.head.fetch_max(head, Ordering::Relaxed);
        if cursor >= self.head.load(Ordering::Relaxed) {
            self.caught_up_at_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// Events the feed holds that the follower has not applied (as of the last message).
    pub fn lag_events(&self) -> u64 {
        self.head
            .load(Ordering::Relaxed)
            .saturating_sub(self.cursor.load(Ordering::Relaxed))
    }

    /// How long the follower has not been caught up (0 while it is).
    pub fn behind(&self) -> Duration {
        Duration::from_millis(
            unix_ms().saturating_sub(self.caught_up_at_ms.load(Ordering::Relaxed)),
        )
    }
}

fn unix_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default()
}

/// How the follower reports falling behind.
#[derive(Debug)]
pub struct LagAlarm {
    /// Behind the feed for this long: a warning, repeated as long as it lasts, and
    /// `keeping_up` false.
    pub after: Duration,
    pub keeping_up: tokio::sync::watch::Sender<bool>,
}

/// Follows the tenant feed until shutdown, reconnecting with backoff while the tenant service
/// is down (checks keep being served from the index meanwhile).
pub async fn follow_tenant_feed(
    engine: Arc<Engine>,
    channel: ClientChannel,
    max_message_bytes: usize,
    alarm: LagAlarm,
    shutdown: Shutdown,
) {
    let status = Arc::new(FeedStatus::new());
    // Kept alive while following: the gauges report through them.
    let _gauges = register_metrics(&status);
    let alarm = tokio::spawn(lag_alarm(
        status.clone(),
        alarm.after,
        alarm.keeping_up,
        shutdown.clone(),
    ));
    let mut backoff = Duration::from_millis(100);
    // Failures at one cursor that retrying does not cure.
    let mut stuck: (u64, u32) = (0, 0);
    while !shutdown.is_triggered() {
        let result = tokio::select! {
            r = follow_once(&engine, channel.clone(), max_message_bytes, &status) => r,
            () = shutdown.wait() => break,
        };
        let err = match result {
            Ok(()) => {
                tracing::info!("tenant change feed ended; reconnecting");
                backoff = Duration::from_millis(100);
                None
            }
            Err(FollowError::Expired(message)) => {
                tracing::warn!(reason = %message, "tenant change feed no longer holds this follower's cursor: resynchronising");
                Some(resync(&engine, channel.clone(), max_message_bytes, &status).await)
            }
            Err(err) => {
                let cursor = status.cursor.load(Ordering::Relaxed);
                if let FollowError::Apply(err) = &err {
                    engine.storage.report(err);
                }
                if err.is_transient() {
                    stuck = (cursor, 0);
                } else {
                    stuck = (cursor, if stuck.0 == cursor { stuck.1 + 1 } else { 1 });
                }
                tracing::warn!(error = %err, cursor, retry_ms = backoff.as_millis() as u64, "tenant change feed unavailable");
                if stuck.1 >= STUCK_ATTEMPTS {
                    tracing::warn!(
                        cursor,
                        attempts = stuck.1,
                        "tenant change feed stuck at one cursor: resynchronising"
                    );
                    stuck = (cursor, 0);
                    Some(resync(&engine, channel.clone(), max_message_bytes, &status).await)
                } else {
                    None
                }
            }
        };
        if let Some(Err(err)) = err {
            if let FollowError::Apply(err) = &err {
                engine.storage.report(err);
            }
            tracing::warn!(error = %err, "resynchronising with the tenant service failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.wait() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    let _ = alarm.await;
}

/// The lag gauges, observed from `status` at each export.
fn register_metrics(
    status: &Arc<FeedStatus>,
) -> (
    opentelemetry::metrics::ObservableGauge<u64>,
    opentelemetry::metrics::ObservableGauge<f64>,
) {
    let meter = opentelemetry::global::meter("tenantry-entitlement");
    let lag = status.clone();
    let events = meter
        .u64_observable_gauge("tenantry.entitlement.feed.lag_events")
        .with_description("tenant change-feed events not applied yet")
        .with_callback(move |o| o.observe(lag.lag_events(), &[]))
        .build();
    let behind = status.clone();
    let seconds = meter
        .f64_observable_gauge("tenantry.entitlement.feed.behind_seconds")
        .with_description("time since the follower last held every tenant change-feed event")
        .with_unit("s")
        .with_callback(move |o| o.observe(behind.behind().as_secs_f64(), &[]))
        .build();
    (events, seconds)
}

/// Warns, and reports `keeping_up` false, while the follower has been behind for longer than
/// `alarm_after`.
async fn lag_alarm(
    status: Arc<FeedStatus>,
    alarm_after: Duration,
    keeping_up: tokio::sync::watch::Sender<bool>,
    shutdown: Shutdown,
) {
    let mut alarmed = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(alarm_after / 3) => {}
            () = shutdown.wait() => return,
        }
        let behind = status.behind();
        let keeping = behind < alarm_after;
        keeping_up.send_if_modified(|ok| {
            let changed = *ok != keeping;
            *ok = keeping;
            changed
        });
        if !keeping {
            alarmed = true;
            tracing::warn!(
                behind_secs = behind.as_secs(),
                lag_events = status.lag_events(),
                cursor = status.cursor.load(Ordering::Relaxed),
                "entitlement follower lagging behind the tenant change feed: deletions and hierarchy changes are not applied yet"
            );
        } else if alarmed {
            alarmed = false;
            tracing::info!("entitlement follower caught up with the tenant change feed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("apply: {0}")]
    Apply(#[from] DomainError),
    #[error("{0}")]
    Expired(String),
}

impl FollowError {
    /// Whether retrying can cure it (an outage, a conflict) rather than meeting it again at
    /// the same cursor (a message this client cannot decode, an event it cannot apply).
    fn is_transient(&self) -> bool {
        match self {
            Self::Stream(status) => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Aborted
                    | tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
            ),
            // A full or failing disk is cured by its operator, not by resynchronising.
            Self::Apply(err) => matches!(
                err,
                DomainError::Unavailable(_)
                    | DomainError::StorageFull(_)
                    | DomainError::StorageFailed(_)
            ),
            Self::Expired(_) => false,
        }
    }
}

/// A stream error, or the feed's explicit word that the cursor is no longer retained.
fn stream_error(status: tonic::Status) -> FollowError {
    use prost::Message;
    let expired = status.code() == tonic::Code::FailedPrecondition
        && ErrorDetails::decode(status.details()).is_ok_and(|d| d.reason == CURSOR_EXPIRED);
    if expired {
        FollowError::Expired(status.message().to_owned())
    } else {
        FollowError::Stream(status)
    }
}

fn request_bound(max_message_bytes: usize) -> Option<u32> {
    Some(u32::try_from(max_message_bytes).unwrap_or(u32::MAX))
}

async fn follow_once(
    engine: &Engine,
    channel: ClientChannel,
    max_message_bytes: usize,
    status: &FeedStatus,
) -> Result<(), FollowError> {
    let from_sequence = engine.store.cursor().await?;
    // Only a message from the feed says whether this is caught up.
    status.cursor.store(from_sequence, Ordering::Relaxed);
    let mut client =
        ChangeFeedServiceClient::new(channel).max_decoding_message_size(max_message_bytes);
    let mut stream = client
        .watch_changes(WatchChangesRequest {
            from_sequence,
            change_types: Vec::new(),
            // The feed never sends more than this client decodes.
            max_message_bytes: request_bound(max_message_bytes),
        })
        .await
        .map_err(stream_error)?
        .into_inner();
    tracing::info!(from_sequence, "following the tenant change feed");
    while let Some(message) = stream.next().await {
        let message = message.map_err(stream_error)?;
        let mut head = message.head_sequence;
        let mut events = message.events;
        // A backlog (a bulk import, a restart) arrives as many small messages; taking what has
        // already arrived applies it in a few transactions instead of one per message, each
        // with its cursor lock, catalog read and index publication.
        let mut pending = None;
        while events.len() < MAX_EVENTS_PER_APPLY {
            match stream.next().now_or_never() {
                Some(Some(Ok(more))) => {
                    head = head.max(more.head_sequence);
                    events.extend(more.events);
                }
                // Apply what was gathered before reporting the error or the stream's end.
                Some(Some(Err(status))) => {
                    pending = Some(Err(stream_error(status)));
                    break;
                }
                Some(None) => {
                    pending = Some(Ok(()));
                    break;
                }
                None => break,
            }
        }
        let cursor = match events.last() {
            Some(last) => {
                apply_events(engine, &events).await?;
                last.sequence
            }
            None => status.cursor.load(Ordering::Relaxed),
        };
        status.observe(cursor, head);
        if let Some(end) = pending {
            return end;
        }
    }
    Ok(())
}

/// Reads the tenant service's snapshot and applies it (see the module documentation).
async fn resync(
    engine: &Engine,
    channel: ClientChannel,
    max_message_bytes: usize,
    status: &FeedStatus,
) -> Result<(), FollowError> {
    let mut client =
        ChangeFeedServiceClient::new(channel).max_decoding_message_size(max_message_bytes);
    let mut stream = client
        .read_snapshot(ReadSnapshotRequest {
            max_message_bytes: request_bound(max_message_bytes),
        })
        .await?
        .into_inner();
    let mut sequence = None;
    let mut accounts = Vec::new();
    while let Some(message) = stream.next().await {
        let message = message?;
        sequence = Some(message.sequence);
        accounts.extend(message.accounts);
    }
    let Some(sequence) = sequence else {
        return Err(FollowError::Stream(tonic::Status::data_loss(
            "the tenant snapshot ended without a message",
        )));
    };
    let applied = apply_snapshot(engine, sequence, &accounts).await?;
    tracing::info!(
        sequence,
        accounts = accounts.len(),
        changed = applied,
        "resynchronised with the tenant service"
    );
    status.observe(sequence, sequence);
    Ok(())
}

/// The effects of feed events and snapshots, gathered in one transaction.
struct Effects<'a> {
    engine: &'a Engine,
    txn: &'a sea_orm::DatabaseTransaction,
    now: chrono::DateTime<chrono::Utc>,
    catalog: Option<Catalog>,
    changes: Vec<IndexChange>,
}

impl Effects<'_> {
    /// Records a live account under `parent`.
    async fn upsert(&mut self, tenant: &str, parent: Option<&str>) -> Result<()> {
        self.engine
            .store
            .upsert_account(self.txn, tenant, parent, false, self.now)
            .await?;
        self.changes.push(IndexChange::UpsertTenant {
            id: tenant.to_owned(),
            parent: parent.map(str::to_owned),
        });
        Ok(())
    }

    /// A new account: recorded, with the signup plans that existed when it was created.
    async fn create(
        &mut self,
        tenant: &str,
        parent: Option<&str>,
        occurred: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        self.upsert(tenant, parent).await?;
        if self.catalog.is_none() {
            self.catalog = Some(self.engine.store.catalog(self.txn).await?);
        }
        let now = self.now;
        let grants: Vec<Grant> = self
            .catalog
            .iter()
            .flat_map(|c| c.plans.iter())
            // Only plans that existed when the account was created: replaying an old
            // feed must not hand today's signup plans to last year's accounts.
            .filter(|p| p.value.assign_on_signup && p.created_at <= occurred)
            .map(|p| signup_grant(&p.value, tenant, now))
            .collect();
        self.engine.store.insert_grants(self.txn, &grants).await?;
        self.changes
            .extend(grants.into_iter().map(IndexChange::UpsertGrant));
        Ok(())
    }

    /// A deleted account: its grants are revoked and it leaves the index.
    async fn delete(&mut self, tenant: &str) -> Result<()> {
        let store = &self.engine.store;
        store
            .upsert_account(self.txn, tenant, None, true, self.now)
            .await?;
        for grant in store.unrevoked_grants(self.txn, Some(tenant), None).await? {
            let grant = revoke_grant(
                &grant,
                Some(SYSTEM_PRINCIPAL),
                Some("tenant_deleted"),
                self.now,
            )?;
            store.update_grant(self.txn, &grant).await?;
            self.changes.push(IndexChange::UpsertGrant(grant));
        }
        // Last, so the revocations above do not re-create the node.
        self.changes.push(IndexChange::RemoveTenant {
            id: tenant.to_owned(),
        });
        Ok(())
    }
}

/// Applies a batch of feed events exactly once (see the module documentation).
pub async fn apply_events(engine: &Engine, events: &[ChangeEvent]) -> Result<()> {
    let store = &engine.store;
    let txn = store.begin().await?;
    let cursor = store.lock_cursor(&txn).await?;
    let now = engine.now();
    let mut last = cursor;
    let mut effects = Effects {
        engine,
        txn: &txn,
        now,
        catalog: None,
        changes: Vec::new(),
    };
    for event in events.iter().filter(|e| e.sequence > cursor) {
        last = last.max(event.sequence);
        let tenant = event.tenant_id.as_str();
        let parent = event
            .account
            .as_ref()
            .and_then(|a| a.parent_tenant_id.as_deref());
        match event.change_type() {
            ChangeType::Created => {
                let occurred = event
                    .occurred_at
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                    .unwrap_or(now);
                effects.create(tenant, parent, occurred).await?;
            }
            ChangeType::Reactivated | ChangeType::Updated | ChangeType::Metadata => {
                effects.upsert(tenant, parent).await?;
            }
            ChangeType::Hierarchy => {
                let new_parent = match &event.detail {
                    Some(Detail::Hierarchy(h)) => h.new_parent_tenant_id.as_deref(),
                    Some(Detail::Membership(_)) | None => parent,
                };
                effects.upsert(tenant, new_parent).await?;
            }
            ChangeType::Deleted => effects.delete(tenant).await?,
            ChangeType::Membership | ChangeType::Unspecified => {}
        }
    }
    let changes = effects.changes;
    if last == cursor {
        // Everything was applied before (a replay): nothing to record.
        return Ok(());
    }
    commit_feed(engine, txn, last, changes).await
}

/// Stores the cursor with the effects and publishes them to the index.
async fn commit_feed(
    engine: &Engine,
    txn: sea_orm::DatabaseTransaction,
    sequence: u64,
    changes: Vec<IndexChange>,
) -> Result<()> {
    let store = &engine.store;
    let now = engine.now();
    store.set_cursor(&txn, sequence, now).await?;
    if changes.is_empty() {
        txn.commit()
            .await
            .map_err(crate::storage::db_err("commit feed cursor"))?;
        return Ok(());
    }
    let revision = store.commit(txn, &changes, now).await?;
    tracing::debug!(sequence, revision, "tenant feed effects applied");
    engine.index.apply_committed(revision, changes, now).await
}

/// Makes the stored accounts those of a tenant snapshot as of `sequence`: accounts it lacks
/// are created (with their signup plans), deleted ones it holds are reactivated, parents are
/// corrected, and live accounts it does not hold are deleted. Returns how many accounts
/// changed. A cursor already at or past `sequence` means newer state is held: nothing to do.
pub async fn apply_snapshot(
    engine: &Engine,
    sequence: u64,
    accounts: &[AccountState],
) -> Result<usize> {
    let store = &engine.store;
    let txn = store.begin().await?;
    let cursor = store.lock_cursor(&txn).await?;
    if cursor >= sequence {
        return Ok(0);
    }
    let mut held: std::collections::HashMap<String, (Option<String>, bool)> = store
        .accounts(&txn)
        .await?
        .into_iter()
        .map(|(id, parent, deleted)| (id, (parent, deleted)))
        .collect();
    let mut effects = Effects {
        engine,
        txn: &txn,
        now: engine.now(),
        catalog: None,
        changes: Vec::new(),
    };
    let mut changed = 0;
    for account in accounts {
        let tenant = account.tenant_id.as_str();
        let parent = account.parent_tenant_id.as_deref();
        match held.remove(tenant) {
            None => {
                let created = account
                    .created_at
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                    .unwrap_or(effects.now);
                effects.create(tenant, parent, created).await?;
                changed += 1;
            }
            Some((held_parent, deleted)) => {
                if deleted || held_parent.as_deref() != parent {
                    effects.upsert(tenant, parent).await?;
                    changed += 1;
                }
            }
        }
    }
    // Live here, absent from the snapshot: deleted while this follower was not looking.
    for (tenant, (_, deleted)) in held {
        if !deleted {
            effects.delete(&tenant).await?;
            changed += 1;
        }
    }
    let changes = effects.changes;
    commit_feed(engine, txn, sequence, changes).await?;
    Ok(changed)
}

fn signup_grant(
    plan: &crate::domain::Plan,
    tenant: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Grant {
    Grant {
        id: uuid::Uuid::now_v7(),
        plan_id: plan.id,
        tenant_id: tenant.to_owned(),
        user_id: None,
        starts_at: now,
        expires_at: plan
            .default_time_limitation_days
            .map(|d| now + chrono::Duration::days(i64::from(d))),
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        source: GrantSource::Signup,
        external_id: None,
        granted_by: Some(SYSTEM_PRINCIPAL.to_owned()),
        metadata: Value::Null,
        created_at: now,
        updated_at: now,
    }
}

/// Keeps the index current with other replicas' writes: LISTEN/NOTIFY wakes it at once, a
/// poll every `poll` covers lost notifications and listener outages. Also prunes old
/// change-log rows now and then.
pub async fn follow_change_log(engine: Arc<Engine>, poll: Duration, shutdown: Shutdown) {
    let mut listener = None;
    let mut ticks: u64 = 0;
    let mut interval = tokio::time::interval(poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if listener.is_none() && engine.store.is_postgres() {
            listener = listen(&engine).await;
        }
        let woken = async {
            match listener.as_mut() {
                Some(l) => l
                    .recv()
                    .await
                    .map(|n| engine.store.is_own_notification(n.payload())),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.wait() => return,
            r = woken => match r {
                // This process applies its own commits to the index as it makes them.
                Ok(true) => continue,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "change-log listener lost; polling until it reconnects");
                    listener = None;
                }
            },
            _ = interval.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(3600) {
                    prune(&engine).await;
                }
            }
        }
        if let Err(err) = engine.index.catch_up().await {
            tracing::warn!(error = %err, "catching up with the change log failed");
        }
    }
}

async fn listen(engine: &Engine) -> Option<sea_orm::sqlx::postgres::PgListener> {
    let pool = engine.store.connection().get_postgres_connection_pool();
    let mut listener = match sea_orm::sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for change-log notifications");
            return None;
        }
    };
    match listener.listen(engine.store.channel()).await {
        Ok(()) => Some(listener),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for change-log notifications");
            None
        }
    }
}

async fn prune(engine: &Engine) {
    let before = engine.now() - chrono::Duration::hours(24);
    match engine.store.prune_log(before, 100_000).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, "old change-log rows pruned"),
        Err(err) => {
            engine.storage.report(&err);
            tracing::warn!(error = %err, "pruning the change log failed");
        }
    }
}
