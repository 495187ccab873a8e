//! The grant repository: chunked batch inserts, updates, filtered listing with paging.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Order;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use tenantry_common::db::PgArrayLiteral;
use uuid::Uuid;

use super::entities::grant::{ActiveModel, Column, Entity, Model};
use super::{Store, db_err, from_json, to_json};
use crate::app::ports::{GrantFilter, GrantSort, GrantStore, StatusFilter};
use crate::domain::{DomainError, Grant, GrantSource, GrantStatus, Result};

/// PostgreSQL accepts at most 65,535 bind parameters per statement; a grant row binds 15.
const GRANT_COLUMNS: usize = 15;
pub const INSERT_CHUNK: usize = 65_535 / GRANT_COLUMNS;

pub(super) fn to_domain(row: Model) -> Result<Grant> {
    Ok(Grant {
        id: row.id,
        plan_id: row.plan_id,
        tenant_id: row.tenant_id,
        user_id: row.user_id,
        starts_at: row.starts_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        revoked_by: row.revoked_by,
        revoke_reason: row.revoke_reason,
        source: GrantSource::from(row.source),
        external_id: row.external_id,
        granted_by: row.granted_by,
        metadata: from_json(&row.metadata)?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn to_active(grant: &Grant) -> Result<ActiveModel> {
    Ok(ActiveModel {
        id: Set(grant.id),
        plan_id: Set(grant.plan_id),
        tenant_id: Set(grant.tenant_id.clone()),
        user_id: Set(grant.user_id.clone()),
        starts_at: Set(grant.starts_at),
        expires_at: Set(grant.expires_at),
        revoked_at: Set(grant.revoked_at),
        revoked_by: Set(grant.revoked_by.clone()),
        revoke_reason: Set(grant.revoke_reason.clone()),
        source: Set(grant.source.as_str().to_owned()),
        external_id: Set(grant.external_id.clone()),
        granted_by: Set(grant.granted_by.clone()),
        metadata: Set(to_json(&grant.metadata)?),
        created_at: Set(grant.created_at),
        updated_at: Set(grant.updated_at),
    })
}

/// Statuses as SQL conditions at an instant (the domain's `status_at` rule).
impl StatusFilter {
    fn condition(self) -> Condition {
        let at = self.at;
        let revoked = Condition::all()
            .add(Column::RevokedAt.is_not_null())
            .add(Column::RevokedAt.lte(at));
        let not_revoked = Condition::any()
            .add(Column::RevokedAt.is_null())
            .add(Column::RevokedAt.gt(at));
        let expired = Condition::all()
            .add(Column::ExpiresAt.is_not_null())
            .add(Column::ExpiresAt.lte(at));
        let not_expired = Condition::any()
            .add(Column::ExpiresAt.is_null())
            .add(Column::ExpiresAt.gt(at));
        match self.status {
            GrantStatus::Revoked => revoked,
            GrantStatus::Expired => Condition::all().add(not_revoked).add(expired),
            GrantStatus::Scheduled => Condition::all()
                .add(not_revoked)
                .add(not_expired)
                .add(Column::StartsAt.gt(at)),
            GrantStatus::Active => Condition::all()
                .add(not_revoked)
                .add(not_expired)
                .add(Column::StartsAt.lte(at)),
        }
    }
}

impl GrantFilter {
    fn condition(&self) -> Condition {
        let mut c = Condition::all();
        if !self.tenant_ids.is_empty() {
            c = c.add(Column::TenantId.is_in(self.tenant_ids.iter().cloned()));
        }
        if !self.user_ids.is_empty() {
            c = c.add(Column::UserId.is_in(self.user_ids.iter().cloned()));
        }
        if !self.plan_ids.is_empty() {
            c = c.add(Column::PlanId.is_in(self.plan_ids.iter().copied()));
        }
        if !self.sources.is_empty() {
            c = c.add(Column::Source.is_in(self.sources.iter().cloned()));
        }
        if !self.statuses.is_empty() {
            c = c.add(
                self.statuses
                    .iter()
                    .fold(Condition::any(), |any, s| any.add(s.condition())),
            );
        }
        match self.user_level {
            Some(true) => c = c.add(Column::UserId.is_not_null()),
            Some(false) => c = c.add(Column::UserId.is_null()),
            None => {}
        }
        if let Some(ext) = &self.external_id {
            c = c.add(Column::ExternalId.eq(ext.clone()));
        }
        if let Some(until) = self.created_until {
            c = c.add(Column::CreatedAt.lte(until));
        }
        c
    }
}

/// Rows per `INSERT … SELECT FROM unnest(…)` statement (15 array parameters whatever the size).
const UNNEST_CHUNK: usize = 5_000;

/// One statement for a whole batch: every column is bound once, as an array, and the server
/// unnests them. Parsing and planning no longer grow with the batch (a multi-row `VALUES`
/// binds 15 parameters per row), and the table's constraints (unique external ID per account,
/// the plan foreign key, expiry after start) are enforced exactly as for any insert.
const UNNEST_INSERT: &str = "INSERT INTO ent_grant (id, plan_id, tenant_id, user_id, \
     starts_at, expires_at, revoked_at, revoked_by, revoke_reason, source, external_id, \
     granted_by, metadata, created_at, updated_at) \
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
     $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], \
     $10::text[], $11::text[], $12::text[], $13::text[], $14::timestamptz[], $15::timestamptz[])";

fn unnest_statement(grants: &[Grant]) -> Result<Statement> {
    let n = grants.len();
    let mut cols: Vec<PgArrayLiteral> = [36, 36, 24, 8, 27, 27, 27, 8, 8, 8, 8, 16, 8, 27, 27]
        .into_iter()
        .map(|width| PgArrayLiteral::with_capacity(n, width))
        .collect();
    for g in grants {
        let metadata = to_json(&g.metadata)?;
        cols[0].push_uuid(g.id);
        cols[1].push_uuid(g.plan_id);
        cols[2].push(Some(&g.tenant_id));
        cols[3].push(g.user_id.as_deref());
        cols[4].push_time(Some(g.starts_at));
        cols[5].push_time(g.expires_at);
        cols[6].push_time(g.revoked_at);
        cols[7].push(g.revoked_by.as_deref());
        cols[8].push(g.revoke_reason.as_deref());
        cols[9].push(Some(g.source.as_str()));
        cols[10].push(g.external_id.as_deref());
        cols[11].push(g.granted_by.as_deref());
        cols[12].push(Some(&metadata));
        cols[13].push_time(Some(g.created_at));
        cols[14].push_time(Some(g.updated_at));
    }
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        UNNEST_INSERT,
        cols.into_iter().map(PgArrayLiteral::finish),
    ))
}

