//! The change-feed outbox: appended in the writing transaction, read by followers.
//!
//! Sequences come from the single row of `change_feed_head`, incremented in the writing
//! transaction just before commit. The row lock makes the next writer wait until this one
//! commits, so sequences become visible in increasing order and a follower reading
//! `sequence > cursor` can never skip a row that commits later (which a BIGSERIAL allows).
//! Taking the lock last keeps the serialized section to the outbox inserts and the commit.
//!
//! Retention deletes a prefix of the outbox in bounded batches and records the highest
//! sequence deleted in `change_feed_retention`, in the same transaction. A reader checks that
//! mark after reading its events: a batch pruned before the read shows in the mark, one pruned
//! after it could not hide events from the read, so a cursor below the mark is refused
//! (CURSOR_EXPIRED) rather than silently skipping what was pruned.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    AccessMode, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, QuerySelect, TransactionOptions, TransactionTrait,
    Value,
};
use tokio::sync::watch;

use super::{
    Result, Store, db_err,
    entities::{accounts, change_events},
    signed, unsigned,
};
use crate::app::ports::FeedStore;
use crate::domain::{
    self, AccountChange, AccountState, ChangeEvent, ChangeKind, ChangePayload, Error, FeedEntry,
    FeedSnapshot, Migration, MigrationPayload, NewChange, Retention,
};

/// Appends `changes` (account changes) and returns the last sequence used.
pub(super) async fn append(
    txn: &DatabaseTransaction,
    store: &Store,
    changes: Vec<NewChange>,
) -> Result<u64> {
    let mut rows = Vec::with_capacity(changes.len());
    for change in changes {
        let payload = serde_json::to_string(&ChangePayload {
            account: change.account.clone(),
            detail: change.detail,
            changed_fields: change.changed_fields,
        })
        .map_err(|e| Error::internal("encode change event", e))?;
        rows.push((change.kind, Some(change.account.tenant_id), payload));
    }
    append_rows(txn, store, rows).await
}

/// Appends a migration's end (no account's change: its `tenant_id` is NULL) and returns its
/// sequence. Called in the transaction that records the job's final state, so the event
/// exists exactly when that state committed.
pub(super) async fn append_migration_finished(
    txn: &DatabaseTransaction,
    store: &Store,
    migration: Migration,
) -> Result<u64> {
    let payload = serde_json::to_string(&MigrationPayload { migration })
        .map_err(|e| Error::internal("encode migration event", e))?;
    append_rows(
        txn,
        store,
        vec![(ChangeKind::MigrationFinished, None, payload)],
    )
    .await
}

/// Appends outbox rows (kind, account, payload) under the next sequences.
async fn append_rows(
    txn: &DatabaseTransaction,
    store: &Store,
    changes: Vec<(ChangeKind, Option<String>, String)>,
) -> Result<u64> {
    let count = changes.len() as u64;
    let row = txn
        .query_one_raw(store.statement(
            "UPDATE change_feed_head SET last_sequence = last_sequence + ? WHERE id = 1 RETURNING last_sequence",
            vec![Value::from(signed(count))],
        ))
        .await
        .map_err(db_err("advance change feed"))?
        .ok_or_else(|| Error::internal("advance change feed", "change_feed_head row is missing"))?;
    let last = unsigned(
        row.try_get::<i64>("", "last_sequence")
            .map_err(db_err("read change feed head"))?,
    );
    let first = last + 1 - count;
    let occurred_at = domain::now();
    let rows: Vec<_> = changes
        .into_iter()
        .enumerate()
        .map(
            |(i, (kind, tenant_id, payload))| change_events::ActiveModel {
                sequence: Set(signed(first + i as u64)),
                change_type: Set(kind.as_str().to_owned()),
                tenant_id: Set(tenant_id),
                occurred_at: Set(occurred_at),
                payload: Set(payload),
            },
        )
        .collect();
    // Large deletes (thousands of memberships) are split so no statement exceeds the
    // drivers' bind-parameter limits.
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(500).collect();
        change_events::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await
            .map_err(db_err("insert change events"))?;
    }
    if store.is_postgres() {
        txn.execute_raw(store.statement(
            "SELECT pg_notify(?, ?)",
            vec![
                Value::from(store.notify_channel().to_owned()),
                Value::from(last.to_string()),
            ],
        ))
        .await
        .map_err(db_err("notify change feed"))?;
    }
    Ok(last)
}

