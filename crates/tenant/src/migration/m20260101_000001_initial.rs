//! Accounts, memberships, the change-feed outbox and the bulk-import jobs.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Column types that differ between the engines.
struct Types {
    ts: &'static str,
    boolean: &'static str,
    big: &'static str,
}

fn statements(backend: DbBackend) -> Vec<String> {
    let t = if backend == DbBackend::Postgres {
        Types {
            ts: "TIMESTAMPTZ",
            boolean: "BOOLEAN",
            big: "BIGINT",
        }
    } else {
        // SQLite: timestamps are RFC 3339 text in UTC (so they sort as text), booleans integers.
        Types {
            ts: "TEXT",
            boolean: "BOOLEAN",
            big: "INTEGER",
        }
    };
    let Types { ts, boolean, big } = t;
    vec![
        // An account is soft-deleted (`deleted_at`), so its ID can be reactivated later. A deleted
        // account has no parent; live accounts may only point at live parents (checked under the
        // hierarchy lock, since a foreign key cannot see `deleted_at`).
        format!(
            "CREATE TABLE accounts (
                tenant_id VARCHAR(255) NOT NULL PRIMARY KEY,
                name TEXT NOT NULL,
                status TEXT,
                website TEXT,
                application_url TEXT,
                logo TEXT,
                logo_url TEXT,
                address TEXT,
                timezone TEXT,
                currency TEXT,
                creator_name TEXT,
                creator_email TEXT,
                date_format TEXT,
                time_format TEXT,
                locale TEXT,
                is_reseller {boolean} NOT NULL DEFAULT FALSE,
                parent_tenant_id VARCHAR(255) REFERENCES accounts (tenant_id),
                alias VARCHAR(255),
                metadata TEXT NOT NULL DEFAULT '{{}}',
                sub_account_access_type VARCHAR(16) NOT NULL DEFAULT 'defaultOff'
                    CHECK (sub_account_access_type IN ('defaultOff', 'defaultOn', 'alwaysOn')),
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL,
                deleted_at {ts},
                CONSTRAINT accounts_not_own_parent CHECK (parent_tenant_id IS NULL OR parent_tenant_id <> tenant_id),
                CONSTRAINT accounts_deleted_detached CHECK (deleted_at IS NULL OR parent_tenant_id IS NULL)
            )"
        ),
        // One index per list sort, each ending in tenant_id (the tie-break), over live rows only.
        "CREATE INDEX accounts_live_created_at ON accounts (created_at, tenant_id) WHERE deleted_at IS NULL".into(),
        "CREATE INDEX accounts_live_name ON accounts (name, tenant_id) WHERE deleted_at IS NULL".into(),
        "CREATE INDEX accounts_live_tenant_id ON accounts (tenant_id) WHERE deleted_at IS NULL".into(),
        // Aliases are unique among live accounts only: a deleted account frees its alias.
        "CREATE UNIQUE INDEX accounts_live_alias ON accounts (alias) WHERE deleted_at IS NULL AND alias IS NOT NULL".into(),
        "CREATE INDEX accounts_parent ON accounts (parent_tenant_id) WHERE parent_tenant_id IS NOT NULL".into(),
        format!(
            "CREATE TABLE memberships (
                tenant_id VARCHAR(255) NOT NULL REFERENCES accounts (tenant_id),
                user_id VARCHAR(255) NOT NULL,
                created_at {ts} NOT NULL,
                PRIMARY KEY (tenant_id, user_id)
            )"
        ),
        "CREATE INDEX memberships_user ON memberships (user_id, tenant_id)".into(),
        // The outbox's sequence comes from this single row, updated in the writing transaction:
        // its row lock orders writers, so sequences become visible in increasing order (a
        // BIGSERIAL can commit out of order and make a follower skip a row).
        format!(
            "CREATE TABLE change_feed_head (
                id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
                last_sequence {big} NOT NULL
            )"
        ),
        "INSERT INTO change_feed_head (id, last_sequence) VALUES (1, 0)".into(),
        format!(
            "CREATE TABLE change_events (
                sequence {big} NOT NULL PRIMARY KEY,
                change_type VARCHAR(32) NOT NULL,
                tenant_id VARCHAR(255) NOT NULL,
                occurred_at {ts} NOT NULL,
                payload TEXT NOT NULL
            )"
        ),
        format!(
            "CREATE TABLE migration_jobs (
                migration_id VARCHAR(64) NOT NULL PRIMARY KEY,
                state VARCHAR(16) NOT NULL
                    CHECK (state IN ('receiving', 'pending', 'running', 'completed', 'failed')),
                total_items {big} NOT NULL DEFAULT 0,
                processed_items {big} NOT NULL DEFAULT 0,
                created_items {big} NOT NULL DEFAULT 0,
                skipped_items {big} NOT NULL DEFAULT 0,
                failed_items {big} NOT NULL DEFAULT 0,
                pass_marker {big} NOT NULL DEFAULT 0,
                failure_message TEXT,
                created_at {ts} NOT NULL,
                started_at {ts},
                finished_at {ts}
            )"
        ),
        "CREATE INDEX migration_jobs_state ON migration_jobs (state, created_at)".into(),
        format!(
            "CREATE TABLE migration_items (
                migration_id VARCHAR(64) NOT NULL REFERENCES migration_jobs (migration_id) ON DELETE CASCADE,
                item_index {big} NOT NULL,
                tenant_id VARCHAR(255),
                state VARCHAR(16) NOT NULL CHECK (state IN ('pending', 'deferred', 'done')),
                payload TEXT NOT NULL,
                PRIMARY KEY (migration_id, item_index)
            )"
        ),
        "CREATE INDEX migration_items_state ON migration_items (migration_id, state, item_index)".into(),
        "CREATE INDEX migration_items_tenant ON migration_items (migration_id, tenant_id)".into(),
        format!(
            "CREATE TABLE migration_errors (
                migration_id VARCHAR(64) NOT NULL REFERENCES migration_jobs (migration_id) ON DELETE CASCADE,
                item_index {big} NOT NULL,
                tenant_id VARCHAR(255) NOT NULL,
                field VARCHAR(64) NOT NULL,
                reason VARCHAR(64) NOT NULL,
                message TEXT NOT NULL,
                PRIMARY KEY (migration_id, item_index)
            )"
        ),
    ]
}

/// `_filter` is a case-insensitive substring match, which no B-tree can serve: on PostgreSQL,
/// trigram GIN indexes on the lowered columns serve `lower(col) LIKE '%…%'`. `pg_trgm` needs
/// CREATE privilege on the database; without it the filter still works, by a scan. The operator
/// class is schema-qualified because the extension may already live in another schema.
const PG_TRIGRAM: &str = r"
DO $$
DECLARE ext_schema text;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pg_trgm unavailable, account filter will scan: %', SQLERRM;
    END;
    SELECT n.nspname INTO ext_schema
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    IF ext_schema IS NOT NULL THEN
        EXECUTE format('CREATE INDEX accounts_live_name_trgm ON accounts USING gin (lower(name) %I.gin_trgm_ops) WHERE deleted_at IS NULL', ext_schema);
        EXECUTE format('CREATE INDEX accounts_live_tenant_id_trgm ON accounts USING gin (lower(tenant_id) %I.gin_trgm_ops) WHERE deleted_at IS NULL', ext_schema);
    END IF;
END
$$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let mut all = statements(backend);
        if backend == DbBackend::Postgres {
            all.push(PG_TRIGRAM.to_owned());
        }
        super::run_all(manager, &all).await
    }
}
