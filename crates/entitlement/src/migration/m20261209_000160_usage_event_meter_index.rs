//! `ent_usage_event_meter` leads with the feature: (feature, account, time), was (account,
//! feature, time). Every query it serves fixes both the feature and the account, so it serves
//! them as before; but led by the account it competed with the primary key (account, event id)
//! for the probes of events by key, and a plan cached while the table was small took it — each
//! probe then read every event of the account, more the more were stored. Led by the feature,
//! it cannot serve a probe that fixes no feature.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

async fn index_on(manager: &SchemaManager<'_>, columns: &str) -> Result<(), DbErr> {
    // One call, so one connection: on SQLite another pooled connection may still read the
    // schema from before the drop.
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "DROP INDEX IF EXISTS ent_usage_event_meter; \
             CREATE INDEX ent_usage_event_meter ON ent_usage_event ({columns})"
        ))
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        index_on(manager, "feature_id, tenant_id, occurred_at").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        index_on(manager, "tenant_id, feature_id, occurred_at").await
    }
}
