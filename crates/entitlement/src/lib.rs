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
mod retention;
mod service;
mod storage;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
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

async fn connect(config: &Config) -> Result<DatabaseConnection, RunError> {
    db::connect(&DbSettings::entitlement(config))
        .await
        .map_err(|e| RunError::database("connect to the entitlement database", &e))
}

async fn apply_migrations(conn: &DatabaseConnection) -> Result<(), RunError> {
    db::migrate::<migration::Migrator>(conn)
        .await
        .map_err(|e| RunError::database("migrate the entitlement database", &e))
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
        storage: tenantry_common::db::StorageHealth::new(),
    });
    // Followers stop with the caller's signal, and also when this server fails on its own.
    let local = shutdown.child();
    let (keeping_up, feed_health) = tokio::sync::watch::channel(true);
    let feed = tokio::spawn(follower::follow_tenant_feed(
        engine.clone(),
        tenant_channel,
        config.max_message_bytes,
        follower::LagAlarm {
            after: Duration::from_secs(config.feed_lag_alarm_secs),
            keeping_up,
        },
        local.clone(),
    ));
    let log = tokio::spawn(follower::follow_change_log(
        engine.clone(),
        LOG_POLL,
        local.clone(),
    ));
    let prune = tokio::spawn(retention::prune_idempotency_keys(
        engine.clone(),
        config.idempotency_retention(),
        local.clone(),
    ));
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "entitlement service listening"
    );
    let result = tenantry_common::grpc::serve(
        &ServerSettings::from_config(config),
        listener,
        grpc::services(engine, config.max_message_bytes)
            .condition(follower::FEED_HEALTH_SERVICE, feed_health),
        &[tenantry_proto::FILE_DESCRIPTOR_SET],
        local.clone(),
    )
    .await;
    local.trigger();
    let _ = tokio::join!(feed, log, prune);
    if let Err(err) = store.connection().clone().close().await {
        tracing::warn!(error = %err, "closing the entitlement database failed");
    }
    result.map_err(RunError::from)
}
