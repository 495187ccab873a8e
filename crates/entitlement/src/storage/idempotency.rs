//! Idempotency keys: claimed in a write's transaction (a concurrent twin with the same key
//! then waits on the row and finds it taken), answered just before the commit, pruned after
//! the retention period. Keyed by the caller's scope and the key.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use tenantry_common::idempotency::{Idempotency, StoredKey};

use super::{Store, db_err, entities};
use crate::app::ports::IdempotencyStore;
use crate::domain::Result;

#[async_trait]
impl IdempotencyStore for Store {
    async fn idempotency_record(&self, scope: &str, key: &str) -> Result<Option<StoredKey>> {
        Ok(
            entities::idempotency::Entity::find_by_id((scope.to_owned(), key.to_owned()))
                .one(self.connection())
                .await
                .map_err(db_err("read idempotency key"))?
                .map(|r| StoredKey {
                    operation: r.operation,
                    fingerprint: r.fingerprint,
                    response: r.response,
                }),
        )
    }

    async fn claim_idempotency_key(
        &self,
        txn: &DatabaseTransaction,
        key: &Idempotency,
        operation: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use entities::idempotency::{ActiveModel, Entity};
        // A twin's committed key is a unique violation, which `db_err` maps to
        // IdempotencyKeyTaken.
        Entity::insert(ActiveModel {
            scope: Set(key.scope.clone()),
            key: Set(key.key.clone()),
            operation: Set(operation.to_owned()),
            fingerprint: Set(key.fingerprint.clone()),
            response: Set(String::new()),
            created_at: Set(now),
        })
        .exec_without_returning(txn)
        .await
        .map_err(db_err("store idempotency key"))?;
        Ok(())
    }

    async fn set_idempotent_response(
        &self,
        txn: &DatabaseTransaction,
        scope: &str,
        key: &str,
        response: &str,
    ) -> Result<()> {
        use entities::idempotency::{Column, Entity};
        Entity::update_many()
            .col_expr(Column::Response, Expr::value(response.to_owned()))
            .filter(Column::Scope.eq(scope))
            .filter(Column::Key.eq(key))
            .exec(txn)
            .await
            .map_err(db_err("store idempotency answer"))?;
        Ok(())
    }

    /// Deletes the oldest keys stored before `before`, about `limit` of them (keys stored at
    /// the very instant of the `limit`-th go with it); returns how many went.
    async fn prune_idempotency_keys(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        use entities::idempotency::{Column, Entity};
        // The newest instant of this batch: one bounded read on the index, then one delete by
        // range (portable, unlike DELETE … LIMIT or a composite-key IN list).
        let last: Option<DateTime<Utc>> = Entity::find()
            .select_only()
            .column(Column::CreatedAt)
            .filter(Column::CreatedAt.lt(before))
            .order_by_asc(Column::CreatedAt)
            .offset(limit.saturating_sub(1))
            .limit(1)
            .into_tuple()
            .one(self.connection())
            .await
            .map_err(db_err("read expired idempotency keys"))?;
        let delete = Entity::delete_many().filter(Column::CreatedAt.lt(before));
        let delete = match last {
            Some(last) => delete.filter(Column::CreatedAt.lte(last)),
            None => delete,
        };
        Ok(delete
            .exec(self.connection())
            .await
            .map_err(db_err("prune idempotency keys"))?
            .rows_affected)
    }
}
