//! Meters, usage events and credit grants.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockType, OnConflict};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    ExprTrait, Order, QueryFilter, QueryOrder, QuerySelect, Set, Statement, Value,
};
use uuid::Uuid;

use super::entities::{credit_grant, meter, usage_event, usage_unique};
use super::{Store, db_err, from_json, to_json};
use crate::app::ports::{DrawLane, MeterStore, SeenMeter};
use crate::domain::metering::{
    CreditGrant, Drawn, MeterKey, MeterState, StoredDraw, StoredOutcome, StoredUsage,
};
use crate::domain::{DomainError, IndexChange, Result};
use tenantry_common::db::PgArrayLiteral;

fn usage_row(usage: &StoredUsage) -> Result<usage_event::ActiveModel> {
    Ok(usage_event::ActiveModel {
        tenant_id: Set(usage.tenant_id.clone()),
        event_id: Set(usage.event_id.clone()),
        feature_id: Set(usage.feature_id),
        user_id: Set(usage.user_id.clone()),
        amount: Set(usage.amount),
        counted: Set(usage.counted),
        occurred_at: Set(usage.occurred_at),
        received_at: Set(usage.received_at),
        outcome: Set(usage.outcome.as_str().to_owned()),
        answer: Set(usage.answer.clone()),
        unique_value: Set(usage.unique.clone()),
        drawn_at: Set(usage.drawn.as_ref().map(|d| d.at)),
        meter_after: Set(usage.drawn.as_ref().map(to_json).transpose()?),
        drawn_on: Set(usage.drawn.as_ref().map(|d| d.on.clone())),
        drawn_user: Set(usage.drawn.as_ref().and_then(|d| d.on_user.clone())),
    })
}

/// A meter row created by a lock before its first write.
const UNWRITTEN: &str = "null";

/// Stores usage events and writes meters (every row exists, locked by the writing
/// transaction), each column one array parameter ([`PgArrayLiteral`]: PostgreSQL reads a
/// thousand rows from 15 array literals a quarter faster than from one JSON array, and far
/// faster than from a 15,000-parameter VALUES list). No `ON CONFLICT` for the events: the writer
/// read their keys free under its meter locks, so a taken one is a race with a writer of other
/// meters, a unique violation (the conflict the caller reports) — and the speculative
/// insertion `ON CONFLICT` costs on every row added a tenth to a batch's insert.
const STORE_DRAWS_PG: &str = "WITH e AS (INSERT INTO ent_usage_event \
       (tenant_id, event_id, feature_id, user_id, amount, counted, occurred_at, received_at, \
        outcome, answer, unique_value, drawn_at, meter_after, drawn_on, drawn_user) \
       SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::int8[], \
         $6::int8[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], \
         $11::text[], $12::timestamptz[], $13::text[], $14::text[], $15::text[])) \
     INSERT INTO ent_meter (tenant_id, feature_id, user_id, state, updated_at) \
       SELECT t, f, u, s, $20 \
       FROM unnest($16::text[], $17::uuid[], $18::text[], $19::text[]) AS k(t, f, u, s) \
       ON CONFLICT (tenant_id, feature_id, user_id) \
       DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at";

/// [`STORE_DRAWS_PG`]'s event columns.
fn event_arrays(usages: &[StoredUsage]) -> Result<Vec<PgArrayLiteral>> {
    let n = usages.len();
    let mut cols: Vec<PgArrayLiteral> = [24, 24, 36, 8, 8, 8, 27, 27, 8, 8, 8, 27, 240, 24, 8]
        .into_iter()
        .map(|width| PgArrayLiteral::with_capacity(n, width))
        .collect();
    for u in usages {
        cols[0].push(Some(&u.tenant_id));
        cols[1].push(Some(&u.event_id));
        cols[2].push_uuid(u.feature_id);
        cols[3].push(u.user_id.as_deref());
        cols[4].push_int(u.amount);
        cols[5].push_int(u.counted);
        cols[6].push_time(Some(u.occurred_at));
        cols[7].push_time(Some(u.received_at));
        cols[8].push(Some(u.outcome.as_str()));
        cols[9].push(u.answer.as_deref());
        cols[10].push(u.unique.as_deref());
        // The draw's time, the meter after it (JSON) and whose meter it was.
        let drawn = u.drawn.as_ref();
        cols[11].push_time(drawn.map(|d| d.at));
        cols[12].push(drawn.map(to_json).transpose()?.as_deref());
        cols[13].push(drawn.map(|d| d.on.as_str()));
        cols[14].push(drawn.and_then(|d| d.on_user.as_deref()));
    }
    Ok(cols)
}

