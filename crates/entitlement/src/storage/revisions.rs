//! Revisions and the change log: the revision row every index-changing commit bumps, the
//! log entries other replicas replay, and its pruning.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, Value,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::index_load::indexed_grant;
use super::{Store, db_err, entities, from_json, to_json};
use crate::app::ports::{Advanced, Revisions, WebhookStore};
use crate::domain::{DomainError, IndexChange, IndexWriter, Result};

/// Takes the next revision, records the change log under it, announces it (delivered at
/// commit, to every replica listening) and says whether a webhook endpoint is enabled.
/// `$4` is this replica's origin: the payload is `"{revision} {origin}"`.
const ADVANCE_PG: &str = "WITH r AS (\
       UPDATE ent_revision SET value = value + 1 WHERE id = 1 RETURNING value), \
     l AS (INSERT INTO ent_change_log (revision, changes, created_at) \
       SELECT value, $1, $2 FROM r) \
     SELECT r.value, \
       EXISTS (SELECT 1 FROM ent_webhook_endpoint WHERE enabled) AS wanted \
     FROM r CROSS JOIN LATERAL \
       (SELECT pg_notify($3, CAST(r.value AS text) || ' ' || $4)) AS n";

/// A change-log entry, encoded.
#[derive(Debug)]
pub struct EncodedChanges(String);

#[async_trait]
impl Revisions for Store {
    type Encoded = EncodedChanges;

    fn encode(&self, changes: &[IndexChange]) -> Result<EncodedChanges> {
        encode_log(changes).map(EncodedChanges)
    }

    async fn advance(
        &self,
        txn: &DatabaseTransaction,
        log: EncodedChanges,
        now: DateTime<Utc>,
    ) -> Result<Advanced> {
        if self.is_postgres() {
            // One statement: a write's commit waits on this round trip with the revision row
            // locked, and every replica's writes queue behind that lock.
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    ADVANCE_PG,
                    [
                        Value::from(log.0),
                        Value::from(now),
                        Value::from(self.channel.clone()),
                        Value::from(self.origin.payload_suffix()),
                    ],
                ))
                .await
                .map_err(db_err("advance the revision"))?
                .ok_or_else(|| DomainError::internal("revision row is missing"))?;
            let revision: i64 = row
                .try_get("", "value")
                .map_err(db_err("read the revision"))?;
            let webhooks_wanted: bool = row
                .try_get("", "wanted")
                .map_err(db_err("read the revision"))?;
            return Ok(Advanced {
                revision: revision as u64,
                webhooks_wanted,
            });
        }
        let row = txn
            .query_one_raw(Statement::from_string(
                self.backend,
                "UPDATE ent_revision SET value = value + 1 WHERE id = 1 RETURNING value",
            ))
            .await
            .map_err(db_err("bump the revision"))?
            .ok_or_else(|| DomainError::internal("revision row is missing"))?;
        let revision: i64 = row
            .try_get("", "value")
            .map_err(db_err("read the revision"))?;
        entities::change_log::Entity::insert(entities::change_log::ActiveModel {
            revision: sea_orm::Set(revision),
            changes: sea_orm::Set(log.0),
            created_at: sea_orm::Set(now),
        })
        .exec(txn)
        .await
        .map_err(db_err("record the change log"))?;
        Ok(Advanced {
            revision: revision as u64,
            webhooks_wanted: self.webhooks_wanted(txn).await?,
        })
    }

    async fn revision(&self) -> Result<u64> {
        self.revision_on(self.connection()).await
    }

    /// Change-log entries after `revision`, in order, with their commit times.
    async fn log_after(
        &self,
        revision: u64,
        limit: u64,
    ) -> Result<Vec<(u64, DateTime<Utc>, Vec<IndexChange>)>> {
        use entities::change_log::{Column, Entity};
        Entity::find()
            .filter(Column::Revision.gt(revision as i64))
            .order_by_asc(Column::Revision)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err("read the change log"))?
            .into_iter()
            .map(|row| {
                let changes = decode_log(&row.changes)?;
                Ok((row.revision as u64, row.created_at, changes))
            })
            .collect()
    }

    async fn load_index(&self) -> Result<(IndexWriter, u64)> {
        self.load_index_snapshot().await
    }
}

impl Store {
    pub(super) async fn revision_on(&self, conn: &impl ConnectionTrait) -> Result<u64> {
        let row = conn
            .query_one_raw(Statement::from_string(
                self.backend,
                "SELECT value FROM ent_revision WHERE id = 1",
            ))
            .await
            .map_err(db_err("read the revision"))?
            .ok_or_else(|| DomainError::internal("revision row is missing"))?;
        let value: i64 = row
            .try_get("", "value")
            .map_err(db_err("read the revision"))?;
        Ok(value as u64)
    }

