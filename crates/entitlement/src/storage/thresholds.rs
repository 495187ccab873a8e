//! Usage thresholds already sent, per meter and period.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::entities::usage_threshold;
use super::metering::user_col;
use super::{Store, db_err};
use crate::app::ports::ThresholdStore;
use crate::domain::Result;
use crate::domain::metering::MeterKey;

#[async_trait]
impl ThresholdStore for Store {
    async fn record_thresholds(
        &self,
        txn: &DatabaseTransaction,
        meter: &MeterKey,
        feature_id: Uuid,
        period_start: DateTime<Utc>,
        thresholds: &[u16],
        now: DateTime<Utc>,
    ) -> Result<Vec<u16>> {
        if thresholds.is_empty() {
            return Ok(Vec::new());
        }
        let rows = thresholds.iter().map(|&t| usage_threshold::ActiveModel {
            tenant_id: Set(meter.tenant_id.clone()),
            feature_id: Set(feature_id),
            user_id: Set(user_col(meter)),
            period_start: Set(period_start),
            threshold: Set(i32::from(t)),
            fired_at: Set(now),
        });
        // One statement: the rows already there stay, the new ones come back.
        let inserted = usage_threshold::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    usage_threshold::Column::TenantId,
                    usage_threshold::Column::FeatureId,
                    usage_threshold::Column::UserId,
                    usage_threshold::Column::PeriodStart,
                    usage_threshold::Column::Threshold,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_with_returning(txn)
            .await
            .map_err(db_err("record usage thresholds"))?;
        if inserted.is_empty() {
            return Ok(Vec::new());
        }
        // A period's first crossing: the meter's older periods can never be reached again
        // (a closed period's usage does not draw), so their rows go.
        usage_threshold::Entity::delete_many()
            .filter(usage_threshold::Column::TenantId.eq(meter.tenant_id.as_str()))
            .filter(usage_threshold::Column::FeatureId.eq(feature_id))
            .filter(usage_threshold::Column::UserId.eq(user_col(meter)))
            .filter(usage_threshold::Column::PeriodStart.lt(period_start))
            .exec(txn)
            .await
            .map_err(db_err("forget older usage thresholds"))?;
        let mut fired: Vec<u16> = inserted
            .into_iter()
            .filter_map(|r| u16::try_from(r.threshold).ok())
            .collect();
        fired.sort_unstable();
        Ok(fired)
    }
}
