//! Background work: following the tenant change feed, and keeping the index current with
//! other replicas' writes.
//!
//! Exactly-once feed effects: each received batch is applied in ONE transaction that first
//! locks the stored cursor row, skips events at or below it, applies the effects (hierarchy
//! copy, revocations, signup grants), stores the new cursor and commits. A crash before the
//! commit leaves neither effects nor cursor (the batch is replayed); after it, both (the
//! batch is skipped on replay). Replicas following the same feed serialize on the cursor row,
//! so two of them never apply the same event twice.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tenantry_common::Shutdown;
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::tenant::v1::{
    ChangeEvent, ChangeType, WatchChangesRequest, change_event::Detail,
    change_feed_service_client::ChangeFeedServiceClient,
};
use tokio_stream::StreamExt;

use serde_json::Value;

use crate::domain::{DomainError, Grant, GrantSource, IndexChange, revoke_grant};
use crate::service::{Engine, SYSTEM_PRINCIPAL};
use crate::storage::Result;

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most feed events applied in one transaction while catching up.
const MAX_EVENTS_PER_APPLY: usize = 2_000;

/// Follows the tenant feed until shutdown, reconnecting with backoff while the tenant service
/// is down (checks keep being served from the index meanwhile).
pub async fn follow_tenant_feed(
    engine: Arc<Engine>,
    channel: ClientChannel,
    max_message_bytes: usize,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_triggered() {
        let result = tokio::select! {
            r = follow_once(&engine, channel.clone(), max_message_bytes) => r,
            () = shutdown.wait() => return,
        };
        match result {
            Ok(()) => {
                tracing::info!("tenant change feed ended; reconnecting");
                backoff = Duration::from_millis(100);
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_ms = backoff.as_millis() as u64, "tenant change feed unavailable");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("apply: {0}")]
    Apply(#[from] DomainError),
}

async fn follow_once(
    engine: &Engine,
    channel: ClientChannel,
    max_message_bytes: usize,
) -> Result<(), FollowError> {
    let from_sequence = engine.store.cursor().await?;
    let mut client =
        ChangeFeedServiceClient::new(channel).max_decoding_message_size(max_message_bytes);
    let mut stream = client
        .watch_changes(WatchChangesRequest {
            from_sequence,
            change_types: Vec::new(),
        })
        .await?
        .into_inner();
    tracing::info!(from_sequence, "following the tenant change feed");
    while let Some(message) = stream.next().await {
        let mut events = message?.events;
        // A backlog (a bulk import, a restart) arrives as many small messages; taking what has
        // already arrived applies it in a few transactions instead of one per message, each
        // with its cursor lock, catalog read and index publication.
        let mut pending = None;
        while events.len() < MAX_EVENTS_PER_APPLY {
            match stream.next().now_or_never() {
                Some(Some(Ok(more))) => events.extend(more.events),
                // Apply what was gathered before reporting the error or the stream's end.
                Some(Some(Err(status))) => {
                    pending = Some(Err(status));
                    break;
                }
                Some(None) => {
                    pending = Some(Ok(()));
                    break;
                }
                None => break,
            }
        }
        if !events.is_empty() {
            apply_events(engine, &events).await?;
        }
        if let Some(end) = pending {
            return end.map_err(FollowError::from);
        }
    }
    Ok(())
}

/// Applies a batch of feed events exactly once (see the module documentation).
pub async fn apply_events(engine: &Engine, events: &[ChangeEvent]) -> Result<()> {
    let store = &engine.store;
    let txn = store.begin().await?;
    let cursor = store.lock_cursor(&txn).await?;
    let now = engine.now();
    let mut last = cursor;
    let mut changes = Vec::new();
    let mut catalog = None;
    for event in events.iter().filter(|e| e.sequence > cursor) {
        last = last.max(event.sequence);
        let tenant = event.tenant_id.as_str();
        let parent = event
            .account
            .as_ref()
            .and_then(|a| a.parent_tenant_id.as_deref());
        match event.change_type() {
            ChangeType::Created => {
                store
                    .upsert_account(&txn, tenant, parent, false, now)
                    .await?;
                changes.push(IndexChange::UpsertTenant {
                    id: tenant.to_owned(),
                    parent: parent.map(str::to_owned),
                });
                if catalog.is_none() {
                    catalog = Some(store.catalog(&txn).await?);
                }
                let occurred = event
                    .occurred_at
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                    .unwrap_or(now);
                let grants: Vec<Grant> = catalog
                    .iter()
                    .flat_map(|c| c.plans.iter())
                    // Only plans that existed when the account was created: replaying an old
                    // feed must not hand today's signup plans to last year's accounts.
                    .filter(|p| p.value.assign_on_signup && p.created_at <= occurred)
                    .map(|p| signup_grant(&p.value, tenant, now))
                    .collect();
                store.insert_grants(&txn, &grants).await?;
                changes.extend(grants.into_iter().map(IndexChange::UpsertGrant));
            }
            ChangeType::Reactivated | ChangeType::Updated | ChangeType::Metadata => {
                store
                    .upsert_account(&txn, tenant, parent, false, now)
                    .await?;
                changes.push(IndexChange::UpsertTenant {
                    id: tenant.to_owned(),
                    parent: parent.map(str::to_owned),
                });
            }
            ChangeType::Hierarchy => {
                let new_parent = match &event.detail {
                    Some(Detail::Hierarchy(h)) => h.new_parent_tenant_id.as_deref(),
                    Some(Detail::Membership(_)) | None => parent,
                };
                store
                    .upsert_account(&txn, tenant, new_parent, false, now)
                    .await?;
                changes.push(IndexChange::UpsertTenant {
                    id: tenant.to_owned(),
                    parent: new_parent.map(str::to_owned),
                });
            }
            ChangeType::Deleted => {
                store.upsert_account(&txn, tenant, None, true, now).await?;
                for grant in store.unrevoked_grants(&txn, Some(tenant), None).await? {
                    let grant =
                        revoke_grant(&grant, Some(SYSTEM_PRINCIPAL), Some("tenant_deleted"), now)?;
                    store.update_grant(&txn, &grant).await?;
                    changes.push(IndexChange::UpsertGrant(grant));
                }
                // Last, so the revocations above do not re-create the node.
                changes.push(IndexChange::RemoveTenant {
                    id: tenant.to_owned(),
                });
            }
            ChangeType::Membership | ChangeType::Unspecified => {}
        }
    }
    if last == cursor {
        // Everything was applied before (a replay): nothing to record.
        return Ok(());
    }
    store.set_cursor(&txn, last, now).await?;
    if changes.is_empty() {
        txn.commit()
            .await
            .map_err(crate::storage::db_err("commit feed cursor"))?;
        return Ok(());
    }
    let revision = store.commit(txn, &changes, now).await?;
    tracing::debug!(sequence = last, revision, "tenant feed events applied");
    engine.index.apply_committed(revision, changes, now).await
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
        Err(err) => tracing::warn!(error = %err, "pruning the change log failed"),
    }
}
