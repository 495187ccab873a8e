//! Closed usage periods: one row per period of an account's meter that closed (by a manual
//! reset; later also by the schedule), with its summary — usage, overage, the allowance issued,
//! what remained of each credit and what rolled over. A reset cuts the schedule's period, so
//! history and late usage find a period's true bounds here.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let (ts, uuid) = if manager.get_database_backend() == DbBackend::Postgres {
            ("TIMESTAMPTZ", "UUID")
        } else {
            ("TEXT", "BLOB")
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE TABLE ent_meter_period (
                    tenant_id VARCHAR(255) NOT NULL,
                    feature_id {uuid} NOT NULL,
                    period_start {ts} NOT NULL,
                    period_end {ts} NOT NULL,
                    manual BOOLEAN NOT NULL,
                    summary TEXT NOT NULL,
                    closed_at {ts} NOT NULL,
                    PRIMARY KEY (tenant_id, feature_id, period_start)
                )"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS ent_meter_period")
            .await?;
        Ok(())
    }
}