/// Meter keys (account, feature, user: `''` for the account's) as three array parameters.
fn meter_key_arrays<'a>(
    keys: impl ExactSizeIterator<Item = (&'a MeterKey, Uuid)>,
) -> [PgArrayLiteral; 3] {
    let n = keys.len();
    let mut cols = [24, 36, 8].map(|width| PgArrayLiteral::with_capacity(n, width));
    for (key, feature_id) in keys {
        cols[0].push(Some(&key.tenant_id));
        cols[1].push_uuid(feature_id);
        cols[2].push(Some(key.user().unwrap_or_default()));
    }
    cols
}

/// (account, event id) keys as two array parameters.
fn event_key_arrays(keys: &[(&str, &str)]) -> [sea_orm::Value; 2] {
    [
        PgArrayLiteral::of(keys.iter().map(|k| k.0)),
        PgArrayLiteral::of(keys.iter().map(|k| k.1)),
    ]
}

/// The keys stored as events: one primary-key probe each. (A subquery with a `LIMIT` is never
/// made a join: joined, the planner — which cannot know the arrays' length — hashes them and
/// reads the whole event table.)
const STORED_KEYS_PG: &str = "SELECT u.tenant_id, u.event_id \
     FROM unnest($1::text[], $2::text[]) AS k(t, e) \
     CROSS JOIN LATERAL (SELECT tenant_id, event_id FROM ent_usage_event \
       WHERE tenant_id = k.t AND event_id = k.e LIMIT 1) u";

/// The stored events under keys, probed as [`STORED_KEYS_PG`].
const USAGE_EVENTS_PG: &str = "SELECT u.* \
     FROM unnest($1::text[], $2::text[]) AS k(t, e) \
     CROSS JOIN LATERAL (SELECT * FROM ent_usage_event \
       WHERE tenant_id = k.t AND event_id = k.e LIMIT 1) u";

/// Locks the stored meters of keys, one primary-key probe each (as [`STORED_KEYS_PG`]), in
/// the one total order every writer locks meters in (bytes of the account, the feature, bytes
/// of the user — `''`, the account's meter, first), so writers locking several cannot
/// deadlock: the probes run in the keys' sorted order.
const LOCK_METERS_PG: &str = "SELECT m.* \
     FROM (SELECT t, f, u FROM unnest($1::text[], $2::uuid[], $3::text[]) AS j(t, f, u) \
       ORDER BY t COLLATE \"C\", f, u COLLATE \"C\") k \
     CROSS JOIN LATERAL (SELECT * FROM ent_meter \
       WHERE tenant_id = k.t AND feature_id = k.f AND user_id = k.u LIMIT 1 FOR UPDATE) m";

/// The stored states of `meters` (`None`: never written) from their locked rows.
fn states_of(
    meters: &[(&MeterKey, Uuid)],
    rows: Vec<meter::Model>,
) -> Result<Vec<Option<MeterState>>> {
    let mut states: HashMap<(&str, Uuid, &str), String> = rows
        .iter()
        .map(|r| {
            let key = (r.tenant_id.as_str(), r.feature_id, r.user_id.as_str());
            (key, r.state.clone())
        })
        .collect();
    meters
        .iter()
        .map(|&(key, feature_id)| {
            let at = (
                key.tenant_id.as_str(),
                feature_id,
                key.user().unwrap_or_default(),
            );
            let state = states.remove(&at).ok_or_else(|| DomainError::Internal {
                message: "a meter row vanished under its lock".into(),
                source: None,
            })?;
            if state == UNWRITTEN {
                Ok(None)
            } else {
                from_json(&state).map(Some)
            }
        })
        .collect()
}

/// A meter's user as stored: `''` for the account's own meter.
pub(super) fn user_col(meter: &MeterKey) -> String {
    meter.user_id.clone().unwrap_or_default()
}

