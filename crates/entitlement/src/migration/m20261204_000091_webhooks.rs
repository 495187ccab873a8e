//! Webhooks: endpoints, the outbox of events committed with the writes that caused them, the
//! deliveries (one per event and endpoint, with its attempt state) and the lock row that lets
//! one replica at a time move the outbox into deliveries.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn statements(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    let (ts, uuid, big, serial) = if pg {
        ("TIMESTAMPTZ", "UUID", "BIGINT", "BIGSERIAL PRIMARY KEY")
    } else {
        (
            "TEXT",
            "BLOB",
            "INTEGER",
            "INTEGER PRIMARY KEY AUTOINCREMENT",
        )
    };
    vec![
        format!(
            "CREATE TABLE ent_webhook_endpoint (
                id {uuid} NOT NULL PRIMARY KEY,
                url TEXT NOT NULL,
                event_types TEXT NOT NULL,
                account_ids TEXT NOT NULL,
                enabled BOOLEAN NOT NULL,
                description TEXT NOT NULL,
                secret TEXT NOT NULL,
                disabled_reason VARCHAR(32),
                failing_since {ts},
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL
            )"
        ),
        // One row per committing transaction that produced events (a JSON array of them).
        // The fan-out deletes what it moved, so no cursor can skip a row that commits late.
        format!(
            "CREATE TABLE ent_webhook_outbox (
                position {serial},
                events TEXT NOT NULL,
                created_at {ts} NOT NULL
            )"
        ),
        "CREATE TABLE ent_webhook_fanout (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1))".into(),
        "INSERT INTO ent_webhook_fanout (id) VALUES (1)".into(),
        format!(
            "CREATE TABLE ent_webhook_delivery (
                id {uuid} NOT NULL PRIMARY KEY,
                endpoint_id {uuid} NOT NULL,
                event_id VARCHAR(64) NOT NULL,
                event_type VARCHAR(64) NOT NULL,
                subject TEXT,
                body TEXT NOT NULL,
                status VARCHAR(16) NOT NULL,
                attempts INTEGER NOT NULL,
                next_attempt_at {ts},
                last_attempt_at {ts},
                last_status_code INTEGER,
                last_latency_ms {big},
                last_response_excerpt TEXT,
                last_error TEXT,
                created_at {ts} NOT NULL
            )"
        ),
        "CREATE INDEX ent_webhook_delivery_due ON ent_webhook_delivery (status, next_attempt_at)"
            .into(),
        "CREATE INDEX ent_webhook_delivery_endpoint ON ent_webhook_delivery (endpoint_id, id)"
            .into(),
        // Retention deletes finished deliveries by age.
        "CREATE INDEX ent_webhook_delivery_created ON ent_webhook_delivery (created_at)".into(),
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
        for table in [
            "ent_webhook_delivery",
            "ent_webhook_fanout",
            "ent_webhook_outbox",
            "ent_webhook_endpoint",
        ] {
            conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
