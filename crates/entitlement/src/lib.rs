//! Tenantry's entitlement service: features, plans, flags, routes and grants over gRPC, with
//! checks answered from an in-memory index (`domain`) kept current from this replica's writes,
//! other replicas' writes (the change log) and the tenant service's change feed.
//!
//! Layers (see ARCHITECTURE.md): `grpc` decodes, calls a use-case of `app` and encodes; `app`
//! holds the rules and orchestration behind the ports of `app::ports`, which `storage` (the
//! database) and `clients` (the tenant service) implement; `domain` is the model, validation
//! and the evaluation index.
//!
//! [`migrate`] applies the schema; [`serve`] connects, optionally migrates, builds the index,
//! starts the followers and serves gRPC until shutdown.

mod app;
/// Checks answered from an index the caller provides: the `EntitlementService` gRPC handlers
/// ([`checks::CheckService`]) over any [`checks::IndexSource`]. The agent serves them over the
/// index it follows, so its answers and errors are the service's.
pub mod checks {
    pub use crate::app::checks::IndexSource;
    pub use crate::grpc::checks::CheckService;
}
mod clients;
pub mod clock;
pub mod domain;
mod follower;
pub(crate) mod grpc;
pub mod migration;
mod retention;
mod storage;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tenantry_common::{
    CancellationToken, Config, RunError,
    db::{self, DbSettings},
    grpc::ServerSettings,
};
use tokio::net::TcpListener;

use crate::clients::tenant::GrpcTenantDirectory;
use crate::clock::{Clock, SystemClock};
use crate::storage::Store;

/// The service's use-cases over the database.
type Engine = app::Engine<Store>;

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
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    serve_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`serve`] with an injected clock (tests sit on grant start and expiry boundaries).
pub async fn serve_with_clock(
    config: &Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
) -> Result<(), RunError> {
    let conn = connect(config).await?;
    if config.migrate_on_start {
        apply_migrations(&conn).await?;
    }
    let store = Store::new(conn, &config.entitlement_db_schema).with_audit(config.audit_enabled);
    // Lazy: the service starts (and serves checks) while the tenant service is down.
    let tenant_channel = tenantry_common::grpc::connect(
        &config.tenant_endpoint(),
        config.tls_ca_path.as_ref(),
        config.service_token.as_ref(),
        config.request_timeout(),
    )?;
    let tenants = GrpcTenantDirectory::new(tenant_channel.clone(), config.max_message_bytes);
    let streams = app::stream::StreamHub::new(
        app::stream::StreamSettings {
            heartbeat: Duration::from_secs(config.stream_heartbeat_secs),
            max_subscribers: config.stream_max_subscribers,
            ..app::stream::StreamSettings::default()
        },
        // Subscriptions end when shutdown starts (they would otherwise hold the drain open).
        shutdown.clone(),
    );
    let revision_wait = app::RevisionWait::new(REVISION_WAIT, config.max_revision_waiters);
    let thresholds = domain::threshold::UsageThresholds::new(&config.webhook_usage_thresholds())
        .map_err(|e| RunError::Io(std::io::Error::other(format!("usage thresholds: {e}"))))?;
    let engine = Engine::start(store.clone(), Arc::new(tenants), clock, revision_wait)
        .await
        .map_err(|e| RunError::Database(format!("build the entitlement index: {e}")))?
        .with_streams(streams)
        .with_usage_thresholds(thresholds);
    let engine = Arc::new(engine);
    let sender = clients::webhook_http::HttpWebhookSender::new(
        Duration::from_millis(config.webhook_timeout_ms),
        config.webhook_allow_private_networks,
    )
    .map_err(|e| RunError::Io(std::io::Error::other(format!("webhook client: {e}"))))?;
    let webhooks = Arc::new(app::webhooks::Webhooks::new(
        store.clone(),
        Arc::new(sender),
        engine.clock(),
        app::webhooks::WebhookSettings {
            allow_private_networks: config.webhook_allow_private_networks,
            retry_schedule: config.webhook_retry_schedule(),
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            disable_after: Duration::from_secs(config.webhook_disable_after_secs),
            poll: Duration::from_millis(config.webhook_poll_ms),
            delivery_retention: Duration::from_secs(config.webhook_delivery_retention_secs),
            ..app::webhooks::WebhookSettings::default()
        },
        engine.webhook_wake(),
    ));
    // Followers stop with the caller's signal, and also when this server fails on its own.
    let local = shutdown.child_token();
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
    let deliveries = tokio::spawn(webhooks.clone().run(local.clone()));
    let transitions = tokio::spawn(app::transitions::run(
        engine.clone(),
        app::transitions::TransitionSettings {
            lead_times: config.webhook_expiring_lead_times(),
            poll: Duration::from_millis(config.webhook_poll_ms),
        },
        local.clone(),
    ));
    let prune = tokio::spawn(retention::prune_idempotency_keys(
        engine.clone(),
        config.idempotency_retention(),
        local.clone(),
    ));
    let prune_audit = config.audit_retention().map(|retention| {
        tokio::spawn(retention::prune_audit(
            engine.clone(),
            retention,
            local.clone(),
        ))
    });
    tracing::info!(
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "entitlement service listening"
    );
    let result = tenantry_common::grpc::serve(
        &ServerSettings::from_config(config),
        listener,
        grpc::services(engine, webhooks, config.max_message_bytes)
            .condition(follower::FEED_HEALTH_SERVICE, feed_health),
        &[tenantry_proto::FILE_DESCRIPTOR_SET],
        local.clone(),
    )
    .await;
    local.cancel();
    let _ = tokio::join!(feed, log, prune, deliveries, transitions);
    if let Some(prune_audit) = prune_audit {
        let _ = prune_audit.await;
    }
    if let Err(err) = store.close().await {
        tracing::warn!(error = %err, "closing the entitlement database failed");
    }
    result.map_err(RunError::from)
}
