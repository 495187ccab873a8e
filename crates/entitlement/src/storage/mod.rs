//! Storage: sea-orm entities and the repository. Returns domain types; database errors are
//! classified with [`tenantry_common::db::classify`] and never leak SQL to callers.
//!
//! Every writing transaction ends in [`Store::commit`]: it bumps the single revision row (whose
//! row lock orders writers, so revisions become visible in increasing order), records the
//! transaction's index changes in `ent_change_log` under that revision, NOTIFYs other replicas
//! (PostgreSQL) and commits. The revision is what the write RPC returns.

pub mod entities;
mod grants;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, IsolationLevel, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};
use tenantry_common::db::{DbFailure, classify};
use uuid::Uuid;

use crate::domain::{
    DomainError, Feature, FeatureFlag, Grant, GrantSource, IndexChange, IndexWriter, Plan, Route,
};

pub use grants::{GrantFilter, GrantSort, StatusFilter};

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

/// Maps a database error to the domain: lost connections are UNAVAILABLE, conflicts and
/// constraint refusals keep their meaning, anything else is INTERNAL (logged with its chain by
/// the gRPC layer, never shown).
pub fn db_err(context: &'static str) -> impl Fn(DbErr) -> DomainError {
    move |err| match classify(&err) {
        DbFailure::Unavailable => DomainError::Unavailable("database unreachable".into()),
        DbFailure::StorageFull => DomainError::StorageFull(
            "the entitlement database's storage is full; nothing was written".into(),
        ),
        DbFailure::StorageFailed => DomainError::StorageFailed(
            "the entitlement database's storage failed (I/O error); nothing was written".into(),
        ),
        DbFailure::Conflict => {
            DomainError::Unavailable("concurrent write conflict, retry the request".into())
        }
        DbFailure::UniqueViolation(constraint) => DomainError::AlreadyExists {
            kind: unique_kind(&constraint),
            id: constraint,
        },
        DbFailure::ForeignKeyViolation(_) => DomainError::FailedPrecondition(format!(
            "{context}: a referenced record is missing or still in use"
        )),
        DbFailure::Other => DomainError::Internal {
            message: context.to_owned(),
            source: Some(Box::new(err)),
        },
    }
}

fn unique_kind(constraint: &str) -> &'static str {
    if constraint.contains("feature_flag") {
        "feature flag"
    } else if constraint.contains("feature") {
        "feature"
    } else if constraint.contains("plan") {
        "plan"
    } else if constraint.contains("route") {
        "route"
    } else if constraint.contains("external_id") {
        "grant external id"
    } else {
        "record"
    }
}

/// A catalog object with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub value: T,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A feature's stored document: the domain feature plus the callers' permission IDs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDoc {
    #[serde(flatten)]
    pub feature: Feature,
    /// Permission key → the caller's permission ID (Frontegg v2), informational.
    #[serde(default)]
    pub permission_ids: BTreeMap<String, String>,
}

/// A flag's stored document: the domain flag plus what only the API shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagDoc {
    #[serde(flatten)]
    pub flag: FeatureFlag,
    pub feature_id: Uuid,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// The whole catalog, as one transaction saw it.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub features: Vec<Stored<FeatureDoc>>,
    pub plans: Vec<Stored<Plan>>,
    pub flags: Vec<Stored<FlagDoc>>,
    pub routes: Vec<Stored<Route>>,
}

impl Catalog {
    pub fn feature_by_key(&self, key: &str) -> Option<&Stored<FeatureDoc>> {
        self.features.iter().find(|f| f.value.feature.key == key)
    }

    pub fn feature_by_id(&self, id: Uuid) -> Option<&Stored<FeatureDoc>> {
        self.features.iter().find(|f| f.value.feature.id == id)
    }

    pub fn plan_by_id(&self, id: Uuid) -> Option<&Stored<Plan>> {
        self.plans.iter().find(|p| p.value.id == id)
    }

    pub fn plan_by_key(&self, key: &str) -> Option<&Stored<Plan>> {
        self.plans.iter().find(|p| p.value.key == key)
    }

