//! Idempotency keys: each key's request fingerprint and the answer it replays.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{Store, db_err, entities};
use crate::app::ports::{IdempotencyRecord, IdempotencyStore};
use crate::domain::Result;

#[async_trait]
impl IdempotencyStore for Store {
    async fn idempotency_record(
        &self,
        key: &str,
        operation: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        use entities::idempotency::{Column, Entity};
        Ok(Entity::find_by_id(key.to_owned())
            .filter(Column::Operation.eq(operation))
            .one(self.connection())
            .await
            .map_err(db_err("read idempotency key"))?
            .map(|r| IdempotencyRecord {
                fingerprint: r.fingerprint,
                response: r.response,
            }))
    }

    /// Whether any key (of any operation) is stored under `key`.
    async fn idempotency_key_exists(&self, key: &str) -> Result<bool> {
        Ok(entities::idempotency::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await
            .map_err(db_err("read idempotency key"))?
            .is_some())
    }

    async fn store_idempotency_record(
        &self,
        txn: &DatabaseTransaction,
        key: &str,
        operation: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use entities::idempotency::{ActiveModel, Entity};
        Entity::insert(ActiveModel {
            key: sea_orm::Set(key.to_owned()),
            operation: sea_orm::Set(operation.to_owned()),
            fingerprint: sea_orm::Set(record.fingerprint.clone()),
            response: sea_orm::Set(record.response.clone()),
            created_at: sea_orm::Set(now),
        })
        .exec_without_returning(txn)
        .await
        .map_err(db_err("store idempotency key"))?;
        Ok(())
    }

    /// Replaces a stored key's answer (written once the transaction knows its revision).
    async fn set_idempotent_response(
        &self,
        txn: &DatabaseTransaction,
        key: &str,
        response: &str,
    ) -> Result<()> {
        use entities::idempotency::{Column, Entity};
        Entity::update_many()
            .col_expr(
                Column::Response,
                sea_orm::sea_query::Expr::value(response.to_owned()),
            )
            .filter(Column::Key.eq(key))
            .exec(txn)
            .await
            .map_err(db_err("store idempotency answer"))?;
        Ok(())
    }

    /// Deletes up to `limit` idempotency keys stored before `before`, oldest first; returns how
    /// many went.
    async fn prune_idempotency_keys(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        use entities::idempotency::{Column, Entity};
        let keys: Vec<String> = Entity::find()
            .select_only()
            .column(Column::Key)
            .filter(Column::CreatedAt.lt(before))
            .order_by_asc(Column::CreatedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_err("read expired idempotency keys"))?;
        if keys.is_empty() {
            return Ok(0);
        }
        Ok(Entity::delete_many()
            .filter(Column::Key.is_in(keys))
            .filter(Column::CreatedAt.lt(before))
            .exec(&self.db)
            .await
            .map_err(db_err("prune idempotency keys"))?
            .rows_affected)
    }
}
