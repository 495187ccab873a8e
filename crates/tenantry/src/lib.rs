//! The all-in-one server: the tenant service, the entitlement service and the REST gateway in
//! one process, each on its own port with its own database, exactly as they run apart.

pub mod agent;

use std::io::{IsTerminal, Write};

use tenantry_common::{
    CancellationToken, Config, RunError, grpc::bind, shutdown::drain_within_grace,
};

/// Which service's migrations `tenantry migrate` applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateTarget {
    Tenant,
    Entitlement,
    All,
}

/// Applies the migrations of one or both services to their configured databases.
pub async fn migrate(config: &Config, target: MigrateTarget) -> Result<(), RunError> {
    if matches!(target, MigrateTarget::Tenant | MigrateTarget::All) {
        tenantry_tenant::migrate(config).await?;
        tracing::info!("tenant migrations applied");
    }
    if matches!(target, MigrateTarget::Entitlement | MigrateTarget::All) {
        tenantry_entitlement::migrate(config).await?;
        tracing::info!("entitlement migrations applied");
    }
    Ok(())
}

/// Binds all three listeners first (so a taken port fails fast), prints where each listens and
/// how to get a token, then serves until `shutdown` fires or one server fails.
pub async fn serve(config: &Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let credentials = tenantry_gateway::environment_credentials(config)?;
    let tenant_listener = bind(config.tenant_grpc_addr).await?;
    let entitlement_listener = bind(config.entitlement_grpc_addr).await?;
    let http_listener = bind(config.http_addr).await?;
    print_banner(
        config,
        &credentials,
        http_listener.local_addr()?,
        tenant_listener.local_addr()?,
        entitlement_listener.local_addr()?,
    );

    // Servers stop in the order requests flow through them: the gateway first, draining its
    // in-flight requests while the services still answer their internal calls; then the
    // entitlement service (it calls the tenant service); then the tenant service. Stopping all
    // three at once lost the internal call of a REST request that was still in flight (503).
    let entitlement_stop = CancellationToken::new();
    let tenant_stop = CancellationToken::new();
    // One failing server stops the others at once, so the process never runs half-alive.
    let stop_everything = || {
        shutdown.cancel();
        entitlement_stop.cancel();
        tenant_stop.cancel();
    };
    let on_error = |result: Result<(), RunError>| {
        if result.is_err() {
            stop_everything();
        }
        result
    };
    let servers = async {
        tokio::join!(
            async {
                let result = on_error(
                    tenantry_gateway::serve(config, http_listener, shutdown.clone()).await,
                );
                entitlement_stop.cancel();
                result
            },
            async {
                let result = on_error(
                    tenantry_entitlement::serve(
                        config,
                        entitlement_listener,
                        entitlement_stop.clone(),
                    )
                    .await,
                );
                // Also when it ended on its own: the gateway cannot serve checks without it.
                shutdown.cancel();
                tenant_stop.cancel();
                result
            },
            async {
                let result = on_error(
                    tenantry_tenant::serve(config, tenant_listener, tenant_stop.clone()).await,
                );
                stop_everything();
                result
            },
        )
    };
    // The grace period bounds the whole sequence, not each server's part of it.
    drain_within_grace(servers, &shutdown, config.shutdown_grace(), "servers")
        .await
        .map_or(Ok(()), |(gateway, entitlement, tenant)| {
            gateway.and(entitlement).and(tenant)
        })
}

fn print_banner(
    config: &Config,
    credentials: &tenantry_gateway::EnvironmentCredentials,
    http: std::net::SocketAddr,
    tenant: std::net::SocketAddr,
    entitlement: std::net::SocketAddr,
) {
    let database = |url: String| tenantry_common::redact_urls(&url);
    let mut text = format!(
        "\nTenantry is serving\n\
         \x20 REST gateway        http://{http}   (API reference: http://{http}/docs)\n\
         \x20 tenant gRPC         {tenant}   database {}\n\
         \x20 entitlement gRPC    {entitlement}   database {}\n\n\
         Get an environment token:\n\
         \x20 curl -s -X POST http://{http}/auth/vendor -H 'content-type: application/json' \\\n\
         \x20   -d '{{\"clientId\": \"{}\", \"secret\": \"<secret>\"}}'\n",
        database(config.tenant_database()),
        database(config.entitlement_database()),
        credentials.client_id,
    );
    if credentials.generated {
        // Dev mode only: the operator configured no credentials, so these were generated into
        // the data directory. The secret is shown on a terminal only: stdout sent to a file or
        // a log collector would keep it where the file's owner-only permissions do not reach.
        let file = tenantry_gateway::credentials_file(config);
        if std::io::stdout().is_terminal() {
            text.push_str(&format!(
                "Development credentials (kept in {}):\n  clientId {}\n  secret   {}\n",
                file.display(),
                credentials.client_id,
                credentials.secret.expose(),
            ));
        } else {
            text.push_str(&format!(
                "Development credentials:\n  clientId {}\n  secret   in {} (shown only on a terminal)\n",
                credentials.client_id,
                file.display(),
            ));
        }
        text.push_str("Set TENANTRY_CLIENT_ID and TENANTRY_CLIENT_SECRET to use your own.\n");
    } else {
        text.push_str("Use the secret configured in TENANTRY_CLIENT_SECRET.\n");
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout (daemonised) is no reason to stop serving.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