    pub fn flag_of(&self, feature_key: &str) -> Option<&Stored<FlagDoc>> {
        self.flags
            .iter()
            .find(|f| f.value.flag.feature_key == feature_key)
    }
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| DomainError::Internal {
        message: "serialize a stored document".into(),
        source: Some(Box::new(e)),
    })
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| DomainError::Internal {
        message: "decode a stored document".into(),
        source: Some(Box::new(e)),
    })
}

/// The entitlement service's repository. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: DbBackend,
    /// PostgreSQL NOTIFY channel for index changes (channels are database-wide: named after
    /// the schema so two deployments sharing a database do not wake each other).
    channel: String,
    /// Names this process's notifications, so its own follower skips the writes it applies
    /// to its index itself (racing it would make the writer wait for a log read of its own
    /// change).
    origin: NotifyOrigin,
}

/// The sender part of change-log notifications: `<revision> <origin>`.
#[derive(Debug, Clone)]
struct NotifyOrigin(String);

impl NotifyOrigin {
    fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    fn payload(&self, revision: i64) -> String {
        format!("{revision} {}", self.0)
    }

    fn sent(&self, payload: &str) -> bool {
        payload
            .rsplit_once(' ')
            .is_some_and(|(_, origin)| origin == self.0)
    }
}

impl Store {
    pub fn new(db: DatabaseConnection, schema: &str) -> Self {
        let backend = db.get_database_backend();
        Self {
            db,
            backend,
            channel: format!("{schema}_entitlement_changes"),
            origin: NotifyOrigin::new(),
        }
    }

    /// Whether a change-log notification (`<revision> <origin>`) came from this store's own
    /// commits.
    pub fn is_own_notification(&self, payload: &str) -> bool {
        self.origin.sent(payload)
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Starts a writing transaction (SQLite: `BEGIN IMMEDIATE`, so two writers never deadlock
    /// upgrading read locks).
    pub async fn begin(&self) -> Result<DatabaseTransaction> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(db_err("begin transaction"))
    }

    /// Serializes catalog writers on the revision row (catalog documents are rewritten whole,
    /// so two concurrent catalog writes must not interleave). Grant writes skip this and only
    /// take the row at commit.
    pub async fn lock_catalog(&self, txn: &DatabaseTransaction) -> Result<()> {
        if self.is_postgres() {
            txn.execute_raw(Statement::from_string(
                self.backend,
                "SELECT value FROM ent_revision WHERE id = 1 FOR UPDATE",
            ))
            .await
            .map_err(db_err("lock the catalog"))?;
        }
        Ok(())
    }

    /// Records `changes` under the next revision and commits. Returns the revision.
    pub async fn commit(
        &self,
        txn: DatabaseTransaction,
        changes: &[IndexChange],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let revision = self.next_revision(&txn).await?;
        self.commit_at(txn, revision, changes, now).await?;
        Ok(revision)
    }

    /// Takes the next revision for this transaction (locking the revision row until it ends),
    /// for writes that must record it before committing (idempotent answers). Finish with
    /// [`Store::commit_at`].
    pub async fn next_revision(&self, txn: &DatabaseTransaction) -> Result<u64> {
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
        Ok(revision as u64)
    }

    /// Records `changes` under `revision` (from [`Store::next_revision`]) and commits.
    pub async fn commit_at(
        &self,
        txn: DatabaseTransaction,
        revision: u64,
        changes: &[IndexChange],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let log = EncodedChanges::of(changes)?;
        self.commit_encoded(txn, revision, log, now).await
    }

    /// [`Store::commit_at`] with the change-log entry already encoded (a large batch encodes
    /// it while its rows are being inserted).
    pub async fn commit_encoded(
        &self,
        txn: DatabaseTransaction,
        revision: u64,
        log: EncodedChanges,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let revision = revision as i64;
        entities::change_log::Entity::insert(entities::change_log::ActiveModel {
            revision: sea_orm::Set(revision),
            changes: sea_orm::Set(log.0),
            created_at: sea_orm::Set(now),
        })
        .exec(&txn)
        .await
        .map_err(db_err("record the change log"))?;
        if self.is_postgres() {
            // Delivered at commit, to every replica listening.
            txn.execute_raw(Statement::from_sql_and_values(
                self.backend,
                "SELECT pg_notify($1, $2)",
                [
                    Value::from(self.channel.clone()),
                    Value::from(self.origin.payload(revision)),
                ],
            ))
            .await
            .map_err(db_err("notify replicas"))?;
        }
        txn.commit().await.map_err(db_err("commit"))?;
        Ok(())
    }

    /// Builds the evaluation index from one consistent snapshot (a REPEATABLE READ
    /// transaction) and returns it with its revision. Grants are streamed by id in pages of
    /// [`LOAD_PAGE`], each applied to the writer before the next is read, with only the
    /// columns the index keeps: memory at start is the index plus one page, never every row
    /// as a model next to the index being built.
    pub async fn load_index(&self) -> Result<(IndexWriter, u64)> {
        use entities::{account, grant};
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                isolation_level: Some(IsolationLevel::RepeatableRead),
                ..TransactionOptions::default()
            })
            .await
            .map_err(db_err("begin snapshot"))?;
        let revision = self.revision(&txn).await?;
        let catalog = self.catalog(&txn).await?;
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

