//! The local copy of the tenant hierarchy (accounts and parents, deleted ones kept) and the
//! tenant-feed cursor it is current to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
    Statement,
};
use uuid::Uuid;

use super::{Store, db_err, entities, from_json};
use crate::app::ports::{AccountStore, HeldAccount};
use crate::domain::metering::MeterState;
use crate::domain::{Grant, Result};

#[async_trait]
impl AccountStore for Store {
    async fn upsert_account(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        parent_id: Option<&str>,
        deleted: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use entities::account::{ActiveModel, Column, Entity};
        let model = ActiveModel {
            tenant_id: sea_orm::Set(tenant_id.to_owned()),
            parent_id: sea_orm::Set(parent_id.map(str::to_owned)),
            deleted: sea_orm::Set(deleted),
            updated_at: sea_orm::Set(now),
        };
        Entity::insert(model)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(Column::TenantId)
                    .update_columns([Column::ParentId, Column::Deleted, Column::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(db_err("record account"))?;
        Ok(())
    }

    /// Every account the feed has recorded: `(tenant, parent, deleted)`.
    async fn accounts(&self, txn: &DatabaseTransaction) -> Result<Vec<HeldAccount>> {
        use entities::account::{Column, Entity};
        let rows: Vec<(String, Option<String>, bool)> = Entity::find()
            .select_only()
            .column(Column::TenantId)
            .column(Column::ParentId)
            .column(Column::Deleted)
            .into_tuple()
            .all(txn)
            .await
            .map_err(db_err("read accounts"))?;
        Ok(rows
            .into_iter()
            .map(|(tenant_id, parent_id, deleted)| HeldAccount {
                tenant_id,
                parent_id,
                deleted,
            })
            .collect())
    }

    async fn account_state(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
    ) -> Result<(Vec<Grant>, crate::app::ports::AccountMeters)> {
        let grants = entities::grant::Entity::find()
            .filter(entities::grant::Column::TenantId.eq(tenant_id))
            .all(txn)
            .await
            .map_err(db_err("read an account's grants"))?
            .into_iter()
            .map(super::grants::to_domain)
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<(Uuid, String, String)> = entities::meter::Entity::find()
            .select_only()
            .column(entities::meter::Column::FeatureId)
            .column(entities::meter::Column::UserId)
            .column(entities::meter::Column::State)
            .filter(entities::meter::Column::TenantId.eq(tenant_id))
            .into_tuple()
            .all(txn)
            .await
            .map_err(db_err("read an account's meters"))?;
        let mut meters = Vec::with_capacity(rows.len());
        for (feature_id, user, state) in rows {
            // A row locked by a write that then refused holds no state yet.
            if let Some(state) = from_json::<Option<MeterState>>(&state)? {
                meters.push(((!user.is_empty()).then_some(user), feature_id, state));
            }
        }
        Ok((grants, meters))
    }

    /// The feed cursor, locked until the transaction ends (replicas following the same feed
    /// serialize here, so each event applies once).
    async fn lock_cursor(&self, txn: &DatabaseTransaction) -> Result<u64> {
        let sql = if self.is_postgres() {
            "SELECT sequence FROM ent_feed_cursor WHERE id = 1 FOR UPDATE"
        } else {
            "SELECT sequence FROM ent_feed_cursor WHERE id = 1"
        };
        let row = txn
            .query_one_raw(Statement::from_string(self.backend, sql))
            .await
            .map_err(db_err("read the feed cursor"))?;
        match row {
            Some(row) => {
                let value: i64 = row
                    .try_get("", "sequence")
                    .map_err(db_err("read the feed cursor"))?;
                Ok(value as u64)
            }
            None => Ok(0),
        }
    }

    async fn cursor(&self) -> Result<u64> {
        Ok(entities::feed_cursor::Entity::find_by_id(1)
            .one(&self.db)
            .await
            .map_err(db_err("read the feed cursor"))?
            .map_or(0, |c| c.sequence as u64))
    }

    async fn set_cursor(
        &self,
        txn: &DatabaseTransaction,
        sequence: u64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use entities::feed_cursor::{ActiveModel, Column, Entity};
        Entity::insert(ActiveModel {
            id: sea_orm::Set(1),
            sequence: sea_orm::Set(sequence as i64),
            updated_at: sea_orm::Set(now),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(Column::Id)
                .update_columns([Column::Sequence, Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(db_err("store the feed cursor"))?;
        Ok(())
    }
}
