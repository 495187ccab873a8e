//! A consumption group's or usage batch's write as one statement: the common case on
//! PostgreSQL, where the locked path's six round trips (begin, lock, probe, store, advance,
//! commit) were most of a consumption's cost, and the probe of a batch's keys a tenth of a
//! batch's.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, Postgres, Row, pool::PoolConnection};
use tokio::sync::Mutex;

use super::revisions::encode_log;
use super::{Store, to_json};
use crate::app::ports::{DrawLane, SeenMeter};
use crate::domain::metering::StoredUsage;
use crate::domain::{DomainError, IndexChange, Result};

/// Locks the group's meters in the one order every writer locks them in (as
/// `LOCK_METERS_PG`), compares each stored state with the one decided on (`$19`), and only
/// when all are unchanged (`ok`) writes the meters drawn on (`$20`, NULL for the others),
/// stores the events (`$1`–`$15`, as `STORE_DRAWS_PG`), then takes the next revision with the
/// change log and its notification (as `ADVANCE_PG`, without its webhook question: a meter's
/// change is no event, and a threshold reached takes the locked path). The revision's `WHERE`
/// reads the writes' counts so they run before it: like every writer, this one takes the
/// revision row's lock last. The notification is sent only when `$26` (see [`super::notify`]).
/// Unchanged meters return the revision; a moved one returns no row and
/// writes nothing. A taken event key fails the statement (a unique violation): nothing of it
/// is kept, as it runs as its own transaction.
const DRAW_IF_UNCHANGED_PG: &str = "WITH k AS (\
       SELECT m.tenant_id, m.feature_id, m.user_id, m.state = j.x AS same, j.s \
       FROM (SELECT * FROM unnest($16::text[], $17::uuid[], $18::text[], $19::text[], \
           $20::text[]) AS j(t, f, u, x, s) \
         ORDER BY t COLLATE \"C\", f, u COLLATE \"C\") j \
       CROSS JOIN LATERAL (SELECT * FROM ent_meter \
         WHERE tenant_id = j.t AND feature_id = j.f AND user_id = j.u LIMIT 1 FOR UPDATE) m), \
     ok AS (SELECT count(*) FILTER (WHERE same) = $22 AS ok FROM k), \
     w AS (UPDATE ent_meter m SET state = k.s, updated_at = $21 FROM k \
       WHERE (SELECT ok FROM ok) AND k.s IS NOT NULL AND m.tenant_id = k.tenant_id \
         AND m.feature_id = k.feature_id AND m.user_id = k.user_id RETURNING 1), \
     e AS (INSERT INTO ent_usage_event \
       (tenant_id, event_id, feature_id, user_id, amount, counted, occurred_at, received_at, \
        outcome, answer, unique_value, drawn_at, meter_after, drawn_on, drawn_user) \
       SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::int8[], \
         $6::int8[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], \
         $11::text[], $12::timestamptz[], $13::text[], $14::text[], $15::text[]) \
       WHERE (SELECT ok FROM ok) RETURNING 1), \
     r AS (UPDATE ent_revision SET value = value + 1 \
       WHERE id = 1 AND (SELECT ok FROM ok) \
         AND (SELECT count(*) FROM w) + (SELECT count(*) FROM e) >= 0 RETURNING value), \
     l AS (INSERT INTO ent_change_log (revision, changes, created_at) \
       SELECT value, $23, $21 FROM r) \
     SELECT r.value FROM r LEFT JOIN LATERAL \
       (SELECT pg_notify($24, CAST(r.value AS text) || ' ' || $25) WHERE $26) AS n ON true";

/// The connection consumption groups write on, kept from one group to the next (they run one
/// at a time): a pooled connection handed back after each statement is pinged by the pool on
/// its return, a second round trip per group. Dropped on any failure (the next group takes
/// another), and not kept at all from a pool of fewer than three.
#[derive(Debug, Clone, Default)]
pub(super) struct HeldConnection(Arc<Mutex<Option<PoolConnection<Postgres>>>>);

impl HeldConnection {
    /// Hands the connection back to the pool, whose close waits for every connection taken.
    pub(super) async fn release(&self) {
        self.0.lock().await.take();
    }
}