/// Exactly these (account, feature, user) meters.
fn meter_keys(meters: &[(&MeterKey, Uuid)]) -> Condition {
    meters
        .iter()
        .fold(Condition::any(), |any, &(key, feature_id)| {
            any.add(
                Condition::all()
                    .add(meter::Column::TenantId.eq(key.tenant_id.as_str()))
                    .add(meter::Column::FeatureId.eq(feature_id))
                    .add(meter::Column::UserId.eq(user_col(key))),
            )
        })
}

/// The usage events of these accounts under these ids: every (account, event id) key given,
/// and possibly others pairing one key's account with another's id (callers look keys up
/// exactly). Two lists instead of a thousand-way `OR`: the primary key serves it either way.
fn event_keys(keys: &[(&str, &str)]) -> Condition {
    let tenants: BTreeSet<&str> = keys.iter().map(|k| k.0).collect();
    let ids: BTreeSet<&str> = keys.iter().map(|k| k.1).collect();
    Condition::all()
        .add(usage_event::Column::TenantId.is_in(tenants))
        .add(usage_event::Column::EventId.is_in(ids))
}

impl Store {
    /// Usage events and the meters they drew, in one statement.
    async fn store_draws_pg(
        &self,
        txn: &DatabaseTransaction,
        usages: &[StoredUsage],
        meters: &[(&MeterKey, Uuid, &MeterState)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut params: Vec<Value> = event_arrays(usages)?
            .into_iter()
            .map(PgArrayLiteral::finish)
            .collect();
        params.extend(
            meter_key_arrays(meters.iter().map(|&(key, f, _)| (key, f)))
                .map(PgArrayLiteral::finish),
        );
        let mut states = PgArrayLiteral::with_capacity(meters.len(), 240);
        for &(_, _, state) in meters {
            states.push(Some(&to_json(state)?));
        }
        params.push(states.finish());
        params.push(Value::from(now));
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            STORE_DRAWS_PG,
            params,
        ))
        .await
        .map_err(db_err("record usage events"))?;
        Ok(())
    }
}

