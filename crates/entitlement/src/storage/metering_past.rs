//! Meters at past instants: for each meter asked, its latest draw at or before the instant
//! (whose row keeps the meter it left), its credit grants and its manual resets — one
//! statement each for all the meters asked, so a check weighing many metered features costs
//! three statements, not three per feature.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Asterisk, Condition, Expr, ExprTrait, Func, Query, UnionType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::{credit_grant, meter_period, usage_event};
use super::metering::{DRAWING, draw_order, drawn_user, stored_draw, user_col};
use super::{Store, db_err, from_json};
use crate::app::ports::{MAX_HISTORY_METERS, MeterHistory, MeterHistoryStore};
use crate::domain::metering::{CreditGrant, MeterKey};
use crate::domain::{DomainError, Result};

/// Credit grants and manual resets read at once: an account's are few; this bounds a
/// pathological one.
const MAX_ROWS: u64 = 10_000;

/// The rows of `meter`'s latest draw at or before `at`: every event drawn at that instant
/// (a batch draws many at one instant), tagged `arm`. `kept`: draws that kept their meter, by
/// the meter drawn on; else events stored before draws were kept, by their own account.
fn latest_draw_rows(
    arm: usize,
    meter: &MeterKey,
    feature_id: Uuid,
    at: DateTime<Utc>,
    kept: bool,
) -> sea_orm::sea_query::SelectStatement {
    use usage_event::Column as C;
    let (who, time) = if kept {
        (C::DrawnOn, C::DrawnAt)
    } else {
        (C::TenantId, C::OccurredAt)
    };
    let of_meter = || {
        let mut all = Condition::all()
            .add(Expr::col(who).eq(meter.tenant_id.as_str()))
            .add(Expr::col(C::FeatureId).eq(feature_id))
            .add(Expr::col(C::Outcome).is_in(DRAWING));
        if kept {
            all = all
                .add(drawn_user(meter))
                .add(Expr::col(C::DrawnAt).lte(at));
        } else {
            // Users' meters came after draws were kept: none of theirs is unknown.
            all = all
                .add(Expr::val(meter.user_id.is_none()).eq(true))
                .add(Expr::col(C::DrawnAt).is_null())
                .add(Expr::col(C::OccurredAt).lte(at));
        }
        all
    };
    let latest = Query::select()
        .expr(Func::max(Expr::col(time)))
        .from(usage_event::Entity)
        .cond_where(of_meter())
        .take();
    Query::select()
        .column(Asterisk)
        .expr_as(
            Expr::val(i64::try_from(arm).unwrap_or(i64::MAX)),
            Alias::new("arm"),
        )
        .from(usage_event::Entity)
        .cond_where(of_meter())
        .and_where(Expr::col(time).in_subquery(latest))
        .take()
}

#[async_trait]
impl MeterHistoryStore for Store {
    async fn meter_histories(
        &self,
        meters: &[(MeterKey, Uuid, DateTime<Utc>)],
    ) -> Result<Vec<MeterHistory>> {
        let mut out = vec![MeterHistory::default(); meters.len()];
        if meters.is_empty() {
            return Ok(out);
        }
        if meters.len() > MAX_HISTORY_METERS {
            return Err(DomainError::Internal {
                message: format!("read more than {MAX_HISTORY_METERS} meters' history at once"),
                source: None,
            });
        }
        // 1. Each meter's latest draw, kept or (when none is kept) stored before they were:
        // two arms per meter in one UNION ALL (SQLite allows 500 arms; 2 × 200 stay below).
        let mut arms = meters.iter().enumerate().flat_map(|(i, (meter, f, at))| {
            [
                latest_draw_rows(2 * i, meter, *f, *at, true),
                latest_draw_rows(2 * i + 1, meter, *f, *at, false),
            ]
        });
        let mut union = arms.next().unwrap_or_else(Query::select);
        for arm in arms {
            union.union(UnionType::All, arm);
        }
        let rows = self
            .db
            .query_all(&union)
            .await
            .map_err(db_err("read meters' latest draws"))?;
        let mut kept = vec![Vec::new(); meters.len()];
        let mut old = vec![Vec::new(); meters.len()];
        for row in rows {
            let arm: i64 = row
                .try_get("", "arm")
                .map_err(db_err("read meters' latest draws"))?;
            let model = usage_event::Model::from_query_result(&row, "")
                .map_err(db_err("read meters' latest draws"))?;
            let Ok(arm) = usize::try_from(arm) else {
                continue;
            };
            let slot = if arm % 2 == 0 { &mut kept } else { &mut old };
            if let Some(draws) = slot.get_mut(arm / 2) {
                draws.push(stored_draw(model)?);
            }
        }
        for (i, (mut kept, mut old)) in kept.into_iter().zip(old).enumerate() {
            draw_order(&mut kept);
            draw_order(&mut old);
            out[i].latest = kept.pop().or_else(|| old.pop());
        }

        // 2. Their credit grants created by each meter's instant.
        let mut any = Condition::any();
        for (meter, f, at) in meters {
            any = any.add(
                credit_grant::Column::TenantId
                    .eq(meter.tenant_id.as_str())
                    .and(credit_grant::Column::FeatureId.eq(*f))
                    .and(credit_grant::Column::CreatedAt.lte(*at)),
            );
        }
        let credits: Vec<CreditGrant> = credit_grant::Entity::find()
            .filter(any)
            .order_by_asc(credit_grant::Column::CreatedAt)
            .order_by_asc(credit_grant::Column::Id)
            .limit(MAX_ROWS)
            .all(&self.db)
            .await
            .map_err(db_err("read meters' credit grants"))?
            .into_iter()
            .map(|r| from_json(&r.doc))
            .collect::<Result<_>>()?;
        for (i, (meter, f, at)) in meters.iter().enumerate() {
            out[i].credits = credits
                .iter()
                .filter(|c| {
                    c.tenant_id == meter.tenant_id
                        && c.user_id == meter.user_id
                        && c.feature_id == *f
                        && c.created_at <= *at
                })
                .cloned()
                .collect();
        }

        // 3. Their manual resets after the latest draw and by the instant (a reset at a
        // draw's instant came before it: a reset happens after the meter's latest draw).
        let mut any = Condition::any();
        for (i, (meter, f, at)) in meters.iter().enumerate() {
            let mut one = meter_period::Column::TenantId
                .eq(meter.tenant_id.as_str())
                .and(meter_period::Column::UserId.eq(user_col(meter)))
                .and(meter_period::Column::FeatureId.eq(*f))
                .and(meter_period::Column::Manual.eq(true))
                .and(meter_period::Column::PeriodEnd.lte(*at));
            if let Some(latest) = &out[i].latest {
                one = one.and(meter_period::Column::PeriodEnd.gt(latest.at));
            }
            any = any.add(one);
        }
        let resets = meter_period::Entity::find()
            .filter(any)
            .order_by_asc(meter_period::Column::PeriodEnd)
            .limit(MAX_ROWS)
            .all(&self.db)
            .await
            .map_err(db_err("read meters' manual resets"))?;
        for r in resets {
            for (i, (meter, f, at)) in meters.iter().enumerate() {
                let end = r.period_end;
                let after_latest = out[i].latest.as_ref().is_none_or(|d| d.at < end);
                let same = r.tenant_id == meter.tenant_id
                    && r.user_id == user_col(meter)
                    && r.feature_id == *f;
                if same && end <= *at && after_latest {
                    out[i].manual_resets.push(end);
                }
            }
        }
        Ok(out)
    }
}