    /// Drops change-log rows older than `before`, keeping at least the newest `keep` (a
    /// replica further behind than that reloads its snapshot).
    pub async fn prune_log(&self, before: DateTime<Utc>, keep: u64) -> Result<u64> {
        use entities::change_log::{Column, Entity};
        let head = self.revision_on(&self.db).await?;
        let result = Entity::delete_many()
            .filter(Column::CreatedAt.lt(before))
            .filter(Column::Revision.lte(head.saturating_sub(keep) as i64))
            .exec(&self.db)
            .await
            .map_err(db_err("prune the change log"))?;
        Ok(result.rows_affected)
    }
}

/// One change-log entry. Grant upserts, the bulk of the log, are written as the index needs
/// them: `[id, plan, account, user, starts, expires, revoked]` (times as epoch microseconds),
/// about a third of the grant's JSON; every other change as its `IndexChange` object.
/// Entries written before the compact form (all objects) still decode.
#[derive(Deserialize)]
#[serde(untagged)]
enum LogEntry {
    Grant(
        Uuid,
        Uuid,
        String,
        Option<String>,
        i64,
        Option<i64>,
        Option<i64>,
    ),
    Change(IndexChange),
}

#[derive(Serialize)]
#[serde(untagged)]
enum LogEntryRef<'a> {
    Grant(
        Uuid,
        Uuid,
        &'a str,
        Option<&'a str>,
        i64,
        Option<i64>,
        Option<i64>,
    ),
    Change(&'a IndexChange),
}

pub(super) fn encode_log(changes: &[IndexChange]) -> Result<String> {
    let entries: Vec<LogEntryRef<'_>> = changes
        .iter()
        .map(|change| {
            // Any other change (present or future) is stored as it is.
            let IndexChange::UpsertGrant(g) = change else {
                return LogEntryRef::Change(change);
            };
            LogEntryRef::Grant(
                g.id,
                g.plan_id,
                &g.tenant_id,
                g.user_id.as_deref(),
                g.starts_at.timestamp_micros(),
                g.expires_at.map(|t| t.timestamp_micros()),
                g.revoked_at.map(|t| t.timestamp_micros()),
            )
        })
        .collect();
    to_json(&entries)
}

fn decode_log(text: &str) -> Result<Vec<IndexChange>> {
    let micros = |t: i64| {
        DateTime::<Utc>::from_timestamp_micros(t)
            .ok_or_else(|| DomainError::internal("change log time out of range"))
    };
    from_json::<Vec<LogEntry>>(text)?
        .into_iter()
        .map(|entry| match entry {
            LogEntry::Change(change) => Ok(change),
            LogEntry::Grant(id, plan_id, tenant_id, user_id, starts, expires, revoked) => {
                Ok(IndexChange::UpsertGrant(indexed_grant((
                    id,
                    plan_id,
                    tenant_id,
                    user_id,
                    micros(starts)?,
                    expires.map(micros).transpose()?,
                    revoked.map(micros).transpose()?,
                ))))
            }
        })
        .collect()
}

#[cfg(test)]
mod log_tests {
    use super::*;
    use crate::domain::{Grant, GrantSource};

    #[test]
    fn change_log_round_trips_compact_grants_and_reads_the_old_form() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 123_456_000).unwrap();
        let grant = Grant {
            id: Uuid::now_v7(),
            plan_id: Uuid::now_v7(),
            tenant_id: "acme \"quoted\"".into(),
            user_id: Some("u1".into()),
            starts_at: t(0),
            expires_at: Some(t(60)),
            revoked_at: None,
            revoked_by: Some("someone".into()),
            revoke_reason: None,
            source: GrantSource::Batch,
            external_id: Some("ext".into()),
            granted_by: Some("admin".into()),
            metadata: serde_json::json!({"a": 1}),
            created_at: t(0),
            updated_at: t(0),
        };
        let changes = vec![
            IndexChange::UpsertTenant {
                id: "acme".into(),
                parent: None,
            },
            IndexChange::UpsertGrant(grant.clone()),
            IndexChange::DeleteGrant { id: grant.id },
        ];
        let text = encode_log(&changes).unwrap();
        assert!(
            !text.contains("admin"),
            "the log keeps what the index needs only"
        );
        let back = decode_log(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], changes[0]);
        assert_eq!(back[2], changes[2]);
        let IndexChange::UpsertGrant(g) = &back[1] else {
            panic!("expected a grant upsert, got {:?}", back[1]);
        };
        assert_eq!(
            (g.id, g.plan_id, &g.tenant_id, &g.user_id),
            (grant.id, grant.plan_id, &grant.tenant_id, &grant.user_id)
        );
        assert_eq!(
            (g.starts_at, g.expires_at, g.revoked_at),
            (t(0), Some(t(60)), None)
        );
        // Entries written before the compact form.
        let old = serde_json::to_string(&changes).unwrap();
        assert_eq!(decode_log(&old).unwrap(), changes);
    }
}
