//! Tenantry's entitlement service: features, plans, flags, routes and grants over gRPC, with
//! checks answered from an in-memory index (`domain`) kept current from this replica's writes,
//! other replicas' writes (the change log) and the tenant service's change feed.
//!
//! [`migrate`] applies the schema; [`serve`] connects, optionally migrates, builds the index,
//! starts the followers and serves gRPC until shutdown.

pub mod clock;
pub mod domain;
mod follower;
mod grpc;
mod index_handle;
pub mod migration;
mod service;
mod storage;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use tenantry_common::{
    Config, RunError, Shutdown,
    db::{self, DbSettings},
    grpc::ServerSettings,
};
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::index_handle::IndexHandle;
use crate::service::{Engine, TenantDirectory};
use crate::storage::Store;

/// How long a check with `min_revision` waits for that revision before UNAVAILABLE.
const REVISION_WAIT: Duration = Duration::from_secs(2);
/// Fallback poll of the change log when a notification is lost.
const LOG_POLL: Duration = Duration::from_secs(1);

fn db_settings(config: &Config) -> DbSettings {
    DbSettings {
        url: config.entitlement_database(),
        schema: config.entitlement_db_schema.clone(),
        max_connections: config.db_max_connections,
        acquire_timeout: config.db_acquire_timeout(),
        application_name: "tenantry-entitlement".to_owned(),
    }
}

async fn connect(config: &Config) -> Result<DatabaseConnection, RunError> {
    db::connect(&db_settings(config))
        .await
        .map_err(|e| RunError::database("connect to the entitlement database", &e))
}

/// Applies the migrations; on PostgreSQL in one transaction under an advisory lock, so
/// replicas starting together do not race.
async fn apply_migrations(conn: &DatabaseConnection) -> Result<(), RunError> {
    let context = "migrate the entitlement database";
    let fail = |e: sea_orm::DbErr| RunError::database(context, &e);
    if conn.get_database_backend() == DbBackend::Postgres {
        let txn = conn.begin().await.map_err(fail)?;
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.entitlement_migrations'))",
        ))
        .await
        .map_err(fail)?;
        migration::Migrator::up(&txn, None).await.map_err(fail)?;
        txn.commit().await.map_err(fail)
    } else {
        migration::Migrator::up(conn, None).await.map_err(fail)
    }
}

/// Applies the entitlement service's migrations to `config.entitlement_database()`.
pub async fn migrate(config: &Config) -> Result<(), RunError> {
    let conn = connect(config).await?;
    apply_migrations(&conn).await?;
    conn.close()
        .await
        .map_err(|e| RunError::database("close the entitlement database", &e))
}

/// Serves the entitlement gRPC services on `listener` until `shutdown` fires.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    serve_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`serve`] with an injected clock (tests sit on grant start and expiry boundaries).
pub async fn serve_with_clock(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> Result<(), RunError> {
    let conn = connect(config).await?;
    if config.migrate_on_start {
        apply_migrations(&conn).await?;
    }
    let store = Store::new(conn, &config.entitlement_db_schema);
    let index = IndexHandle::load(store.clone())
        .await
        .map_err(|e| RunError::Database(format!("build the entitlement index: {e}")))?;
    // Lazy: the service starts (and serves checks) while the tenant service is down.
    let tenant_channel = tenantry_common::grpc::connect(
        &config.tenant_endpoint(),
        config.tls_ca_path.as_ref(),
        config.service_token.as_ref(),
        config.request_timeout(),
    )?;
    let engine = Arc::new(Engine {
        store: store.clone(),
        index,
        tenants: TenantDirectory::new(tenant_channel.clone(), config.max_message_bytes),
        clock,
        revision_wait: REVISION_WAIT,
    });
    let local = Shutdown::new();
    let forward = {
        let (outer, local) = (shutdown.clone(), local.clone());
        tokio::spawn(async move {
            outer.wait().await;
            local.trigger();
        })
    };
    let feed = tokio::spawn(follower::follow_tenant_feed(
        engine.clone(),
        tenant_channel,
        config.max_message_bytes,
        local.clone(),
    ));
    let log = tokio::spawn(follower::follow_change_log(
        engine.clone(),
        LOG_POLL,
        local.clone(),
    ));
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "entitlement service listening"
    );
    let result = tenantry_common::grpc::serve(
        &ServerSettings::from_config(config),
        listener,
        grpc::services(engine, config.max_message_bytes),
        &[tenantry_proto::FILE_DESCRIPTOR_SET],
        local.clone(),
    )
    .await;
    local.trigger();
    forward.abort();
    let _ = tokio::join!(feed, log);
    if let Err(err) = store.connection().clone().close().await {
        tracing::warn!(error = %err, "closing the entitlement database failed");
    }
    result.map_err(RunError::from)
}
