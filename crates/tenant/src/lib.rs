//! Tenantry tenant service: accounts, their hierarchy, memberships, settings, bulk migrations
//! and the change feed, over gRPC.
//!
//! [`migrate`] applies the schema; [`serve`] connects, optionally migrates, starts the
//! background work (migration jobs, change-feed wake-ups) and serves gRPC until shutdown.

pub mod app;
pub mod domain;
pub mod grpc;
pub mod migration;
pub mod storage;
mod workers;

use sea_orm::DatabaseConnection;
use tenantry_common::{
    CancellationToken, Config, RunError,
    db::{self, DbSettings},
    grpc::ServerSettings,
};
use tokio::net::TcpListener;

use crate::storage::Store;

async fn connect(config: &Config) -> Result<DatabaseConnection, RunError> {
    db::connect(&DbSettings::tenant(config))
        .await
        .map_err(|e| RunError::database("connect to the tenant database", &e))
}

async fn apply_migrations(conn: &DatabaseConnection) -> Result<(), RunError> {
    db::migrate::<migration::Migrator>(conn)
        .await
        .map_err(|e| RunError::database("migrate the tenant database", &e))
}

/// Applies the tenant service's migrations to `config.tenant_database()`.
pub async fn migrate(config: &Config) -> Result<(), RunError> {
    let conn = connect(config).await?;
    apply_migrations(&conn).await?;
    conn.close()
        .await
        .map_err(|e| RunError::database("close the tenant database", &e))
}

/// Connects, migrates when `config.migrate_on_start`, resumes migration jobs, and serves the
/// tenant gRPC services on `listener` until `shutdown` fires.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let conn = connect(config).await?;
    if config.migrate_on_start {
        apply_migrations(&conn).await?;
    }
    let store = Store::new(conn, &config.tenant_db_schema, config.max_hierarchy_depth)
        .with_audit(config.audit_enabled);
    // Background work and feed streams follow a local signal: it fires with the caller's, and
    // also when the server stops on an error, without stopping the caller's other services.
    let local = shutdown.child_token();
    let storage = db::StorageHealth::new();
    let workers = workers::start(
        &store,
        workers::FeedRetention::from_config(config),
        config.idempotency_retention(),
        config.audit_retention(),
        &storage,
        &local,
    );
    let services = grpc::services(&store, &workers, &local, storage, config.max_message_bytes);
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "tenant service listening"
    );
    let result = tenantry_common::grpc::serve(
        &ServerSettings::from_config(config),
        listener,
        services,
        &[tenantry_proto::FILE_DESCRIPTOR_SET],
        local.clone(),
    )
    .await;
    local.cancel();
    workers.join().await;
    if let Err(err) = store.connection().clone().close().await {
        tracing::warn!(error = %err, "closing the tenant database failed");
    }
    result.map_err(RunError::from)
}
