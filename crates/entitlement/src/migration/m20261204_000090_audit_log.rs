//! The audit log (`audit_log`): one row per recorded write, inserted in the write's
//! transaction, never updated (a trigger refuses it), deleted only by retention. The table's
//! definition is common's, the same in both services' schemas.

use sea_orm_migration::prelude::*;
use tenantry_common::audit::store;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &store::create_statements(manager.get_database_backend()),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &store::drop_statements(manager.get_database_backend()),
        )
        .await
    }
}

async fn run_all(manager: &SchemaManager<'_>, statements: &[String]) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    for statement in statements {
        conn.execute_unprepared(statement).await?;
    }
    Ok(())
}