#[async_trait]
impl MeterStore for Store {
    async fn lock_meters(
        &self,
        txn: &DatabaseTransaction,
        meters: &[(&MeterKey, Uuid)],
    ) -> Result<Vec<Option<MeterState>>> {
        if meters.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_postgres() {
            let keys = meter_key_arrays(meters.iter().copied()).map(PgArrayLiteral::finish);
            // Meters written before: one statement locks them all.
            let rows = meter::Entity::find()
                .from_raw_sql(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    LOCK_METERS_PG,
                    keys,
                ))
                .all(txn)
                .await
                .map_err(db_err("lock meters"))?;
            if rows.len() == meters.len() {
                return states_of(meters, rows);
            }
        }
        // A row to lock even before the first write: concurrent first writers meet on it.
        meter::Entity::insert_many(meters.iter().map(|&(key, feature_id)| meter::ActiveModel {
            tenant_id: Set(key.tenant_id.clone()),
            feature_id: Set(feature_id),
            user_id: Set(user_col(key)),
            state: Set(UNWRITTEN.to_owned()),
            updated_at: Set(DateTime::UNIX_EPOCH),
        }))
        .on_conflict(
            OnConflict::columns([
                meter::Column::TenantId,
                meter::Column::FeatureId,
                meter::Column::UserId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(db_err("create meters"))?;
        let mut query = meter::Entity::find().filter(meter_keys(meters));
        if self.is_postgres() {
            // Rows are locked in the order returned, one total order of the key (bytes of the
            // account, the feature, bytes of the user — `''`, the account's meter, first), so
            // writers locking several meters (users' and accounts' mixed) cannot deadlock.
            query = query
                .order_by(Expr::cust(r#""tenant_id" COLLATE "C""#), Order::Asc)
                .order_by_asc(meter::Column::FeatureId)
                .order_by(Expr::cust(r#""user_id" COLLATE "C""#), Order::Asc)
                .lock(LockType::Update);
        }
        let rows = query.all(txn).await.map_err(db_err("lock meters"))?;
        states_of(meters, rows)
    }

    async fn put_meters(
        &self,
        txn: &DatabaseTransaction,
        meters: &[(&MeterKey, Uuid, &MeterState)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if meters.is_empty() {
            return Ok(());
        }
        if self.is_postgres() {
            return self.store_draws_pg(txn, &[], meters, now).await;
        }
        // Every row exists (locked by this transaction): one upsert writes them all.
        let rows = meters
            .iter()
            .map(|&(key, feature_id, state)| {
                Ok(meter::ActiveModel {
                    tenant_id: Set(key.tenant_id.clone()),
                    feature_id: Set(feature_id),
                    user_id: Set(user_col(key)),
                    state: Set(to_json(state)?),
                    updated_at: Set(now),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        meter::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    meter::Column::TenantId,
                    meter::Column::FeatureId,
                    meter::Column::UserId,
                ])
                .update_columns([meter::Column::State, meter::Column::UpdatedAt])
                .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(db_err("write meters"))?;
        Ok(())
    }

    async fn insert_usage(&self, txn: &DatabaseTransaction, usage: &StoredUsage) -> Result<bool> {
        let inserted = usage_event::Entity::insert(usage_row(usage)?)
            .on_conflict(
                OnConflict::columns([usage_event::Column::TenantId, usage_event::Column::EventId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(db_err("record a usage event"))?;
        Ok(inserted > 0)
    }

    async fn store_draws(
        &self,
        txn: &DatabaseTransaction,
        usages: &[StoredUsage],
        meters: &[(&MeterKey, Uuid, &MeterState)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if self.is_postgres() {
            return self.store_draws_pg(txn, usages, meters, now).await;
        }
        if !usages.is_empty() {
            // 15 parameters a row: a 1,000-event batch stays under SQLite's limit. A taken key
            // is a unique violation, the conflict (as on PostgreSQL).
            let rows = usages.iter().map(usage_row).collect::<Result<Vec<_>>>()?;
            usage_event::Entity::insert_many(rows)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("record usage events"))?;
        }
        self.put_meters(txn, meters, now).await
    }

    async fn draw_if_unchanged(
        &self,
        seen: &[SeenMeter<'_>],
        usages: &[StoredUsage],
        changes: &[IndexChange],
        now: DateTime<Utc>,
        lane: DrawLane,
    ) -> Result<Option<u64>> {
        if !self.is_postgres() {
            return Ok(None);
        }
        self.draw_if_unchanged_pg(seen, usages, changes, now, lane)
            .await
    }

    async fn stored_usage_keys(
        &self,
        txn: &DatabaseTransaction,
        keys: &[(&str, &str)],
    ) -> Result<HashSet<(String, String)>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        if self.is_postgres() {
            let rows = txn
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    STORED_KEYS_PG,
                    event_key_arrays(keys),
                ))
                .await
                .map_err(db_err("read usage events"))?;
            return rows
                .iter()
                .map(|row| {
                    Ok((
                        row.try_get::<String>("", "tenant_id")?,
                        row.try_get::<String>("", "event_id")?,
                    ))
                })
                .collect::<std::result::Result<_, sea_orm::DbErr>>()
                .map_err(db_err("read usage events"));
        }
        let found: Vec<(String, String)> = usage_event::Entity::find()
            .select_only()
            .column(usage_event::Column::TenantId)
            .column(usage_event::Column::EventId)
            .filter(event_keys(keys))
            .into_tuple()
            .all(txn)
            .await
            .map_err(db_err("read usage events"))?;
        let asked: HashSet<(&str, &str)> = keys.iter().copied().collect();
        Ok(found
            .into_iter()
            .filter(|(t, e)| asked.contains(&(t.as_str(), e.as_str())))
            .collect())
    }

    async fn usage_events(
        &self,
        txn: &DatabaseTransaction,
        keys: &[(&str, &str)],
    ) -> Result<Vec<StoredUsage>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = if self.is_postgres() {
            // One statement text for any number of keys (one prepared statement, one plan).
            usage_event::Entity::find()
                .from_raw_sql(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    USAGE_EVENTS_PG,
                    event_key_arrays(keys),
                ))
                .all(txn)
                .await
        } else {
            usage_event::Entity::find()
                .filter(event_keys(keys))
                .all(txn)
                .await
        }
        .map_err(db_err("read usage events"))?;
        let asked: HashSet<(&str, &str)> = keys.iter().copied().collect();
        rows.into_iter()
            .filter(|r| asked.contains(&(r.tenant_id.as_str(), r.event_id.as_str())))
            .map(|r| {
                let outcome = outcome_of(&r)?;
                let drawn = drawn_of(&r)?;
                Ok(StoredUsage {
                    tenant_id: r.tenant_id,
                    event_id: r.event_id,
                    feature_id: r.feature_id,
                    user_id: r.user_id,
                    amount: r.amount,
                    counted: r.counted,
                    occurred_at: r.occurred_at,
                    received_at: r.received_at,
                    outcome,
                    answer: r.answer,
                    unique: r.unique_value,
                    drawn,
                })
            })
            .collect()
    }

    async fn insert_unique(
        &self,
        txn: &DatabaseTransaction,
        meter: &MeterKey,
        feature_id: Uuid,
        period_start: DateTime<Utc>,
        value: &str,
    ) -> Result<bool> {
        let inserted = usage_unique::Entity::insert(usage_unique::ActiveModel {
            tenant_id: Set(meter.tenant_id.clone()),
            feature_id: Set(feature_id),
            user_id: Set(user_col(meter)),
            period_start: Set(period_start),
            value: Set(value.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([
                usage_unique::Column::TenantId,
                usage_unique::Column::FeatureId,
                usage_unique::Column::UserId,
                usage_unique::Column::PeriodStart,
                usage_unique::Column::Value,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(db_err("count a unique value"))?;
        Ok(inserted > 0)
    }

    async fn insert_credit(&self, txn: &DatabaseTransaction, grant: &CreditGrant) -> Result<()> {
        credit_grant::Entity::insert(credit_row(grant)?)
            .exec(txn)
            .await
            .map_err(db_err("store a credit grant"))?;
        Ok(())
    }

    async fn lock_credit(
        &self,
        txn: &DatabaseTransaction,
        id: Uuid,
    ) -> Result<Option<CreditGrant>> {
        let mut query = credit_grant::Entity::find_by_id(id);
        if self.is_postgres() {
            query = query.lock(LockType::Update);
        }
        let row = query
            .one(txn)
            .await
            .map_err(db_err("lock a credit grant"))?;
        row.map(|r| from_json(&r.doc)).transpose()
    }

    async fn update_credit(&self, txn: &DatabaseTransaction, grant: &CreditGrant) -> Result<()> {
        credit_grant::Entity::update(credit_row(grant)?)
            .exec(txn)
            .await
            .map_err(db_err("update a credit grant"))?;
        Ok(())
    }

    async fn credits(&self, tenant_id: &str, feature_id: Option<Uuid>) -> Result<Vec<CreditGrant>> {
        let mut query = credit_grant::Entity::find()
            .filter(credit_grant::Column::TenantId.eq(tenant_id))
            .order_by_asc(credit_grant::Column::CreatedAt)
            .order_by_asc(credit_grant::Column::Id)
            // An account's credit grants are few; this bounds a pathological one.
            .limit(10_000);
        if let Some(feature_id) = feature_id {
            query = query.filter(credit_grant::Column::FeatureId.eq(feature_id));
        }
        query
            .all(&self.db)
            .await
            .map_err(db_err("list credit grants"))?
            .into_iter()
            .map(|r| from_json(&r.doc))
            .collect()
    }

    async fn draws(
        &self,
        meter: &MeterKey,
        feature_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<StoredDraw>> {
        use usage_event::Column as C;
        let tenant_id = meter.tenant_id.as_str();
        // Kept draws by the meter they drew on (a pool's include its sub-accounts'); older
        // events (all the accounts' own: users' meters came later) by their own account.
        let mut which = Condition::any().add(
            Condition::all()
                .add(C::DrawnOn.eq(tenant_id))
                .add(drawn_user(meter))
                .add(C::DrawnAt.gte(from))
                .add(C::DrawnAt.lt(to)),
        );
        if meter.user_id.is_none() {
            which = which.add(
                C::DrawnAt
                    .is_null()
                    .and(C::TenantId.eq(tenant_id))
                    .and(C::OccurredAt.gte(from))
                    .and(C::OccurredAt.lt(to)),
            );
        }
        let rows = usage_event::Entity::find()
            .filter(C::FeatureId.eq(feature_id))
            .filter(C::Outcome.is_in(DRAWING))
            .filter(which)
            .order_by_asc(C::DrawnAt)
            .order_by_asc(C::OccurredAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err("read draws"))?;
        let mut draws = rows
            .into_iter()
            .map(stored_draw)
            .collect::<Result<Vec<_>>>()?;
        draw_order(&mut draws);
        Ok(draws)
    }

    async fn draw_before(
        &self,
        meter: &MeterKey,
        feature_id: Uuid,
        before: DateTime<Utc>,
    ) -> Result<Option<StoredDraw>> {
        use usage_event::Column as C;
        let tenant_id = meter.tenant_id.as_str();
        let base = || {
            usage_event::Entity::find()
                .filter(C::FeatureId.eq(feature_id))
                .filter(C::Outcome.is_in(DRAWING))
        };
        let latest = base()
            .filter(C::DrawnOn.eq(tenant_id))
            .filter(drawn_user(meter))
            .filter(C::DrawnAt.lt(before))
            .order_by_desc(C::DrawnAt)
            .one(&self.db)
            .await
            .map_err(db_err("read the latest draw"))?;
        if let Some(latest) = latest {
            // A batch draws many events at one instant: the last of them in draw order.
            let mut at_once = base()
                .filter(C::DrawnOn.eq(tenant_id))
                .filter(drawn_user(meter))
                .filter(C::DrawnAt.eq(latest.drawn_at))
                .all(&self.db)
                .await
                .map_err(db_err("read the latest draws"))?
                .into_iter()
                .map(stored_draw)
                .collect::<Result<Vec<_>>>()?;
            draw_order(&mut at_once);
            return Ok(at_once.pop());
        }
        if meter.user_id.is_some() {
            // Users' meters came after draws were kept: none of theirs is unknown.
            return Ok(None);
        }
        // No kept draw before: an event stored before they were kept makes the start unknown.
        base()
            .filter(C::TenantId.eq(tenant_id))
            .filter(C::DrawnAt.is_null())
            .filter(C::OccurredAt.lt(before))
            .order_by_desc(C::OccurredAt)
            .one(&self.db)
            .await
            .map_err(db_err("read the latest draw"))?
            .map(stored_draw)
            .transpose()
    }
}

/// The events that drew on `meter`'s user (none: the account's own meter).
pub(super) fn drawn_user(meter: &MeterKey) -> Condition {
    match meter.user() {
        Some(user) => Condition::all().add(usage_event::Column::DrawnUser.eq(user)),
        None => Condition::all().add(usage_event::Column::DrawnUser.is_null()),
    }
}

/// Events that drew: usage recorded in the open period, consumptions allowed, commits.
pub(super) const DRAWING: [&str; 2] = ["recorded", "consumed"];

fn outcome_of(r: &usage_event::Model) -> Result<StoredOutcome> {
    StoredOutcome::parse(&r.outcome).ok_or_else(|| DomainError::Internal {
        message: format!("unknown usage outcome {:?}", r.outcome),
        source: None,
    })
}

pub(super) fn stored_draw(r: usage_event::Model) -> Result<StoredDraw> {
    let outcome = outcome_of(&r)?;
    let drawn = drawn_of(&r)?;
    Ok(StoredDraw {
        event_id: r.event_id,
        outcome,
        at: r.drawn_at.unwrap_or(r.occurred_at),
        received_at: r.received_at,
        drawn,
    })
}

/// Draw order: by time; at one instant by period, then by the usage each draw left (usage only
/// grows within a period), so a batch drawn at one instant reads in the order it drew.
pub(super) fn draw_order(draws: &mut [StoredDraw]) {
    draws.sort_by_key(|d| {
        (
            d.at,
            d.drawn.as_ref().map(|d| (d.state.start, d.state.usage)),
        )
    });
}

fn credit_row(grant: &CreditGrant) -> Result<credit_grant::ActiveModel> {
    Ok(credit_grant::ActiveModel {
        id: Set(grant.id),
        tenant_id: Set(grant.tenant_id.clone()),
        feature_id: Set(grant.feature_id),
        doc: Set(to_json(grant)?),
        created_at: Set(grant.created_at),
        voided_at: Set(grant.voided_at),
    })
}

/// An event row's meter after its draw (`None` when it drew nothing or predates them).
fn drawn_of(r: &usage_event::Model) -> Result<Option<Drawn>> {
    match (r.drawn_at, &r.meter_after) {
        (Some(at), Some(json)) => {
            let mut drawn: Drawn = from_json(json)?;
            drawn.at = at;
            drawn.on = r.drawn_on.clone().unwrap_or_else(|| r.tenant_id.clone());
            drawn.on_user = r.drawn_user.clone();
            Ok(Some(drawn))
        }
        _ => Ok(None),
    }
}
