//! Idempotency keys in their callers' scopes, as the tenant service keeps them: the primary
//! key becomes (scope, key), so one caller's key neither replays nor blocks another's, and a
//! key is at most 255 characters (the rule both services share). Keys stored before are kept
//! in the empty scope (internal callers'); a longer one could never be sent again and is
//! dropped.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Rebuilds `ent_idempotency`, keyed by (scope, key) when `scoped`, else by key alone, from
/// `copy` (a SELECT of the new table's columns from the old one, with a WHERE: SQLite needs
/// one before ON CONFLICT). SQLite cannot change a primary key in place; on PostgreSQL the
/// constraint keeps its name (`ent_idempotency_pkey`, which storage maps to a taken key).
fn rebuild(backend: DbBackend, scoped: bool, copy: &str) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    let ts = if pg { "TIMESTAMPTZ" } else { "TEXT" };
    let (scope, key_len, primary, columns) = if scoped {
        (
            "scope TEXT NOT NULL,",
            255,
            "scope, key",
            "scope, key, operation, fingerprint, response, created_at",
        )
    } else {
        (
            "",
            256,
            "key",
            "key, operation, fingerprint, response, created_at",
        )
    };
    let mut statements = vec![
        format!(
            "CREATE TABLE ent_idempotency_next (
                {scope}
                key VARCHAR({key_len}) NOT NULL,
                operation VARCHAR(32) NOT NULL,
                fingerprint VARCHAR(64) NOT NULL,
                response TEXT NOT NULL,
                created_at {ts} NOT NULL,
                CONSTRAINT ent_idempotency_next_pkey PRIMARY KEY ({primary})
            )"
        ),
        // Down: a key several scopes hold goes back to one of them only.
        format!("INSERT INTO ent_idempotency_next ({columns}) {copy} ON CONFLICT DO NOTHING"),
        "DROP TABLE ent_idempotency".into(),
        "ALTER TABLE ent_idempotency_next RENAME TO ent_idempotency".into(),
    ];
    if pg {
        statements.push(
            "ALTER TABLE ent_idempotency RENAME CONSTRAINT ent_idempotency_next_pkey \
             TO ent_idempotency_pkey"
                .into(),
        );
    }
    statements.push("CREATE INDEX ent_idempotency_created ON ent_idempotency (created_at)".into());
    statements
}

async fn run(manager: &SchemaManager<'_>, statements: Vec<String>) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    for statement in statements {
        conn.execute_unprepared(&statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on every backend: on SQLite the rebuild then runs on one connection
    /// (another pooled connection, its schema not yet reloaded, can still see the dropped
    /// table's index when asked to create it again).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = rebuild(
            manager.get_database_backend(),
            true,
            "SELECT '', key, operation, fingerprint, response, created_at \
             FROM ent_idempotency WHERE length(key) <= 255",
        );
        run(manager, statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = rebuild(
            manager.get_database_backend(),
            false,
            "SELECT key, operation, fingerprint, response, created_at FROM ent_idempotency \
             WHERE true",
        );
        run(manager, statements).await
    }
}
