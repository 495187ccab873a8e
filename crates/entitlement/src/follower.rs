//! Background work: following the tenant change feed, and keeping the index current with
//! other replicas' writes.
//!
//! The feed's effects (hierarchy copy, revocations, signup grants) are the use-cases of
//! [`crate::app::tenant_sync`], applied exactly once per event; this module only speaks the
//! feed's protocol and decides when to resynchronise.
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
use tenantry_common::CancellationToken;
use tenantry_common::grpc::{CallFailure, ClientChannel};
use tenantry_common::notify::Notifications;
use tenantry_proto::common::v1::ErrorDetails;
use tenantry_proto::tenant::v1::{
    AccountState, ChangeEvent, ChangeType, ReadSnapshotRequest, WatchChangesRequest,
    change_event::Detail, change_feed_service_client::ChangeFeedServiceClient,
};
use tokio_stream::StreamExt;

use crate::Engine;
use crate::app::tenant_sync::{AccountChange, FeedEvent, SnapshotAccount};
use crate::domain::webhook::{
    AccountNotice, AccountNoticeKind, FeedNotice, MigrationNotice, MigrationOutcome,
};
use crate::domain::{DomainError, Result};

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
    shutdown: CancellationToken,
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
    while !shutdown.is_cancelled() {
        let result = tokio::select! {
            r = follow_once(&engine, channel.clone(), max_message_bytes, &status) => r,
            () = shutdown.cancelled() => break,
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
                    engine.storage_health().report(err);
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
                engine.storage_health().report(err);
            }
            tracing::warn!(error = %err, "resynchronising with the tenant service failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
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
    shutdown: CancellationToken,
) {
    let mut alarmed = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(alarm_after / 3) => {}
            () = shutdown.cancelled() => return,
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
            Self::Stream(status) => CallFailure::of(status).is_transient(),
            // A full or failing disk is cured by its operator, not by resynchronising.
            Self::Apply(err) => matches!(
                err,
                DomainError::Unavailable(_)
                    | DomainError::RevisionWaitersFull { .. }
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
    let from_sequence = engine.feed_cursor().await?;
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
    let mut pruned_through = 0;
    let mut accounts = Vec::new();
    while let Some(message) = stream.next().await {
        let message = message?;
        sequence = Some(message.sequence);
        pruned_through = message.pruned_through;
        accounts.extend(message.accounts);
    }
    let Some(sequence) = sequence else {
        return Err(FollowError::Stream(tonic::Status::data_loss(
            "the tenant snapshot ended without a message",
        )));
    };
    let from = engine.feed_cursor().await?.max(pruned_through);
    let gap = match read_gap(client, from, sequence, max_message_bytes).await {
        Ok(events) => events,
        Err(err) if err.is_transient() => return Err(err),
        Err(err) => {
            // What cannot be read cannot wedge the follower: the snapshot's difference is
            // still announced.
            tracing::warn!(error = %err, from, sequence, "the feed's events before the snapshot cannot be read: announcing the snapshot's difference only");
            Vec::new()
        }
    };
    let applied = apply_snapshot(engine, sequence, &accounts, &gap).await?;
    tracing::info!(
        sequence,
        accounts = accounts.len(),
        changed = applied,
        gap_events = gap.len(),
        "resynchronised with the tenant service"
    );
    status.observe(sequence, sequence);
    Ok(())
}

/// How long reading the feed's retained events before a snapshot may take.
const GAP_READ_LIMIT: Duration = Duration::from_secs(30);

/// The feed events still retained after `from` up to the snapshot's `sequence`: what happened
/// in the gap, to announce (the snapshot holds their effects).
async fn read_gap(
    mut client: ChangeFeedServiceClient<ClientChannel>,
    from: u64,
    sequence: u64,
    max_message_bytes: usize,
) -> Result<Vec<ChangeEvent>, FollowError> {
    if from >= sequence {
        return Ok(Vec::new());
    }
    let read = async {
        let mut stream = client
            .watch_changes(WatchChangesRequest {
                from_sequence: from,
                change_types: Vec::new(),
                max_message_bytes: request_bound(max_message_bytes),
            })
            .await
            .map_err(stream_error)?
            .into_inner();
        let mut events = Vec::new();
        while let Some(message) = stream.next().await {
            let message = message.map_err(stream_error)?;
            // An empty message: the feed had nothing more when it was sent.
            let caught_up = message.events.is_empty();
            for event in message.events {
                if event.sequence > sequence {
                    return Ok(events);
                }
                let last = event.sequence == sequence;
                events.push(event);
                if last {
                    return Ok(events);
                }
            }
            if caught_up {
                break;
            }
        }
        Ok(events)
    };
    tokio::time::timeout(GAP_READ_LIMIT, read)
        .await
        .unwrap_or_else(|_| {
            Err(FollowError::Expired(
                "reading the feed's events before the snapshot took too long".into(),
            ))
        })
}

fn time(t: Option<prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

/// What a feed event does to the local copy of the hierarchy.
fn feed_event(event: &ChangeEvent) -> FeedEvent {
    let tenant_id = event.tenant_id.clone();
    let parent = event
        .account
        .as_ref()
        .and_then(|a| a.parent_tenant_id.clone());
    let change = match event.change_type() {
        ChangeType::Created => AccountChange::Created {
            tenant_id,
            parent_id: parent,
            occurred: time(event.occurred_at),
        },
        ChangeType::Reactivated | ChangeType::Updated | ChangeType::Metadata => {
            AccountChange::Live {
                tenant_id,
                parent_id: parent,
            }
        }
        ChangeType::Hierarchy => AccountChange::Live {
            tenant_id,
            parent_id: match &event.detail {
                Some(Detail::Hierarchy(h)) => h.new_parent_tenant_id.clone(),
                Some(Detail::Membership(_) | Detail::Migration(_)) | None => parent,
            },
        },
        ChangeType::Deleted => AccountChange::Deleted { tenant_id },
        // A migration's accounts came as their own events; its end changes no account. An
        // unknown (newer) type is skipped the same way: the cursor passes it, nothing else.
        ChangeType::Membership | ChangeType::MigrationFinished | ChangeType::Unspecified => {
            AccountChange::Ignored
        }
    };
    FeedEvent {
        sequence: event.sequence,
        change,
        notice: notice(event),
    }
}

/// What a feed event announces to webhooks.
fn notice(event: &ChangeEvent) -> Option<FeedNotice> {
    if event.change_type() == ChangeType::MigrationFinished {
        return migration_notice(event).map(FeedNotice::Migration);
    }
    account_notice(event).map(FeedNotice::Account)
}

/// A migration's end, as the feed carries it (its detail is the job as it ended).
fn migration_notice(event: &ChangeEvent) -> Option<MigrationNotice> {
    use tenantry_proto::tenant::v1::MigrationState;
    let Some(Detail::Migration(m)) = &event.detail else {
        return None;
    };
    let outcome = match m.state() {
        MigrationState::Completed => MigrationOutcome::Completed,
        MigrationState::Failed => MigrationOutcome::Failed,
        // Only an ended job is recorded; anything else is not an end to announce.
        MigrationState::Pending | MigrationState::Running | MigrationState::Unspecified => {
            return None;
        }
    };
    Some(MigrationNotice {
        migration_id: m.migration_id.clone(),
        outcome,
        total_items: m.total_items,
        processed_items: m.processed_items,
        created_items: m.created_items,
        skipped_items: m.skipped_items,
        failed_items: m.failed_items,
        failure_message: m.failure_message.clone(),
        created_at: time(m.created_at),
        started_at: time(m.started_at),
        finished_at: time(m.finished_at).or_else(|| time(event.occurred_at)),
    })
}

/// What an account's feed event announces to webhooks.
fn account_notice(event: &ChangeEvent) -> Option<AccountNotice> {
    let parent = event
        .account
        .as_ref()
        .and_then(|a| a.parent_tenant_id.clone());
    let kind = match (event.change_type(), &event.detail) {
        (ChangeType::Created, _) => AccountNoticeKind::Created,
        // Settings alone (`settings.…` fields) are their own event; anything else an update.
        (ChangeType::Updated, _)
            if !event.changed_fields.is_empty()
                && event
                    .changed_fields
                    .iter()
                    .all(|f| f.starts_with("settings.")) =>
        {
            AccountNoticeKind::SettingsChanged
        }
        (ChangeType::Updated | ChangeType::Metadata, _) => AccountNoticeKind::Updated,
        (ChangeType::Deleted, _) => AccountNoticeKind::Deleted,
        (ChangeType::Reactivated, _) => AccountNoticeKind::Reactivated,
        (ChangeType::Hierarchy, Some(Detail::Hierarchy(h))) => {
            AccountNoticeKind::HierarchyChanged {
                old_parent: h.old_parent_tenant_id.clone(),
                new_parent: h.new_parent_tenant_id.clone(),
            }
        }
        (ChangeType::Hierarchy, _) => AccountNoticeKind::HierarchyChanged {
            old_parent: None,
            new_parent: parent.clone(),
        },
        (ChangeType::Membership, Some(Detail::Membership(m))) => {
            AccountNoticeKind::MembershipChanged {
                user_id: m.user_id.clone(),
                added: m.added,
            }
        }
        (ChangeType::Membership | ChangeType::MigrationFinished | ChangeType::Unspecified, _) => {
            return None;
        }
    };
    let parent_id = match &kind {
        AccountNoticeKind::HierarchyChanged { new_parent, .. } => new_parent.clone(),
        AccountNoticeKind::Created
        | AccountNoticeKind::Updated
        | AccountNoticeKind::Deleted
        | AccountNoticeKind::Reactivated
        | AccountNoticeKind::SettingsChanged
        | AccountNoticeKind::MembershipChanged { .. } => parent,
    };
    let mut changed_fields = event.changed_fields.clone();
    if event.change_type() == ChangeType::Metadata && changed_fields.is_empty() {
        changed_fields.push("metadata".into());
    }
    Some(AccountNotice {
        tenant_id: event.tenant_id.clone(),
        parent_id,
        kind,
        changed_fields,
        occurred_at: time(event.occurred_at),
    })
}

/// Applies a batch of feed events exactly once.
pub async fn apply_events(engine: &Engine, events: &[ChangeEvent]) -> Result<()> {
    let events: Vec<FeedEvent> = events.iter().map(feed_event).collect();
    engine.apply_feed_events(&events).await
}

/// Makes the stored accounts those of a tenant snapshot as of `sequence`, announcing the
/// feed's `gap` events (retained before it) and what else the snapshot shows changed.
pub async fn apply_snapshot(
    engine: &Engine,
    sequence: u64,
    accounts: &[AccountState],
    gap: &[ChangeEvent],
) -> Result<usize> {
    let accounts: Vec<SnapshotAccount> = accounts
        .iter()
        .map(|a| SnapshotAccount {
            tenant_id: a.tenant_id.clone(),
            parent_id: a.parent_tenant_id.clone(),
            created_at: time(a.created_at),
        })
        .collect();
    let gap: Vec<FeedEvent> = gap.iter().map(feed_event).collect();
    engine
        .apply_tenant_snapshot(sequence, &accounts, &gap)
        .await
}

/// Keeps the index current with other replicas' writes: a notification (PostgreSQL LISTEN)
/// wakes it at once, a poll every `poll` covers lost notifications and listener outages.
/// Also prunes old change-log rows now and then.
pub async fn follow_change_log(engine: Arc<Engine>, poll: Duration, shutdown: CancellationToken) {
    let wake = Arc::new(tokio::sync::Notify::new());
    // Its own task, so the poll never cancels a listener reconnecting.
    let listener = Notifications::new(engine.store().connection(), engine.store().channel()).map(
        |notifications| {
            tokio::spawn(wake_on_notifications(
                engine.clone(),
                notifications,
                wake.clone(),
                shutdown.clone(),
            ))
        },
    );
    let mut ticks: u64 = 0;
    let mut interval = tokio::time::interval(poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            _ = interval.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(3600) {
                    prune(&engine).await;
                }
            }
        }
        if let Err(err) = engine.catch_up().await {
            tracing::warn!(error = %err, "catching up with the change log failed");
        }
    }
    if let Some(listener) = listener {
        let _ = listener.await;
    }
}

/// Wakes the change-log follower on other replicas' notifications. This process applies its
/// own commits to the index as it makes them, so their notifications are skipped.
async fn wake_on_notifications(
    engine: Arc<Engine>,
    mut notifications: Notifications,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            payload = notifications.recv() => {
                if !engine.store().is_own_notification(&payload) {
                    wake.notify_one();
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

async fn prune(engine: &Engine) {
    let before = engine.now() - chrono::Duration::hours(24);
    match engine.store().prune_log(before, 100_000).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, "old change-log rows pruned"),
        Err(err) => {
            engine.storage_health().report(&err);
            tracing::warn!(error = %err, "pruning the change log failed");
        }
    }
}
