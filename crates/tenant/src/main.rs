//! `tenant-service`: the tenant gRPC service on its own.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use tenantry_common::{CancellationToken, Config, ConfigArgs, grpc::bind, telemetry};

/// Tenantry tenant service: accounts, hierarchy, memberships, migrations and the change feed.
#[derive(Debug, Parser)]
#[command(name = "tenant-service", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    tenantry_common::runtime::run_main("tenant-service", start())
}

async fn start() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init("tenant-service", &config);
    match run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "tenant service stopped");
            eprintln!("tenant-service: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tenantry_common::shutdown::cancel_on_signals(&shutdown)?;
    let listener = bind(config.tenant_grpc_addr).await?;
    tenantry_tenant::serve(config, listener, shutdown).await?;
    Ok(())
}