#[async_trait]
impl GrantStore for Store {
    /// Inserts grants in one transaction: on PostgreSQL one `INSERT … SELECT FROM unnest(…)`
    /// per 5,000 rows; on SQLite multi-row inserts chunked under the bind-parameter limit.
    async fn insert_grants(&self, txn: &DatabaseTransaction, grants: &[Grant]) -> Result<()> {
        if self.is_postgres() {
            for chunk in grants.chunks(UNNEST_CHUNK) {
                txn.execute_raw(unnest_statement(chunk)?)
                    .await
                    .map_err(db_err("insert grants"))?;
            }
            return Ok(());
        }
        for chunk in grants.chunks(INSERT_CHUNK) {
            let rows = chunk.iter().map(to_active).collect::<Result<Vec<_>>>()?;
            Entity::insert_many(rows)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert grants"))?;
        }
        Ok(())
    }

    async fn update_grant(&self, txn: &DatabaseTransaction, grant: &Grant) -> Result<()> {
        Entity::update(to_active(grant)?)
            .exec(txn)
            .await
            .map_err(db_err("update grant"))?;
        Ok(())
    }

    async fn delete_grants(&self, txn: &DatabaseTransaction, ids: &[Uuid]) -> Result<u64> {
        let mut deleted = 0;
        for chunk in ids.chunks(INSERT_CHUNK) {
            deleted += Entity::delete_many()
                .filter(Column::Id.is_in(chunk.iter().copied()))
                .exec(txn)
                .await
                .map_err(db_err("delete grants"))?
                .rows_affected;
        }
        Ok(deleted)
    }

    async fn grants_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Grant>> {
        self.grants_by_ids_on(self.connection(), ids, false).await
    }

    async fn lock_grants(&self, txn: &DatabaseTransaction, ids: &[Uuid]) -> Result<Vec<Grant>> {
        self.grants_by_ids_on(txn, ids, true).await
    }

    async fn grant(&self, id: Uuid) -> Result<Grant> {
        let row = Entity::find_by_id(id)
            .one(self.connection())
            .await
            .map_err(db_err("load grant"))?
            .ok_or_else(|| DomainError::not_found("grant", id))?;
        to_domain(row)
    }

