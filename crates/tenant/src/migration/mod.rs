//! The tenant service's schema migrations: one migrator, its own migration table, one file per
//! migration. Migrations are plain SQL per backend and never depend on the entities, so an old
//! migration keeps meaning what it meant when it was released.

use sea_orm_migration::prelude::*;

mod m20260101_000001_initial;
mod m20260301_000002_live_account_count;
mod m20261203_000003_storage_probe;
mod m20261203_000004_feed_retention;
mod m20261204_000005_idempotency_keys;
mod m20261204_000090_audit_log;
mod m20261204_000100_migration_events;
mod m20261205_000110_metadata_search;

/// Applies the tenant service's migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_initial::Migration),
            Box::new(m20260301_000002_live_account_count::Migration),
            Box::new(m20261203_000003_storage_probe::Migration),
            Box::new(m20261203_000004_feed_retention::Migration),
            Box::new(m20261204_000005_idempotency_keys::Migration),
            Box::new(m20261204_000090_audit_log::Migration),
            Box::new(m20261204_000100_migration_events::Migration),
            Box::new(m20261205_000110_metadata_search::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "tenant_migrations".into_iden()
    }
}

/// Runs `statements` one by one (both drivers accept one statement per call reliably).
pub(crate) async fn run_all(
    manager: &SchemaManager<'_>,
    statements: &[String],
) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    for statement in statements {
        conn.execute_unprepared(statement).await?;
    }
    Ok(())
}
