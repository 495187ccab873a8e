//! `entitlement-service`: the entitlement gRPC service on its own.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use tenantry_common::{CancellationToken, Config, ConfigArgs, RunError, grpc::bind, telemetry};

/// Tenantry entitlement service: features, plans, grants and the entitlement check.
#[derive(Debug, Parser)]
#[command(name = "entitlement-service", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    tenantry_common::runtime::run_main("entitlement-service", start())
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
    let _telemetry = telemetry::init("entitlement-service", &config);
    match run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "entitlement service stopped");
            eprintln!("entitlement-service: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config) -> Result<(), RunError> {
    let shutdown = CancellationToken::new();
    tenantry_common::shutdown::cancel_on_signals(&shutdown)?;
    let listener = bind(config.entitlement_grpc_addr).await?;
    tenantry_entitlement::serve(config, listener, shutdown).await
}
