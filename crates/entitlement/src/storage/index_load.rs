//! Index loading: the evaluation index built at start from one consistent snapshot.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, IsolationLevel, QueryFilter, QueryOrder, QuerySelect,
    TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use super::{Store, db_err, entities};
use crate::domain::{Grant, GrantSource, IndexChange, IndexWriter, Result};

impl Store {
    /// Builds the evaluation index from one consistent snapshot (a REPEATABLE READ
    /// transaction) and returns it with its revision. Grants are streamed by id in pages of
    /// [`LOAD_PAGE`], each applied to the writer before the next is read, with only the
    /// columns the index keeps: memory at start is the index plus one page, never every row
    /// as a model next to the index being built.
    pub(super) async fn load_index_snapshot(&self) -> Result<(IndexWriter, u64)> {
        use entities::{account, grant};
        // PostgreSQL takes the snapshot at the first statement under REPEATABLE READ. A SQLite
        // read transaction holds one from its first read as it is; asking it for an isolation
        // level only logs a warning at every start.
        let isolation_level = self.is_postgres().then_some(IsolationLevel::RepeatableRead);
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                isolation_level,
                ..TransactionOptions::default()
            })
            .await
            .map_err(db_err("begin snapshot"))?;
        let revision = self.revision_on(&txn).await?;
        let catalog = self.catalog_on(&txn).await?;
        let accounts: Vec<(String, Option<String>, bool)> = account::Entity::find()
            .select_only()
            .columns([
                account::Column::TenantId,
                account::Column::ParentId,
                account::Column::Deleted,
            ])
            .into_tuple()
            .all(&txn)
            .await
            .map_err(db_err("load accounts"))?;
        // A deleted account's (revoked) grants stay in the table for history only.
        let deleted: HashSet<String> = accounts
            .iter()
            .filter(|(_, _, deleted)| *deleted)
            .map(|(id, _, _)| id.clone())
            .collect();
        let mut writer = IndexWriter::new();
        // Intermediate batches are stamped 0 (nothing reads them); the last one `revision`.
        let catalog_changes = catalog
            .features
            .into_iter()
            .map(|f| IndexChange::UpsertFeature(f.value.feature))
            .chain(
                catalog
                    .plans
                    .into_iter()
                    .map(|p| IndexChange::UpsertPlan(p.value)),
            )
            .chain(
                catalog
                    .flags
                    .into_iter()
                    .map(|f| IndexChange::UpsertFlag(f.value.flag)),
            )
            .chain(
                catalog
                    .routes
                    .into_iter()
                    .map(|r| IndexChange::UpsertRoute(r.value)),
            )
            // Tenants before grants: grants then share the tenants' interned IDs.
            .chain(
                accounts
                    .into_iter()
                    .filter(|(_, _, deleted)| !deleted)
                    .map(|(id, parent, _)| IndexChange::UpsertTenant { id, parent }),
            );
        writer.apply_at(0, catalog_changes);

        let mut after: Option<Uuid> = None;
        let mut grants = 0usize;
        loop {
            let mut query = grant::Entity::find()
                .select_only()
                .columns([
                    grant::Column::Id,
                    grant::Column::PlanId,
                    grant::Column::TenantId,
                    grant::Column::UserId,
                    grant::Column::StartsAt,
                    grant::Column::ExpiresAt,
                    grant::Column::RevokedAt,
                ])
                .order_by_asc(grant::Column::Id)
                .limit(LOAD_PAGE);
            if let Some(last) = after {
                query = query.filter(grant::Column::Id.gt(last));
            }
            let page: Vec<IndexedGrant> = query
                .into_tuple()
                .all(&txn)
                .await
                .map_err(db_err("load grants"))?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            let full = page.len() as u64 == LOAD_PAGE;
            grants += page.len();
            writer.apply_at(
                0,
                page.into_iter()
                    .filter(|row| !deleted.contains(&row.2))
                    .map(|row| IndexChange::UpsertGrant(indexed_grant(row))),
            );
            if !full {
                break;
            }
        }
        // Meters after grants: few next to grants, read whole.
        let meters: Vec<(String, Uuid, String, String)> = entities::meter::Entity::find()
            .select_only()
            .columns([
                entities::meter::Column::TenantId,
                entities::meter::Column::FeatureId,
                entities::meter::Column::UserId,
                entities::meter::Column::State,
            ])
            .into_tuple()
            .all(&txn)
            .await
            .map_err(db_err("load meters"))?;
        let mut meter_changes = Vec::with_capacity(meters.len());
        for (tenant_id, feature_id, user, state) in meters {
            if deleted.contains(&tenant_id) {
                continue;
            }
            // A row locked by a write that then refused (a consumption or reservation the
            // balance did not allow) holds no state yet: the meter is fresh.
            let Some(state) = super::from_json(&state)? else {
                continue;
            };
            meter_changes.push(IndexChange::UpsertMeter {
                tenant_id,
                user_id: (!user.is_empty()).then_some(user),
                feature_id,
                state: Box::new(state),
            });
        }
        writer.apply_at(0, meter_changes);
        // The newest write's time, for the index's notion of "now" (see `present`).
        let newest = entities::change_log::Entity::find()
            .filter(entities::change_log::Column::Revision.lte(revision as i64))
            .order_by_desc(entities::change_log::Column::Revision)
            .one(&txn)
            .await
            .map_err(db_err("read the change log"))?;
        txn.commit().await.map_err(db_err("end snapshot"))?;
        if let Some(newest) = newest {
            writer.note_written(newest.created_at);
        }
        writer.apply_at(revision, []);
        tracing::debug!(revision, grants, "grants streamed into the index");
        Ok((writer, revision))
    }
}

/// Grants read per page while building the index at start.
pub const LOAD_PAGE: u64 = 10_000;

/// The columns of a grant the index keeps: id, plan, account, user, starts, expires, revoked.
type IndexedGrant = (
    Uuid,
    Uuid,
    String,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// A grant as the index sees it: what it does not keep is left empty.
pub(super) fn indexed_grant(
    (id, plan_id, tenant_id, user_id, starts_at, expires_at, revoked_at): IndexedGrant,
) -> Grant {
    Grant {
        id,
        plan_id,
        tenant_id,
        user_id,
        starts_at,
        expires_at,
        revoked_at,
        revoked_by: None,
        revoke_reason: None,
        source: GrantSource::Api,
        external_id: None,
        granted_by: None,
        metadata: serde_json::Value::Null,
        created_at: starts_at,
        updated_at: starts_at,
    }
}
