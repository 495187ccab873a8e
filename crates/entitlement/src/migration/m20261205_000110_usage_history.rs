//! Usage history: each usage event keeps the value a UNIQUE_COUNT feature counts, so a window's
//! distinct count is read from the events (`ent_usage_unique` only says whether a value is new
//! in its period). Events are found by `ent_usage_event_meter` (account, feature, time).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE ent_usage_event ADD COLUMN unique_value VARCHAR(255)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE ent_usage_event DROP COLUMN unique_value")
            .await?;
        Ok(())
    }
}
