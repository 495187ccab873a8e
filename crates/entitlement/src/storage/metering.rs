//! Meters, usage events and credit grants.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::entities::{credit_grant, meter, usage_event, usage_unique};
use super::{Store, db_err, from_json, to_json};
use crate::app::ports::MeterStore;
use crate::domain::metering::{CreditGrant, MeterState, StoredOutcome, StoredUsage};
use crate::domain::{DomainError, Result};

fn usage_row(usage: &StoredUsage) -> usage_event::ActiveModel {
    usage_event::ActiveModel {
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
    }
}

/// A meter row created by a lock before its first write.
const UNWRITTEN: &str = "null";

#[async_trait]
impl MeterStore for Store {
    async fn lock_meter(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        feature_id: Uuid,
    ) -> Result<Option<MeterState>> {
        // A row to lock even before the first write: concurrent first writers meet on it.
        meter::Entity::insert(meter::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            feature_id: Set(feature_id),
            state: Set(UNWRITTEN.to_owned()),
            updated_at: Set(DateTime::UNIX_EPOCH),
        })
        .on_conflict(
            OnConflict::columns([meter::Column::TenantId, meter::Column::FeatureId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(db_err("create a meter"))?;
        let mut query = meter::Entity::find_by_id((tenant_id.to_owned(), feature_id));
        if self.is_postgres() {
            query = query.lock(LockType::Update);
        }
        let row = query
            .one(txn)
            .await
            .map_err(db_err("lock a meter"))?
            .ok_or_else(|| DomainError::Internal {
                message: "a meter row vanished under its lock".into(),
                source: None,
            })?;
        if row.state == UNWRITTEN {
            return Ok(None);
        }
        from_json(&row.state).map(Some)
    }

    async fn put_meter(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        feature_id: Uuid,
        state: &MeterState,
        now: DateTime<Utc>,
    ) -> Result<()> {
        meter::Entity::update(meter::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            feature_id: Set(feature_id),
            state: Set(to_json(state)?),
            updated_at: Set(now),
        })
        .exec(txn)
        .await
        .map_err(db_err("write a meter"))?;
        Ok(())
    }

    async fn insert_usage(&self, txn: &DatabaseTransaction, usage: &StoredUsage) -> Result<bool> {
        let inserted = usage_event::Entity::insert(usage_row(usage))
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

    async fn insert_usages(
        &self,
        txn: &DatabaseTransaction,
        usages: &[StoredUsage],
    ) -> Result<u64> {
        // 11 parameters a row: a 1,000-event batch stays under both databases' limits.
        usage_event::Entity::insert_many(usages.iter().map(usage_row))
            .on_conflict(
                OnConflict::columns([usage_event::Column::TenantId, usage_event::Column::EventId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(db_err("record usage events"))
    }

    async fn stored_usage_ids(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        event_ids: &[&str],
    ) -> Result<HashSet<String>> {
        if event_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<String> = usage_event::Entity::find()
            .select_only()
            .column(usage_event::Column::EventId)
            .filter(usage_event::Column::TenantId.eq(tenant_id))
            .filter(usage_event::Column::EventId.is_in(event_ids.iter().copied()))
            .into_tuple()
            .all(txn)
            .await
            .map_err(db_err("read usage events"))?;
        Ok(ids.into_iter().collect())
    }

    async fn usage_event(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        event_id: &str,
    ) -> Result<Option<StoredUsage>> {
        let row = usage_event::Entity::find_by_id((tenant_id.to_owned(), event_id.to_owned()))
            .one(txn)
            .await
            .map_err(db_err("read a usage event"))?;
        row.map(|r| {
            let outcome =
                StoredOutcome::parse(&r.outcome).ok_or_else(|| DomainError::Internal {
                    message: format!("unknown usage outcome {:?}", r.outcome),
                    source: None,
                })?;
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
            })
        })
        .transpose()
    }

    async fn insert_unique(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        feature_id: Uuid,
        period_start: DateTime<Utc>,
        value: &str,
    ) -> Result<bool> {
        let inserted = usage_unique::Entity::insert(usage_unique::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            feature_id: Set(feature_id),
            period_start: Set(period_start),
            value: Set(value.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([
                usage_unique::Column::TenantId,
                usage_unique::Column::FeatureId,
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