impl Store {
    /// [`crate::app::ports::MeterStore::draw_if_unchanged`].
    pub(super) async fn draw_if_unchanged_pg(
        &self,
        seen: &[SeenMeter<'_>],
        usages: &[StoredUsage],
        changes: &[IndexChange],
        now: DateTime<Utc>,
        lane: DrawLane,
    ) -> Result<Option<u64>> {
        let mut meter_after = Vec::with_capacity(usages.len());
        for u in usages {
            meter_after.push(u.drawn.as_ref().map(to_json).transpose()?);
        }
        let mut before = Vec::with_capacity(seen.len());
        let mut after = Vec::with_capacity(seen.len());
        for m in seen {
            before.push(to_json(m.before)?);
            after.push(m.after.map(to_json).transpose()?);
        }
        let log = encode_log(changes)?;
        let announced = self.throttle.lead();
        // Arrays in the binary format: PostgreSQL reads them without parsing text (a third of
        // a thousand-event batch's insert was spent parsing literals and times).
        fn column<'a, T, U>(items: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
            items.iter().map(f).collect()
        }
        let query = sqlx::query(DRAW_IF_UNCHANGED_PG)
            .bind(column(usages, |u| u.tenant_id.as_str()))
            .bind(column(usages, |u| u.event_id.as_str()))
            .bind(column(usages, |u| u.feature_id))
            .bind(column(usages, |u| u.user_id.as_deref()))
            .bind(column(usages, |u| u.amount))
            .bind(column(usages, |u| u.counted))
            .bind(column(usages, |u| u.occurred_at))
            .bind(column(usages, |u| u.received_at))
            .bind(column(usages, |u| u.outcome.as_str()))
            .bind(column(usages, |u| u.answer.as_deref()))
            .bind(column(usages, |u| u.unique.as_deref()))
            .bind(column(usages, |u| u.drawn.as_ref().map(|d| d.at)))
            .bind(meter_after)
            .bind(column(usages, |u| u.drawn.as_ref().map(|d| d.on.as_str())))
            .bind(column(usages, |u| {
                u.drawn.as_ref().and_then(|d| d.on_user.as_deref())
            }))
            .bind(column(seen, |m| m.owner.tenant_id.as_str()))
            .bind(column(seen, |m| m.feature_id))
            .bind(column(seen, |m| m.owner.user().unwrap_or_default()))
            .bind(before)
            .bind(after)
            .bind(now)
            .bind(i64::try_from(seen.len()).unwrap_or(i64::MAX))
            .bind(log)
            .bind(self.channel.as_str())
            .bind(self.origin.payload_suffix())
            .bind(announced.is_some());
        let pool = self.db.get_postgres_connection_pool();
        let answer = match lane {
            DrawLane::Pooled => query.fetch_optional(pool).await,
            DrawLane::Consumptions => {
                let mut held = self.consume_conn.0.lock().await;
                let conn = match &mut *held {
                    Some(conn) => conn,
                    None => match pool.acquire().await {
                        Ok(conn) => held.insert(conn),
                        // The locked path reports the database's unavailability.
                        Err(_) => return Ok(None),
                    },
                };
                let answer = query.fetch_optional(&mut **conn).await;
                // Given back on a failure, and by a small pool (the change listener holds one
                // connection) at once.
                if answer.is_err() || pool.options().get_max_connections() < 3 {
                    *held = None;
                }
                answer
            }
        };
        match answer {
            Ok(Some(row)) => {
                let revision: i64 = row.try_get("value").map_err(|e| DomainError::Internal {
                    message: "read the revision".into(),
                    source: Some(Box::new(e)),
                })?;
                let revision = revision as u64;
                match announced {
                    Some(start) => self.throttle.led(start),
                    None => self
                        .throttle
                        .owe(revision, pool, &self.channel, &self.origin),
                }
                Ok(Some(revision))
            }
            // A meter moved: nothing was written.
            Ok(None) => Ok(None),
            // Nothing of a failed statement is kept (a taken key; a connection lost before it
            // ran): the locked path tells which, and whether a lost answer committed (its ids
            // are then stored, and replayed).
            Err(e) => {
                // The kind only: the database's message names the taken key.
                tracing::debug!(
                    failure = ?tenantry_common::db::classify_sqlx(&e),
                    "a single-statement write failed; taking the locked path"
                );
                Ok(None)
            }
        }
    }
}