    pub async fn revision(&self, conn: &impl ConnectionTrait) -> Result<u64> {
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

    /// Change-log entries after `revision`, in order, with their commit times.
    pub async fn log_after(
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

    /// Drops change-log rows older than `before`, keeping at least the newest `keep` (a
    /// replica further behind than that reloads its snapshot).
    pub async fn prune_log(&self, before: DateTime<Utc>, keep: u64) -> Result<u64> {
        use entities::change_log::{Column, Entity};
        let head = self.revision(&self.db).await?;
        let result = Entity::delete_many()
            .filter(Column::CreatedAt.lt(before))
            .filter(Column::Revision.lte(head.saturating_sub(keep) as i64))
            .exec(&self.db)
            .await
            .map_err(db_err("prune the change log"))?;
        Ok(result.rows_affected)
    }

    // -----------------------------------------------------------------------------------------
    // Catalog
    // -----------------------------------------------------------------------------------------

    /// The live catalog, ordered by creation (then id).
    pub async fn catalog(&self, conn: &impl ConnectionTrait) -> Result<Catalog> {
        use entities::{feature, feature_flag, plan, route};
        let features = feature::Entity::find()
            .order_by_asc(feature::Column::CreatedAt)
            .order_by_asc(feature::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load features"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        let plans = plan::Entity::find()
            .filter(plan::Column::DeletedAt.is_null())
            .order_by_asc(plan::Column::CreatedAt)
            .order_by_asc(plan::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load plans"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        let flags = feature_flag::Entity::find()
            .order_by_asc(feature_flag::Column::CreatedAt)
            .order_by_asc(feature_flag::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load feature flags"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        let routes = route::Entity::find()
            .order_by_asc(route::Column::CreatedAt)
            .order_by_asc(route::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load routes"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        Ok(Catalog {
            features,
            plans,
            flags,
            routes,
        })
    }

    /// Any plan by id, deleted ones included (grants keep pointing at them).
    pub async fn plans_by_ids(
        &self,
        conn: &impl ConnectionTrait,
        ids: &[Uuid],
    ) -> Result<Vec<Plan>> {
        use entities::plan::{Column, Entity};
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Entity::find()
            .filter(Column::Id.is_in(ids.iter().copied()))
            .all(conn)
            .await
            .map_err(db_err("load plans"))?
            .into_iter()
            .map(|r| from_json(&r.doc))
            .collect()
    }

    pub async fn put_feature(
        &self,
        txn: &DatabaseTransaction,
        doc: &Stored<FeatureDoc>,
        insert: bool,
    ) -> Result<()> {
        use entities::feature::{ActiveModel, Entity};
        let model = ActiveModel {
            id: sea_orm::Set(doc.value.feature.id),
            key: sea_orm::Set(doc.value.feature.key.clone()),
            doc: sea_orm::Set(to_json(&doc.value)?),
            created_at: sea_orm::Set(doc.created_at),
            updated_at: sea_orm::Set(doc.updated_at),
        };
        if insert {
            Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert feature"))?;
        } else {
            Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update feature"))?;
        }
        Ok(())
    }

    pub async fn delete_feature(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        entities::feature::Entity::delete_by_id(id)
            .exec(txn)
            .await
            .map_err(db_err("delete feature"))?;
        Ok(())
    }

    /// Writes a plan and its feature links (`feature_ids`: the ids of its features).
    pub async fn put_plan(
        &self,
        txn: &DatabaseTransaction,
        plan: &Stored<Plan>,
        feature_ids: &[Uuid],
        insert: bool,
    ) -> Result<()> {
        use entities::{plan, plan_feature};
        let model = plan::ActiveModel {
            id: sea_orm::Set(plan.value.id),
            key: sea_orm::Set(plan.value.key.clone()),
            doc: sea_orm::Set(to_json(&plan.value)?),
            created_at: sea_orm::Set(plan.created_at),
            updated_at: sea_orm::Set(plan.updated_at),
            deleted_at: sea_orm::Set(None),
        };
        if insert {
            plan::Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert plan"))?;
        } else {
            plan::Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update plan"))?;
            plan_feature::Entity::delete_many()
                .filter(plan_feature::Column::PlanId.eq(plan.value.id))
                .exec(txn)
                .await
                .map_err(db_err("unlink plan features"))?;
        }
        if !feature_ids.is_empty() {
            plan_feature::Entity::insert_many(feature_ids.iter().map(|&feature_id| {
                plan_feature::ActiveModel {
                    plan_id: sea_orm::Set(plan.value.id),
                    feature_id: sea_orm::Set(feature_id),
                }
            }))
            .exec_without_returning(txn)
            .await
            .map_err(db_err("link plan features"))?;
        }
        Ok(())
    }

    /// Soft-deletes a plan (grants keep referring to it) and drops its feature links.
    pub async fn delete_plan(
        &self,
        txn: &DatabaseTransaction,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use entities::{plan, plan_feature};
        plan_feature::Entity::delete_many()
            .filter(plan_feature::Column::PlanId.eq(id))
            .exec(txn)
            .await
            .map_err(db_err("unlink plan features"))?;
        plan::Entity::update_many()
            .col_expr(
                plan::Column::DeletedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(plan::Column::Id.eq(id))
            .exec(txn)
            .await
            .map_err(db_err("delete plan"))?;
        Ok(())
    }

    pub async fn put_flag(
        &self,
        txn: &DatabaseTransaction,
        flag: &Stored<FlagDoc>,
        insert: bool,
    ) -> Result<()> {
        use entities::feature_flag::{ActiveModel, Entity};
        let model = ActiveModel {
            id: sea_orm::Set(flag.value.flag.id),
            feature_id: sea_orm::Set(flag.value.feature_id),
            doc: sea_orm::Set(to_json(&flag.value)?),
            created_at: sea_orm::Set(flag.created_at),
            updated_at: sea_orm::Set(flag.updated_at),
        };
        if insert {
            Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert feature flag"))?;
        } else {
            Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update feature flag"))?;
        }
        Ok(())
    }

    pub async fn delete_flag(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        entities::feature_flag::Entity::delete_by_id(id)
            .exec(txn)
            .await
            .map_err(db_err("delete feature flag"))?;
        Ok(())
    }

    pub async fn put_route(
        &self,
        txn: &DatabaseTransaction,
        route: &Stored<Route>,
        insert: bool,
    ) -> Result<()> {
        use entities::route::{ActiveModel, Entity};
        let model = ActiveModel {
            id: sea_orm::Set(route.value.id),
            method: sea_orm::Set(route.value.method.clone()),
            path: sea_orm::Set(route.value.path.clone()),
            doc: sea_orm::Set(to_json(&route.value)?),
            created_at: sea_orm::Set(route.created_at),
            updated_at: sea_orm::Set(route.updated_at),
        };
        if insert {
            Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert route"))?;
        } else {
            Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update route"))?;
        }
        Ok(())
    }

    pub async fn delete_route(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        entities::route::Entity::delete_by_id(id)
            .exec(txn)
            .await
            .map_err(db_err("delete route"))?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Accounts (the local hierarchy copy) and the tenant-feed cursor
    // -----------------------------------------------------------------------------------------

    pub async fn upsert_account(
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
    pub async fn accounts(
        &self,
        txn: &DatabaseTransaction,
    ) -> Result<Vec<(String, Option<String>, bool)>> {
        use entities::account::{Column, Entity};
        Entity::find()
            .select_only()
            .column(Column::TenantId)
            .column(Column::ParentId)
            .column(Column::Deleted)
            .into_tuple()
            .all(txn)
            .await
            .map_err(db_err("read accounts"))
    }

    /// The feed cursor, locked until the transaction ends (replicas following the same feed
    /// serialize here, so each event applies once).
    pub async fn lock_cursor(&self, txn: &DatabaseTransaction) -> Result<u64> {
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

    pub async fn cursor(&self) -> Result<u64> {
        Ok(entities::feed_cursor::Entity::find_by_id(1)
            .one(&self.db)
            .await
            .map_err(db_err("read the feed cursor"))?
            .map_or(0, |c| c.sequence as u64))
    }

    pub async fn set_cursor(
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

    // -----------------------------------------------------------------------------------------
    // Idempotency keys
    // -----------------------------------------------------------------------------------------

    /// The stored `(fingerprint, response)` of a key, if any.
    pub async fn idempotent_response(
        &self,
        conn: &impl ConnectionTrait,
        key: &str,
        operation: &str,
    ) -> Result<Option<(String, String)>> {
        use entities::idempotency::{Column, Entity};
        Ok(Entity::find_by_id(key.to_owned())
            .filter(Column::Operation.eq(operation))
            .one(conn)
            .await
            .map_err(db_err("read idempotency key"))?
            .map(|r| (r.fingerprint, r.response))
            .or(None))
    }

    pub async fn store_idempotent_response(
        &self,
        txn: &DatabaseTransaction,
        key: &str,
        operation: &str,
        fingerprint: &str,
        response: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use entities::idempotency::{ActiveModel, Entity};
        Entity::insert(ActiveModel {
            key: sea_orm::Set(key.to_owned()),
            operation: sea_orm::Set(operation.to_owned()),
            fingerprint: sea_orm::Set(fingerprint.to_owned()),
            response: sea_orm::Set(response.to_owned()),
            created_at: sea_orm::Set(now),
        })
        .exec_without_returning(txn)
        .await
        .map_err(db_err("store idempotency key"))?;
        Ok(())
    }

    /// Replaces a stored key's answer (written once the transaction knows its revision).
    pub async fn set_idempotent_response(
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
    pub async fn prune_idempotency_keys(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
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

    /// Whether any key (of any operation) is stored under `key`.
    pub async fn idempotency_key_exists(&self, key: &str) -> Result<bool> {
        Ok(entities::idempotency::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await
            .map_err(db_err("read idempotency key"))?
            .is_some())
    }
}

fn stored<T: for<'de> Deserialize<'de>>(
    doc: &str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Result<Stored<T>> {
    Ok(Stored {
        value: from_json(doc)?,
        created_at,
        updated_at,
    })
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
fn indexed_grant(
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

/// A change-log entry, encoded.
#[derive(Debug)]
pub struct EncodedChanges(String);

impl EncodedChanges {
    pub fn of(changes: &[IndexChange]) -> Result<Self> {
        encode_log(changes).map(Self)
    }
}

fn encode_log(changes: &[IndexChange]) -> Result<String> {
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

#[cfg(test)]
mod notification_tests {
    use super::*;

    #[test]
    fn a_store_recognises_only_its_own_notifications() {
        let (a, b) = (NotifyOrigin::new(), NotifyOrigin::new());
        let own = a.payload(42);
        assert!(own.starts_with("42 "));
        assert!(a.sent(&own));
        assert!(!b.sent(&own));
        // A bare revision (an older replica's payload) always wakes the follower.
        assert!(!a.sent("42"));
    }
}