fn event_from_row(row: change_events::Model) -> Result<ChangeEvent> {
    let kind = ChangeKind::parse(&row.change_type).ok_or_else(|| {
        Error::internal(
            format!("change event {} has an unknown type", row.sequence),
            "corrupt change_type column",
        )
    })?;
    let undecodable = |e: serde_json::Error| {
        Error::internal(
            format!("change event {} cannot be decoded", row.sequence),
            e,
        )
    };
    let entry = match kind {
        ChangeKind::MigrationFinished => {
            let payload: MigrationPayload =
                serde_json::from_str(&row.payload).map_err(undecodable)?;
            FeedEntry::MigrationFinished(payload.migration)
        }
        ChangeKind::Created
        | ChangeKind::Updated
        | ChangeKind::Deleted
        | ChangeKind::Reactivated
        | ChangeKind::Metadata
        | ChangeKind::Hierarchy
        | ChangeKind::Membership => {
            let payload: ChangePayload = serde_json::from_str(&row.payload).map_err(undecodable)?;
            FeedEntry::Account(Box::new(AccountChange {
                kind,
                tenant_id: row.tenant_id.unwrap_or_default(),
                // Rows recorded before events left out the large fields still hold them.
                account: domain::feed_view(&payload.account),
                detail: payload.detail,
                changed_fields: payload.changed_fields,
            }))
        }
    };
    Ok(ChangeEvent {
        sequence: unsigned(row.sequence),
        occurred_at: row.occurred_at,
        entry,
    })
}

impl Store {
    /// The highest sequence retention has deleted (0: none).
    pub async fn pruned_through(&self) -> Result<u64> {
        pruned_mark(self.connection(), self).await
    }

    /// Deletes the oldest events `retention` does not keep, `batch` per transaction, and
    /// returns how many were deleted. Several replicas may run it at once: deleting a prefix
    /// twice deletes nothing the second time, and the mark only grows.
    pub async fn prune_changes(&self, retention: Retention, batch: u64) -> Result<u64> {
        let keep_after = match retention.keep_events {
            Some(keep) => Some(self.feed_head().await?.saturating_sub(keep)),
            None => None,
        };
        let mut deleted = 0;
        loop {
            let (_turn, txn) = self.begin_write().await?;
            let oldest = change_events::Entity::find()
                .select_only()
                .column(change_events::Column::Sequence)
                .column(change_events::Column::OccurredAt)
                .order_by_asc(change_events::Column::Sequence)
                .limit(batch)
                .into_tuple::<(i64, DateTime<Utc>)>()
                .all(&txn)
                .await
                .map_err(db_err("find prunable change events"))?;
            // The prunable prefix of this batch: a prefix, so the mark says exactly what is gone.
            let through = oldest
                .iter()
                .take_while(|(sequence, occurred_at)| {
                    retention.older_than.is_some_and(|t| *occurred_at < t)
                        || keep_after.is_some_and(|k| unsigned(*sequence) <= k)
                })
                .last()
                .map(|(sequence, _)| *sequence);
            let Some(through) = through else {
                txn.rollback().await.map_err(db_err("rollback"))?;
                return Ok(deleted);
            };
            let result = change_events::Entity::delete_many()
                .filter(change_events::Column::Sequence.lte(through))
                .exec(&txn)
                .await
                .map_err(db_err("prune change events"))?;
            txn.execute_raw(self.statement(
                "UPDATE change_feed_retention SET pruned_through = ? WHERE id = 1 AND pruned_through < ?",
                vec![Value::from(through), Value::from(through)],
            ))
            .await
            .map_err(db_err("record change feed retention"))?;
            txn.commit()
                .await
                .map_err(db_err("commit change feed pruning"))?;
            deleted += result.rows_affected;
            if (oldest.len() as u64) < batch {
                return Ok(deleted);
            }
        }
    }
}

