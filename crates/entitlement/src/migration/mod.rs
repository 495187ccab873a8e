//! The entitlement service's schema migrations: one migrator, its own migration table, one file
//! per migration. Migrations are plain SQL per backend and never depend on the entities.

use sea_orm_migration::prelude::*;

mod m20260101_000001_initial;
mod m20261202_000002_change_log_lz4;
mod m20261203_000003_storage_probe;
mod m20261204_000004_idempotency_scope;
mod m20261204_000005_frontegg_keys;
mod m20261204_000090_audit_log;
mod m20261204_000091_webhooks;
mod m20261204_000092_grant_transitions;
mod m20261205_000100_metering;
mod m20261205_000110_usage_history;
mod m20261205_000120_usage_thresholds;
mod m20261205_000130_meter_periods;
mod m20261206_000110_reservations;
mod m20261207_000140_balance_points;
mod m20261208_000150_user_meters;
mod m20261209_000160_usage_event_meter_index;

/// Applies the entitlement service's migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_initial::Migration),
            Box::new(m20261202_000002_change_log_lz4::Migration),
            Box::new(m20261203_000003_storage_probe::Migration),
            Box::new(m20261204_000004_idempotency_scope::Migration),
            Box::new(m20261204_000005_frontegg_keys::Migration),
            Box::new(m20261204_000090_audit_log::Migration),
            Box::new(m20261204_000091_webhooks::Migration),
            Box::new(m20261204_000092_grant_transitions::Migration),
            Box::new(m20261205_000100_metering::Migration),
            Box::new(m20261205_000110_usage_history::Migration),
            Box::new(m20261205_000120_usage_thresholds::Migration),
            Box::new(m20261205_000130_meter_periods::Migration),
            Box::new(m20261206_000110_reservations::Migration),
            Box::new(m20261207_000140_balance_points::Migration),
            Box::new(m20261208_000150_user_meters::Migration),
            Box::new(m20261209_000160_usage_event_meter_index::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "entitlement_migrations".into_iden()
    }
}
