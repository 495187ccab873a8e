//! Reservations' records.

use async_trait::async_trait;
use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, Set};
use uuid::Uuid;

use super::entities::reservation;
use super::{Store, db_err, from_json, to_json};
use crate::app::ports::ReservationStore;
use crate::domain::Result;
use crate::domain::metering::Reservation;

fn row(r: &Reservation, answer: &str) -> Result<reservation::ActiveModel> {
    Ok(reservation::ActiveModel {
        id: Set(r.id),
        tenant_id: Set(r.tenant_id.clone()),
        idempotency_key: Set(r.key.clone()),
        feature_id: Set(r.feature_id),
        doc: Set(to_json(r)?),
        answer: Set(answer.to_owned()),
        expires_at: Set(r.expires_at),
        created_at: Set(r.created_at),
    })
}

#[async_trait]
impl ReservationStore for Store {
    async fn insert_reservation(
        &self,
        txn: &DatabaseTransaction,
        reservation: &Reservation,
        answer: &str,
    ) -> Result<bool> {
        let inserted = reservation::Entity::insert(row(reservation, answer)?)
            .on_conflict(
                OnConflict::columns([
                    reservation::Column::TenantId,
                    reservation::Column::IdempotencyKey,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(db_err("store a reservation"))?;
        Ok(inserted > 0)
    }

    async fn reservation_by_key(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<(Reservation, String)>> {
        let found = reservation::Entity::find()
            .filter(reservation::Column::TenantId.eq(tenant_id))
            .filter(reservation::Column::IdempotencyKey.eq(key))
            .one(txn)
            .await
            .map_err(db_err("read a reservation"))?;
        found
            .map(|r| Ok((from_json(&r.doc)?, r.answer)))
            .transpose()
    }

    async fn reservation_in(
        &self,
        txn: &DatabaseTransaction,
        id: Uuid,
    ) -> Result<Option<Reservation>> {
        let mut query = reservation::Entity::find_by_id(id);
        if self.is_postgres() {
            query = query.lock(LockType::Update);
        }
        let found = query.one(txn).await.map_err(db_err("lock a reservation"))?;
        found.map(|r| from_json(&r.doc)).transpose()
    }

    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>> {
        let found = reservation::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(db_err("read a reservation"))?;
        found.map(|r| from_json(&r.doc)).transpose()
    }

    async fn update_reservation(
        &self,
        txn: &DatabaseTransaction,
        reservation: &Reservation,
    ) -> Result<()> {
        reservation::Entity::update(reservation::ActiveModel {
            id: Set(reservation.id),
            doc: Set(to_json(reservation)?),
            ..Default::default()
        })
        .exec(txn)
        .await
        .map_err(db_err("update a reservation"))?;
        Ok(())
    }
}
