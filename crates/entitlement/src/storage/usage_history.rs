//! Usage history: the usage events of one meter aggregated per window in one query, the same
//! SQL on PostgreSQL and SQLite.
//!
//! Each event's window is found by a balanced `CASE` over the window bounds (about log2 of the
//! window count comparisons per event), so any bounds work — calendar months, usage periods cut
//! by a manual reset — without per-database date functions; the range itself is read through
//! `ent_usage_event_meter` (feature, account, time).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use super::entities::meter_period;
use super::entities::usage_event::{Column, Entity};
use super::metering::user_col;
use super::{Store, db_err, from_json, to_json};
use crate::app::ports::UsageHistoryStore;
use crate::domain::metering::{MeterKey, StoredOutcome};
use crate::domain::usage_history::PeriodSummary;
use crate::domain::{Aggregation, Result};

/// Closed periods read at once: more than a history can show (1,000 windows).
const MAX_PERIODS: u64 = 1_001;

async fn periods_overlapping<C: ConnectionTrait>(
    conn: &C,
    meter: &MeterKey,
    feature_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PeriodSummary>> {
    meter_period::Entity::find()
        .filter(meter_period::Column::TenantId.eq(meter.tenant_id.as_str()))
        .filter(meter_period::Column::FeatureId.eq(feature_id))
        .filter(meter_period::Column::UserId.eq(user_col(meter)))
        .filter(meter_period::Column::PeriodStart.lt(to))
        .filter(meter_period::Column::PeriodEnd.gt(from))
        .order_by_asc(meter_period::Column::PeriodStart)
        .limit(MAX_PERIODS)
        .all(conn)
        .await
        .map_err(db_err("read closed periods"))?
        .into_iter()
        .map(|row| from_json(&row.summary))
        .collect()
}

/// The window index of `occurred_at` among `bounds[lo..=hi + 1]`, as a balanced CASE.
fn window_of(bounds: &[DateTime<Utc>], lo: usize, hi: usize) -> Expr {
    if lo == hi {
        return Expr::val(i64::try_from(lo).unwrap_or(i64::MAX));
    }
    let mid = (lo + hi).div_ceil(2);
    Expr::case(
        Expr::col(Column::OccurredAt).lt(bounds[mid]),
        window_of(bounds, lo, mid - 1),
    )
    .finally(window_of(bounds, mid, hi))
    .into()
}

/// The aggregate of one window's events (columns of the inner query), as a BIGINT.
fn aggregate(aggregation: Aggregation) -> String {
    let refused = StoredOutcome::Refused.as_str();
    let value = match aggregation {
        // A refused consumption is stored with `counted` 0.
        Aggregation::Sum | Aggregation::Count => "SUM(counted)".to_owned(),
        Aggregation::Max => format!("MAX(CASE WHEN outcome <> '{refused}' THEN amount END)"),
        // Events stored without their value (before it was kept) count as they counted in
        // their period: 1 for a value new there.
        Aggregation::UniqueCount => format!(
            "COUNT(DISTINCT CASE WHEN outcome <> '{refused}' THEN unique_value END) \
             + SUM(CASE WHEN unique_value IS NULL THEN counted ELSE 0 END)"
        ),
    };
    // SUM of BIGINT is NUMERIC on PostgreSQL.
    format!("CAST(COALESCE({value}, 0) AS BIGINT)")
}

#[async_trait]
impl UsageHistoryStore for Store {
    async fn usage_per_window(
        &self,
        tenant_id: &str,
        feature_id: Uuid,
        user_id: Option<&str>,
        aggregation: Aggregation,
        bounds: &[DateTime<Utc>],
    ) -> Result<Vec<i64>> {
        let windows = bounds.len().saturating_sub(1);
        let mut values = vec![0; windows];
        if windows == 0 {
            return Ok(values);
        }
        let mut events = Query::select();
        events
            .expr_as(window_of(bounds, 0, windows - 1), Alias::new("w"))
            .columns([
                Column::Counted,
                Column::Amount,
                Column::Outcome,
                Column::UniqueValue,
            ])
            .from(Entity)
            .and_where(Expr::col(Column::TenantId).eq(tenant_id))
            .and_where(Expr::col(Column::FeatureId).eq(feature_id))
            .and_where(Expr::col(Column::OccurredAt).gte(bounds[0]))
            .and_where(Expr::col(Column::OccurredAt).lt(bounds[windows]));
        if let Some(user_id) = user_id {
            events.and_where(Expr::col(Column::UserId).eq(user_id));
        }
        let query = Query::select()
            .column(Alias::new("w"))
            .expr_as(Expr::cust(aggregate(aggregation)), Alias::new("v"))
            .from_subquery(events.take(), Alias::new("e"))
            .group_by_col(Alias::new("w"))
            .take();
        let rows = self
            .db
            .query_all(&query)
            .await
            .map_err(db_err("aggregate usage history"))?;
        for row in rows {
            let window: i64 = row.try_get("", "w").map_err(db_err("read usage history"))?;
            let value: i64 = row.try_get("", "v").map_err(db_err("read usage history"))?;
            if let Some(slot) = usize::try_from(window).ok().and_then(|w| values.get_mut(w)) {
                *slot = value;
            }
        }
        Ok(values)
    }

    async fn insert_period(
        &self,
        txn: &DatabaseTransaction,
        meter: &MeterKey,
        feature_id: Uuid,
        period: &PeriodSummary,
        now: DateTime<Utc>,
    ) -> Result<()> {
        meter_period::Entity::insert(meter_period::ActiveModel {
            tenant_id: Set(meter.tenant_id.clone()),
            feature_id: Set(feature_id),
            user_id: Set(user_col(meter)),
            period_start: Set(period.start),
            period_end: Set(period.end),
            manual: Set(period.manual),
            summary: Set(to_json(period)?),
            closed_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([
                meter_period::Column::TenantId,
                meter_period::Column::FeatureId,
                meter_period::Column::UserId,
                meter_period::Column::PeriodStart,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(db_err("record a closed period"))?;
        Ok(())
    }

    async fn closed_periods(
        &self,
        meter: &MeterKey,
        feature_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PeriodSummary>> {
        periods_overlapping(&self.db, meter, feature_id, from, to).await
    }

    async fn closed_periods_in(
        &self,
        txn: &DatabaseTransaction,
        meter: &MeterKey,
        feature_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PeriodSummary>> {
        periods_overlapping(txn, meter, feature_id, from, to).await
    }
}
