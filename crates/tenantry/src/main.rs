#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use tenantry::MigrateTarget;
use tenantry_common::{CancellationToken, Config, ConfigArgs, telemetry};

/// Tenantry: accounts and entitlements for multi-tenant B2B software.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the tenant service, the entitlement service and the REST gateway in one process.
    Serve,
    /// Answer entitlement checks from an index followed from the entitlement service: a sidecar
    /// with no database (listens on loopback, without authentication).
    Agent,
    /// Apply database migrations and exit.
    Migrate {
        /// Which service's schema to migrate.
        #[arg(long, value_enum, default_value = "all")]
        service: MigrateTarget,
    },
}

fn main() -> std::process::ExitCode {
    tenantry_common::runtime::run_main("tenantry", start())
}

async fn start() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tenantry: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init("tenantry", &config);
    let result = match cli.command {
        Command::Serve => {
            let shutdown = CancellationToken::new();
            match tenantry_common::shutdown::cancel_on_signals(&shutdown) {
                Ok(()) => tenantry::serve(&config, shutdown).await,
                Err(e) => Err(e.into()),
            }
        }
        Command::Agent => {
            let shutdown = CancellationToken::new();
            match tenantry_common::shutdown::cancel_on_signals(&shutdown) {
                Ok(()) => tenantry::agent::run(&config, shutdown).await,
                Err(e) => Err(e.into()),
            }
        }
        Command::Migrate { service } => tenantry::migrate(&config, service).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tenantry stopped");
            eprintln!("tenantry: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
