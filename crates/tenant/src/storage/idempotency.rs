//! Idempotency keys: claimed first thing in a create's transaction (a concurrent twin with the
//! same key then waits on the row and finds it taken), answered just before the commit, pruned
//! after the retention period.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde::Serialize;
use tenantry_common::db::{DbFailure, classify};

use super::{Result, Store, db_err, entities::idempotency_keys};
use crate::app::ports::IdempotencyStore;
use crate::domain::{self, Claim, Error, idempotency::KEY_TAKEN, idempotency::StoredKey};

impl Store {
    /// Stores the key (without its answer yet) in `txn`; must be the transaction's first write.
    /// A key stored by a committed twin is [`KEY_TAKEN`].
    pub(super) async fn claim_key(
        &self,
        txn: &DatabaseTransaction,
        claim: Option<Claim<'_>>,
    ) -> Result<()> {
        let Some(claim) = claim else { return Ok(()) };
        idempotency_keys::Entity::insert(idempotency_keys::ActiveModel {
            scope: Set(claim.key.scope.clone()),
            key: Set(claim.key.key.clone()),
            operation: Set(claim.operation.to_owned()),
            fingerprint: Set(claim.key.fingerprint.clone()),
            response: Set(String::new()),
            created_at: Set(domain::now()),
        })
        .exec_without_returning(txn)
        .await
        .map_err(|err| match classify(&err) {
            DbFailure::UniqueViolation(_) => Error::AlreadyExists {
                reason: KEY_TAKEN,
                message: "a concurrent request with this idempotency key was answered".into(),
            },
            DbFailure::ForeignKeyViolation(_)
            | DbFailure::Conflict
            | DbFailure::Unavailable
            | DbFailure::StorageFull
            | DbFailure::StorageFailed
            | DbFailure::Other => db_err("store idempotency key")(err),
        })?;
        Ok(())
    }

    /// Records the answer of a claimed key in `txn`, which then commits.
    pub(super) async fn answer_key<T: Serialize>(
        &self,
        txn: &DatabaseTransaction,
        claim: Option<Claim<'_>>,
        response: &T,
    ) -> Result<()> {
        let Some(claim) = claim else { return Ok(()) };
        let response = serde_json::to_string(response)
            .map_err(|e| Error::internal("encode idempotent answer", e))?;
        idempotency_keys::Entity::update_many()
            .col_expr(idempotency_keys::Column::Response, Expr::value(response))
            .filter(idempotency_keys::Column::Scope.eq(claim.key.scope.as_str()))
            .filter(idempotency_keys::Column::Key.eq(claim.key.key.as_str()))
            .exec(txn)
            .await
            .map_err(db_err("store idempotent answer"))?;
        Ok(())
    }

    /// Deletes the oldest keys stored before `before`, about `limit` of them (keys stored at
    /// the very instant of the `limit`-th go with it); returns how many went.
    pub async fn prune_idempotency_keys(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        use idempotency_keys::{Column, Entity};
        // The newest instant of this batch: one bounded read on the index, then one delete
        // by range (portable, unlike DELETE … LIMIT or a composite-key IN list).
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
        let _turn = self.write_turn().await;
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

#[async_trait]
impl IdempotencyStore for Store {
    /// What is stored under a caller's key, if anything.
    async fn idempotent_response(&self, scope: &str, key: &str) -> Result<Option<StoredKey>> {
        Ok(
            idempotency_keys::Entity::find_by_id((scope.to_owned(), key.to_owned()))
                .one(self.connection())
                .await
                .map_err(db_err("read idempotency key"))?
                .map(|row| StoredKey {
                    operation: row.operation,
                    fingerprint: row.fingerprint,
                    response: row.response,
                }),
        )
    }
}
