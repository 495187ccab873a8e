//! The row a storage probe rewrites (`tenantry_common::db::probe_write`): after a write was
//! refused for a full or failed disk, the service reports NOT_SERVING until a probe commits.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let blob = if manager.get_database_backend() == DbBackend::Postgres {
            "BYTEA"
        } else {
            "BLOB"
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE TABLE storage_probe (id INTEGER PRIMARY KEY, filler {blob} NOT NULL)"
            ))
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE storage_probe")
            .await
            .map(|_| ())
    }
}
