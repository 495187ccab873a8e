//! Grant time transitions (started, expiring, expired): one row per transition the scheduler
//! has decided, keyed by what makes it that transition, so a second decision (another replica,
//! an overlapping scan) is a no-op; the scheduler's cursor row; and the grant indexes its scan
//! of due start and expiry times uses.

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
        // `anchor_at` is the grant time the transition hangs on (its start or its expiry; an
        // "expiring" one is due `lead_secs` before it): a moved expiry is a new key.
        format!(
            "CREATE TABLE ent_grant_transition (
                grant_id {uuid} NOT NULL,
                kind VARCHAR(16) NOT NULL,
                lead_secs {big} NOT NULL,
                anchor_at {ts} NOT NULL,
                sent BOOLEAN NOT NULL,
                recorded_at {ts} NOT NULL,
                PRIMARY KEY (grant_id, kind, lead_secs, anchor_at)
            )"
        ),
        // Rows behind the scan's window are pruned by age.
        "CREATE INDEX ent_grant_transition_anchor ON ent_grant_transition (anchor_at)".into(),
        // How far the scheduler has scanned (NULL until its first round).
        format!(
            "CREATE TABLE ent_transition_cursor (
                id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
                scanned_until {ts}
            )"
        ),
        "INSERT INTO ent_transition_cursor (id, scanned_until) VALUES (1, NULL)".into(),
        "CREATE INDEX ent_grant_starts ON ent_grant (starts_at)".into(),
        "CREATE INDEX ent_grant_expires ON ent_grant (expires_at) WHERE expires_at IS NOT NULL"
            .into(),
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
            "DROP INDEX IF EXISTS ent_grant_expires",
            "DROP INDEX IF EXISTS ent_grant_starts",
            "DROP TABLE IF EXISTS ent_transition_cursor",
            "DROP TABLE IF EXISTS ent_grant_transition",
        ] {
            conn.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
