//! Catalog (features, plans, flags, routes), grants, the local hierarchy copy, the change log
//! that replicas follow, the tenant-feed cursor and idempotency keys.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn statements(backend: DbBackend) -> Vec<String> {
    let pg = backend == DbBackend::Postgres;
    // SQLite: timestamps are text, UUIDs 16-byte blobs, integers 64-bit.
    let (ts, uuid, big) = if pg {
        ("TIMESTAMPTZ", "UUID", "BIGINT")
    } else {
        ("TEXT", "BLOB", "INTEGER")
    };
    vec![
        // The revision counter: one row, bumped by every writing transaction. Its row lock
        // orders writers, so revisions commit in increasing order and a follower reading the
        // log never skips a revision that commits late (a sequence could).
        format!(
            "CREATE TABLE ent_revision (
                id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
                value {big} NOT NULL
            )"
        ),
        "INSERT INTO ent_revision (id, value) VALUES (1, 0)".into(),
        // Committed index changes by revision (JSON array of IndexChange): other replicas
        // replay it to stay current without reloading.
        format!(
            "CREATE TABLE ent_change_log (
                revision {big} NOT NULL PRIMARY KEY,
                changes TEXT NOT NULL,
                created_at {ts} NOT NULL
            )"
        ),
        "CREATE INDEX ent_change_log_created_at ON ent_change_log (created_at)".into(),
        // Catalog rows keep the domain object as JSON (`doc`); the columns are what constraints
        // and lookups need. The catalog is read whole into the index, never queried inside.
        format!(
            "CREATE TABLE ent_feature (
                id {uuid} NOT NULL PRIMARY KEY,
                key VARCHAR(64) NOT NULL,
                doc TEXT NOT NULL,
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL,
                CONSTRAINT ent_feature_key_unique UNIQUE (key)
            )"
        ),
        // Plans are soft-deleted: grants keep pointing at them for history. Keys are unique
        // among live plans.
        format!(
            "CREATE TABLE ent_plan (
                id {uuid} NOT NULL PRIMARY KEY,
                key VARCHAR(64) NOT NULL,
                doc TEXT NOT NULL,
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL,
                deleted_at {ts}
            )"
        ),
        "CREATE UNIQUE INDEX ent_plan_live_key ON ent_plan (key) WHERE deleted_at IS NULL".into(),
        // Which plan includes which feature: a foreign key makes "feature in use" hold under
        // concurrent writers, not only in code.
        format!(
            "CREATE TABLE ent_plan_feature (
                plan_id {uuid} NOT NULL REFERENCES ent_plan (id) ON DELETE CASCADE,
                feature_id {uuid} NOT NULL REFERENCES ent_feature (id) ON DELETE RESTRICT,
                PRIMARY KEY (plan_id, feature_id)
            )"
        ),
        "CREATE INDEX ent_plan_feature_feature ON ent_plan_feature (feature_id)".into(),
        format!(
            "CREATE TABLE ent_feature_flag (
                id {uuid} NOT NULL PRIMARY KEY,
                feature_id {uuid} NOT NULL REFERENCES ent_feature (id) ON DELETE CASCADE,
                doc TEXT NOT NULL,
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL,
                CONSTRAINT ent_feature_flag_feature_unique UNIQUE (feature_id)
            )"
        ),
        format!(
            "CREATE TABLE ent_route (
                id {uuid} NOT NULL PRIMARY KEY,
                method VARCHAR(16) NOT NULL,
                path TEXT NOT NULL,
                doc TEXT NOT NULL,
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL,
                CONSTRAINT ent_route_method_path_unique UNIQUE (method, path)
            )"
        ),
        // The local copy of the tenant hierarchy, maintained from the tenant change feed.
        format!(
            "CREATE TABLE ent_account (
                tenant_id VARCHAR(255) NOT NULL PRIMARY KEY,
                parent_id VARCHAR(255),
                deleted BOOLEAN NOT NULL DEFAULT FALSE,
                updated_at {ts} NOT NULL
            )"
        ),
        format!(
            "CREATE TABLE ent_grant (
                id {uuid} NOT NULL PRIMARY KEY,
                plan_id {uuid} NOT NULL REFERENCES ent_plan (id) ON DELETE RESTRICT,
                tenant_id VARCHAR(255) NOT NULL,
                user_id VARCHAR(256),
                starts_at {ts} NOT NULL,
                expires_at {ts},
                revoked_at {ts},
                revoked_by VARCHAR(256),
                revoke_reason TEXT,
                source VARCHAR(64) NOT NULL,
                external_id VARCHAR(256),
                granted_by VARCHAR(256),
                metadata TEXT NOT NULL,
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL,
                CONSTRAINT ent_grant_expiry_after_start CHECK (expires_at IS NULL OR expires_at > starts_at)
            )"
        ),
        // NULL external IDs are distinct in both engines, so only given IDs must be unique.
        "CREATE UNIQUE INDEX ent_grant_external_id ON ent_grant (tenant_id, external_id)".into(),
        "CREATE INDEX ent_grant_tenant_user ON ent_grant (tenant_id, user_id)".into(),
        "CREATE INDEX ent_grant_user ON ent_grant (user_id, created_at) WHERE user_id IS NOT NULL"
            .into(),
        "CREATE INDEX ent_grant_plan ON ent_grant (plan_id)".into(),
        "CREATE INDEX ent_grant_created ON ent_grant (created_at, id)".into(),
        format!(
            "CREATE TABLE ent_feed_cursor (
                id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
                sequence {big} NOT NULL,
                updated_at {ts} NOT NULL
            )"
        ),
        // Batch idempotency: the request's fingerprint and the answer it got.
        format!(
            "CREATE TABLE ent_idempotency (
                key VARCHAR(256) NOT NULL PRIMARY KEY,
                operation VARCHAR(32) NOT NULL,
                fingerprint VARCHAR(64) NOT NULL,
                response TEXT NOT NULL,
                created_at {ts} NOT NULL
            )"
        ),
        "CREATE INDEX ent_idempotency_created ON ent_idempotency (created_at)".into(),
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
            "ent_idempotency",
            "ent_feed_cursor",
            "ent_grant",
            "ent_account",
            "ent_route",
            "ent_feature_flag",
            "ent_plan_feature",
            "ent_plan",
            "ent_feature",
            "ent_change_log",
            "ent_revision",
        ] {
            conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