    /// `(tenant, external_id, grant holding it)` for the pairs already taken.
    async fn taken_external_ids(
        &self,
        conn: &DatabaseTransaction,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String, Uuid)>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in pairs.chunks(1000) {
            let any = chunk.iter().fold(Condition::any(), |any, (t, e)| {
                any.add(
                    Condition::all()
                        .add(Column::TenantId.eq(t.clone()))
                        .add(Column::ExternalId.eq(e.clone())),
                )
            });
            for row in Entity::find()
                .filter(any)
                .all(conn)
                .await
                .map_err(db_err("check external ids"))?
            {
                if let Some(e) = row.external_id {
                    out.push((row.tenant_id, e, row.id));
                }
            }
        }
        Ok(out)
    }

    /// Not-yet-revoked grants of an account (all levels) or of a plan.
    async fn unrevoked_grants(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: Option<&str>,
        plan_id: Option<Uuid>,
    ) -> Result<Vec<Grant>> {
        let mut query = Entity::find().filter(Column::RevokedAt.is_null());
        if let Some(t) = tenant_id {
            query = query.filter(Column::TenantId.eq(t));
        }
        if let Some(p) = plan_id {
            query = query.filter(Column::PlanId.eq(p));
        }
        if self.is_postgres() {
            query = query.lock_exclusive();
        }
        query
            .all(txn)
            .await
            .map_err(db_err("load grants"))?
            .into_iter()
            .map(to_domain)
            .collect()
    }

    /// Counts a plan's grants that are active or scheduled at `at`.
    async fn live_grant_count(
        &self,
        conn: &DatabaseTransaction,
        plan_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        Entity::find()
            .filter(Column::PlanId.eq(plan_id))
            .filter(
                Condition::any()
                    .add(
                        StatusFilter {
                            status: GrantStatus::Active,
                            at,
                        }
                        .condition(),
                    )
                    .add(
                        StatusFilter {
                            status: GrantStatus::Scheduled,
                            at,
                        }
                        .condition(),
                    ),
            )
            .count(conn)
            .await
            .map_err(db_err("count grants"))
    }

    /// A page of grants and the total matching.
    async fn list_grants(&self, filter: &GrantFilter) -> Result<(Vec<Grant>, u64)> {
        let conn = self.connection();
        let base = Entity::find().filter(filter.condition());
        let total = base
            .clone()
            .count(conn)
            .await
            .map_err(db_err("count grants"))?;
        let order = if filter.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        let query = match filter.sort {
            GrantSort::CreatedAt => base.order_by(Column::CreatedAt, order.clone()),
            // Never-expiring grants sort last ascending (first descending).
            GrantSort::ExpiresAt => base
                .order_by(Column::ExpiresAt.is_null(), order.clone())
                .order_by(Column::ExpiresAt, order.clone()),
        };
        let rows = query
            .order_by(Column::Id, order)
            .offset(filter.offset)
            .limit(filter.limit)
            .all(conn)
            .await
            .map_err(db_err("list grants"))?;
        let grants = rows.into_iter().map(to_domain).collect::<Result<_>>()?;
        Ok((grants, total))
    }

    /// A user's own grants, newest first.
    async fn user_grants(&self, user_id: &str, tenant_id: Option<&str>) -> Result<Vec<Grant>> {
        let mut query = Entity::find().filter(Column::UserId.eq(user_id));
        if let Some(t) = tenant_id {
            query = query.filter(Column::TenantId.eq(t));
        }
        query
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .all(self.connection())
            .await
            .map_err(db_err("list user grants"))?
            .into_iter()
            .map(to_domain)
            .collect()
    }

    /// Account-level grants of these accounts (an account and its ancestors), newest first.
    async fn account_grants(&self, tenant_ids: &[String]) -> Result<Vec<Grant>> {
        Entity::find()
            .filter(Column::TenantId.is_in(tenant_ids.iter().cloned()))
            .filter(Column::UserId.is_null())
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .all(self.connection())
            .await
            .map_err(db_err("list account grants"))?
            .into_iter()
            .map(to_domain)
            .collect()
    }

    /// Plan ids granted (any status) to any of these users or accounts.
    async fn granted_plan_ids(
        &self,
        tenant_ids: &[String],
        user_ids: &[String],
    ) -> Result<Vec<Uuid>> {
        let mut c = Condition::any();
        if !tenant_ids.is_empty() {
            c = c.add(Column::TenantId.is_in(tenant_ids.iter().cloned()));
        }
        if !user_ids.is_empty() {
            c = c.add(Column::UserId.is_in(user_ids.iter().cloned()));
        }
        let ids: Vec<Uuid> = Entity::find()
            .select_only()
            .column(Column::PlanId)
            .distinct()
            .filter(c)
            .into_tuple()
            .all(self.connection())
            .await
            .map_err(db_err("list granted plans"))?;
        Ok(ids)
    }
}

impl Store {
    /// Grants by id, locked for update on PostgreSQL (writers of the same grant serialize).
    async fn grants_by_ids_on(
        &self,
        conn: &impl ConnectionTrait,
        ids: &[Uuid],
        lock: bool,
    ) -> Result<Vec<Grant>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut query = Entity::find().filter(Column::Id.is_in(chunk.iter().copied()));
            if lock && self.is_postgres() {
                query = query.lock_exclusive();
            }
            for row in query.all(conn).await.map_err(db_err("load grants"))? {
                out.push(to_domain(row)?);
            }
        }
        Ok(out)
    }
}
