//! Metering: each account's meter of each metered feature (the open period, which checks read
//! through the index), every usage event under its idempotency key, the distinct values
//! UNIQUE_COUNT features have counted per period, and credit grants.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn statements(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    let (ts, uuid, big) = if pg {
        ("TIMESTAMPTZ", "UUID", "BIGINT")
    } else {
        ("TEXT", "BLOB", "INTEGER")
    };
    vec![
        // Locked by every write that draws on it (`FOR UPDATE` on PostgreSQL), so parallel
        // consumers of one meter serialize on its row and never overdraw it.
        format!(
            "CREATE TABLE ent_meter (
                tenant_id VARCHAR(255) NOT NULL,
                feature_id {uuid} NOT NULL,
                state TEXT NOT NULL,
                updated_at {ts} NOT NULL,
                PRIMARY KEY (tenant_id, feature_id)
            )"
        ),
        // The key is the event's idempotency key, per account: a repeat is a conflict.
        // `outcome`: recorded, late (a closed period's) or refused (a consumption that was not
        // allowed, kept so its retry answers the same).
        format!(
            "CREATE TABLE ent_usage_event (
                tenant_id VARCHAR(255) NOT NULL,
                event_id VARCHAR(255) NOT NULL,
                feature_id {uuid} NOT NULL,
                user_id VARCHAR(255),
                amount {big} NOT NULL,
                counted {big} NOT NULL,
                occurred_at {ts} NOT NULL,
                received_at {ts} NOT NULL,
                outcome VARCHAR(16) NOT NULL,
                answer TEXT,
                PRIMARY KEY (tenant_id, event_id)
            )"
        ),
        "CREATE INDEX ent_usage_event_meter ON ent_usage_event (tenant_id, feature_id, occurred_at)"
            .into(),
        format!(
            "CREATE TABLE ent_usage_unique (
                tenant_id VARCHAR(255) NOT NULL,
                feature_id {uuid} NOT NULL,
                period_start {ts} NOT NULL,
                value VARCHAR(255) NOT NULL,
                PRIMARY KEY (tenant_id, feature_id, period_start, value)
            )"
        ),
        format!(
            "CREATE TABLE ent_credit_grant (
                id {uuid} NOT NULL PRIMARY KEY,
                tenant_id VARCHAR(255) NOT NULL,
                feature_id {uuid} NOT NULL,
                doc TEXT NOT NULL,
                created_at {ts} NOT NULL,
                voided_at {ts}
            )"
        ),
        "CREATE INDEX ent_credit_grant_tenant ON ent_credit_grant (tenant_id, created_at)".into(),
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
        let conn = manager.get_connection();
        for statement in [
            "DROP TABLE IF EXISTS ent_credit_grant",
            "DROP TABLE IF EXISTS ent_usage_unique",
            "DROP TABLE IF EXISTS ent_usage_event",
            "DROP TABLE IF EXISTS ent_meter",
        ] {
            conn.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
