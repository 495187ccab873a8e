//! The change-feed outbox: appended in the writing transaction, read by followers.
//!
//! Sequences come from the single row of `change_feed_head`, incremented in the writing
//! transaction just before commit. The row lock makes the next writer wait until this one
//! commits, so sequences become visible in increasing order and a follower reading
//! `sequence > cursor` can never skip a row that commits later (which a BIGSERIAL allows).
//! Taking the lock last keeps the serialized section to the outbox inserts and the commit.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Value,
};

use super::{Result, Store, db_err, entities::change_events, signed, unsigned};
use crate::domain::{self, ChangeEvent, ChangeKind, ChangePayload, Error, NewChange};

/// Appends `changes` and returns the last sequence used.
pub(super) async fn append(
    txn: &DatabaseTransaction,
    store: &Store,
    changes: Vec<NewChange>,
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
    let mut rows = Vec::with_capacity(changes.len());
    for (i, change) in changes.into_iter().enumerate() {
        let payload = serde_json::to_string(&ChangePayload {
            account: change.account.clone(),
            detail: change.detail,
        })
        .map_err(|e| Error::internal("encode change event", e))?;
        rows.push(change_events::ActiveModel {
            sequence: Set(signed(first + i as u64)),
            change_type: Set(change.kind.as_str().to_owned()),
            tenant_id: Set(change.account.tenant_id),
            occurred_at: Set(occurred_at),
            payload: Set(payload),
        });
    }
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
    let payload: ChangePayload = serde_json::from_str(&row.payload).map_err(|e| {
        Error::internal(
            format!("change event {} cannot be decoded", row.sequence),
            e,
        )
    })?;
    Ok(ChangeEvent {
        sequence: unsigned(row.sequence),
        kind,
        tenant_id: row.tenant_id,
        occurred_at: row.occurred_at,
        account: payload.account,
        detail: payload.detail,
    })
}

impl Store {
    /// Up to `limit` events after `cursor`, in sequence order, optionally of some kinds only.
    pub async fn read_changes(
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
        rows.into_iter().map(event_from_row).collect()
    }

    /// The highest committed sequence.
    pub async fn feed_head(&self) -> Result<u64> {
        let row = self
            .connection()
            .query_one_raw(self.statement(
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
}
