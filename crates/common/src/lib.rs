//! Shared platform pieces of Tenantry: configuration, telemetry, database connection, the
//! error-code table, gRPC server and client plumbing, and (feature `test-support`) the
//! ephemeral PostgreSQL used by every test binary.

pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;

pub use config::{Config, ConfigArgs, Secret};
pub use shutdown::Shutdown;
