//! The change feed carries a kind that is no account's change: `migration_finished`, recorded
//! when a bulk import ends. Its row has no account, so `change_events.tenant_id` becomes
//! nullable — NULL only for that kind, which a CHECK keeps so. PostgreSQL drops the NOT NULL
//! in place; SQLite cannot alter a column, so the table is rebuilt (same columns, rows copied).

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const ONLY_MIGRATIONS_LACK_AN_ACCOUNT: &str =
    "CHECK (tenant_id IS NOT NULL OR change_type = 'migration_finished')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = if manager.get_database_backend() == DbBackend::Postgres {
            vec![
                "ALTER TABLE change_events ALTER COLUMN tenant_id DROP NOT NULL".to_owned(),
                format!(
                    "ALTER TABLE change_events ADD CONSTRAINT change_events_account \
                     {ONLY_MIGRATIONS_LACK_AN_ACCOUNT}"
                ),
            ]
        } else {
            rebuild_sqlite("tenant_id VARCHAR(255)", ONLY_MIGRATIONS_LACK_AN_ACCOUNT)
        };
        super::run_all(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Rows without an account cannot stay under NOT NULL.
        let mut statements =
            vec!["DELETE FROM change_events WHERE change_type = 'migration_finished'".to_owned()];
        if manager.get_database_backend() == DbBackend::Postgres {
            statements.extend([
                "ALTER TABLE change_events DROP CONSTRAINT IF EXISTS change_events_account"
                    .to_owned(),
                "ALTER TABLE change_events ALTER COLUMN tenant_id SET NOT NULL".to_owned(),
            ]);
        } else {
            statements.extend(rebuild_sqlite("tenant_id VARCHAR(255) NOT NULL", ""));
        }
        super::run_all(manager, &statements).await
    }
}

/// SQLite's way to change a column: a new table, the rows copied, the old one replaced.
fn rebuild_sqlite(tenant_column: &str, check: &str) -> Vec<String> {
    let check = if check.is_empty() {
        String::new()
    } else {
        format!(",\n                {check}")
    };
    vec![
        format!(
            "CREATE TABLE change_events_rebuilt (
                sequence INTEGER NOT NULL PRIMARY KEY,
                change_type VARCHAR(32) NOT NULL,
                {tenant_column},
                occurred_at TEXT NOT NULL,
                payload TEXT NOT NULL{check}
            )"
        ),
        "INSERT INTO change_events_rebuilt (sequence, change_type, tenant_id, occurred_at, payload) \
         SELECT sequence, change_type, tenant_id, occurred_at, payload FROM change_events"
            .to_owned(),
        "DROP TABLE change_events".to_owned(),
        "ALTER TABLE change_events_rebuilt RENAME TO change_events".to_owned(),
    ]
}
