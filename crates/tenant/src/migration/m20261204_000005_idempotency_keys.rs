//! Idempotency keys of the creates: the first answer to a key, stored in the transaction of
//! its write, replayed to retries with the same request. Keys are scoped to the caller (the
//! principal the gateway names), so one caller's key neither reads nor blocks another's.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite: timestamps are RFC 3339 text in UTC, as in the other tables.
        let ts = if manager.get_database_backend() == DbBackend::Postgres {
            "TIMESTAMPTZ"
        } else {
            "TEXT"
        };
        super::run_all(
            manager,
            &[
                format!(
                    "CREATE TABLE idempotency_keys (
                        scope TEXT NOT NULL,
                        key VARCHAR(255) NOT NULL,
                        operation VARCHAR(32) NOT NULL,
                        fingerprint VARCHAR(64) NOT NULL,
                        response TEXT NOT NULL,
                        created_at {ts} NOT NULL,
                        PRIMARY KEY (scope, key)
                    )"
                ),
                "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)".into(),
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_all(manager, &["DROP TABLE IF EXISTS idempotency_keys".into()]).await
    }
}
