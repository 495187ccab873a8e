//! Usage thresholds already sent: one row per (account, feature, period, threshold), inserted
//! if absent by the write that reached it, in its transaction — the key that makes each
//! `tenantry.usage.threshold.v1` exactly once across replicas. A meter keeps only its latest
//! period's rows (a write that records one deletes the older periods').

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
    vec![format!(
        "CREATE TABLE ent_usage_threshold (
            tenant_id VARCHAR(255) NOT NULL,
            feature_id {uuid} NOT NULL,
            period_start {ts} NOT NULL,
            threshold INTEGER NOT NULL,
            fired_at {ts} NOT NULL,
            PRIMARY KEY (tenant_id, feature_id, period_start, threshold)
        )"
    )]
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
            .execute_unprepared("DROP TABLE IF EXISTS ent_usage_threshold")
            .await?;
        Ok(())
    }
}
