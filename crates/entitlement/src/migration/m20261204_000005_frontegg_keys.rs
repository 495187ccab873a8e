//! Frontegg-style keys: feature and plan keys of up to 128 characters (were 64). Every stored
//! key stays valid. PostgreSQL widens the columns; SQLite does not enforce a `VARCHAR` length,
//! so there is nothing to change there.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

async fn key_width(manager: &SchemaManager<'_>, width: u32) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for table in ["ent_feature", "ent_plan"] {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "ALTER TABLE {table} ALTER COLUMN key TYPE VARCHAR({width})"
            ))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        key_width(manager, 128).await
    }

    /// Fails (and changes nothing) while a key longer than 64 characters is stored.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        key_width(manager, 64).await
    }
}
