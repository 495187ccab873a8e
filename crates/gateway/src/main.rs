//! `gateway`: the REST gateway on its own (the all-in-one `tenantry` binary embeds it too).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use tenantry_common::{CancellationToken, Config, ConfigArgs, grpc, telemetry};

/// Tenantry REST gateway: the seeds' REST APIs in front of the tenant and entitlement services.
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> std::process::ExitCode {
    tenantry_common::runtime::run_main("gateway", start())
}

async fn start() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init("tenantry-gateway", &config);
    match run(&config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped");
            eprintln!("gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config) -> Result<(), tenantry_common::RunError> {
    let shutdown = CancellationToken::new();
    tenantry_common::shutdown::cancel_on_signals(&shutdown)?;
    let credentials = tenantry_gateway::environment_credentials(config)?;
    if credentials.generated {
        tracing::info!(
            client_id = %credentials.client_id,
            file = %config.data_dir.display(),
            "development environment credentials in use (secret kept in the data dir)"
        );
    }
    let listener = grpc::bind(config.http_addr).await?;
    tenantry_gateway::serve(config, listener, shutdown).await
}
