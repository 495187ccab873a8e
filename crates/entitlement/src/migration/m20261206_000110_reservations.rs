//! Reservations: amounts held on a meter until committed, released or expired. The hold itself
//! lives in the meter's state (so every check counts it); this row is the reservation's record,
//! found by its id or by the idempotency key it was asked for with.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn statements(backend: DbBackend) -> Vec<String> {
    let (ts, uuid) = if backend == DbBackend::Postgres {
        ("TIMESTAMPTZ", "UUID")
    } else {
        ("TEXT", "BLOB")
    };
    vec![
        // `doc`: the reservation; `answer`: what asking for it answered (a retry returns it).
        format!(
            "CREATE TABLE ent_reservation (
                id {uuid} NOT NULL PRIMARY KEY,
                tenant_id VARCHAR(255) NOT NULL,
                idempotency_key VARCHAR(255) NOT NULL,
                feature_id {uuid} NOT NULL,
                doc TEXT NOT NULL,
                answer TEXT NOT NULL,
                expires_at {ts} NOT NULL,
                created_at {ts} NOT NULL
            )"
        ),
        "CREATE UNIQUE INDEX ent_reservation_key ON ent_reservation (tenant_id, idempotency_key)"
            .into(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for statement in statements(manager.get_database_backend()) {
            conn.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS ent_reservation")
            .await?;
        Ok(())
    }
}
