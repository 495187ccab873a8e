//! The balance burn-down within a period: each usage event that draws on its meter keeps when
//! it drew (`drawn_at`), the meter right after (`meter_after`, JSON) and whose meter it was
//! (`drawn_on`: a pool's owner for its sub-accounts' events), written in the draw's
//! transaction. Events stored before this keep both null: their balance is unknown, and the
//! burn-down says so rather than recomputing it. Found by (drawn_on, feature, drawn_at).

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn statements(backend: DbBackend) -> Vec<String> {
    let ts = if backend == DbBackend::Postgres {
        "TIMESTAMPTZ"
    } else {
        "TEXT"
    };
    vec![
        format!("ALTER TABLE ent_usage_event ADD COLUMN drawn_at {ts}"),
        "ALTER TABLE ent_usage_event ADD COLUMN meter_after TEXT".into(),
        "ALTER TABLE ent_usage_event ADD COLUMN drawn_on VARCHAR(255)".into(),
        "CREATE INDEX ent_usage_event_drawn ON ent_usage_event (drawn_on, feature_id, drawn_at)"
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
            "DROP INDEX IF EXISTS ent_usage_event_drawn",
            "ALTER TABLE ent_usage_event DROP COLUMN drawn_on",
            "ALTER TABLE ent_usage_event DROP COLUMN meter_after",
            "ALTER TABLE ent_usage_event DROP COLUMN drawn_at",
        ] {
            conn.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