#[async_trait]
impl FeedStore for Store {
    /// Followers in this process wait on this; [`Store::wake_followers`] bumps it.
    fn subscribe_feed(&self) -> watch::Receiver<u64> {
        self.inner.feed_head.subscribe()
    }

    /// Up to `limit` events after `cursor`, in sequence order, optionally of some kinds only.
    /// CURSOR_EXPIRED when events after `cursor` were pruned.
    async fn read_changes(
        &self,
        cursor: u64,
        kinds: &[ChangeKind],
        limit: u64,
    ) -> Result<Vec<ChangeEvent>> {
        let mut select = change_events::Entity::find()
            .filter(change_events::Column::Sequence.gt(signed(cursor)));
        if !kinds.is_empty() {
            select = select
                .filter(change_events::Column::ChangeType.is_in(kinds.iter().map(|k| k.as_str())));
        }
        let rows = select
            .order_by_asc(change_events::Column::Sequence)
            .limit(limit)
            .all(self.connection())
            .await
            .map_err(db_err("read change feed"))?;
        // After the read (see the module documentation).
        let pruned_through = self.pruned_through().await?;
        if cursor < pruned_through {
            return Err(Error::cursor_expired(cursor, pruned_through));
        }
        rows.into_iter().map(event_from_row).collect()
    }

    /// The live accounts and the feed sequence they are as of, read in one snapshot.
    async fn feed_snapshot(&self) -> Result<FeedSnapshot> {
        // One snapshot for the head and the accounts: PostgreSQL's REPEATABLE READ takes it at
        // the first statement; a SQLite read transaction holds one from its first read.
        let options = if self.is_postgres() {
            TransactionOptions {
                isolation_level: Some(IsolationLevel::RepeatableRead),
                access_mode: Some(AccessMode::ReadOnly),
                sqlite_transaction_mode: None,
            }
        } else {
            TransactionOptions::default()
        };
        let txn = self
            .connection()
            .begin_with_options(options)
            .await
            .map_err(db_err("begin snapshot"))?;
        let sequence = head(&txn, self).await?;
        let pruned_through = pruned_mark(&txn, self).await?;
        let rows = accounts::Entity::find()
            .select_only()
            .column(accounts::Column::TenantId)
            .column(accounts::Column::ParentTenantId)
            .column(accounts::Column::CreatedAt)
            .filter(accounts::Column::DeletedAt.is_null())
            .order_by_asc(accounts::Column::TenantId)
            .into_tuple::<(String, Option<String>, DateTime<Utc>)>()
            .all(&txn)
            .await
            .map_err(db_err("read account snapshot"))?;
        txn.commit().await.map_err(db_err("end snapshot"))?;
        Ok(FeedSnapshot {
            sequence,
            pruned_through,
            accounts: rows
                .into_iter()
                .map(|(tenant_id, parent_tenant_id, created_at)| AccountState {
                    tenant_id,
                    parent_tenant_id,
                    created_at,
                })
                .collect(),
        })
    }

    /// The highest committed sequence.
    async fn feed_head(&self) -> Result<u64> {
        head(self.connection(), self).await
    }
}

async fn pruned_mark(conn: &impl ConnectionTrait, store: &Store) -> Result<u64> {
    let row = conn
        .query_one_raw(store.statement(
            "SELECT pruned_through FROM change_feed_retention WHERE id = 1",
            vec![],
        ))
        .await
        .map_err(db_err("read change feed retention"))?
        .ok_or_else(|| {
            Error::internal(
                "read change feed retention",
                "change_feed_retention row is missing",
            )
        })?;
    Ok(unsigned(
        row.try_get::<i64>("", "pruned_through")
            .map_err(db_err("read change feed retention"))?,
    ))
}

async fn head(conn: &impl ConnectionTrait, store: &Store) -> Result<u64> {
    let row = conn
        .query_one_raw(store.statement(
            "SELECT last_sequence FROM change_feed_head WHERE id = 1",
            vec![],
        ))
        .await
        .map_err(db_err("read change feed head"))?;
    match row {
        Some(row) => Ok(unsigned(
            row.try_get::<i64>("", "last_sequence")
                .map_err(db_err("read change feed head"))?,
        )),
        None => Err(Error::internal(
            "read change feed head",
            "change_feed_head row is missing",
        )),
    }
}
