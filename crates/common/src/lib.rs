//! Shared platform pieces of Tenantry: configuration, telemetry, database connection, the
//! error-code table, gRPC server and client plumbing, and (feature `test-support`) the
//! ephemeral PostgreSQL used by every test binary.

pub mod audit;
pub mod config;
pub mod db;
pub mod error;
pub mod files;
pub mod grpc;
pub mod idempotency;
pub mod ids;
pub mod limits;
pub mod notify;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;

pub use config::{Config, ConfigArgs, Secret};
pub use shutdown::CancellationToken;
/// The one permission-matching rule; it lives with the index, which the SDK uses without this crate.
pub use tenantry_index::permission;

/// Why a server could not start or stopped abnormally. Binaries print it and exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("database: {0}")]
    Database(String),
    #[error(transparent)]
    Serve(#[from] grpc::ServeError),
    #[error(transparent)]
    Connect(#[from] grpc::ConnectError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl RunError {
    /// A database error, described without SQL text or credentials.
    pub fn database(context: &str, err: &sea_orm::DbErr) -> Self {
        let kind = match db::classify(err) {
            db::DbFailure::Unavailable => "database unreachable",
            db::DbFailure::StorageFull => "database storage full",
            db::DbFailure::StorageFailed => "database storage failed",
            db::DbFailure::UniqueViolation(_)
            | db::DbFailure::ForeignKeyViolation(_)
            | db::DbFailure::Conflict
            | db::DbFailure::Other => "database error",
        };
        tracing::debug!(error = %err, context, "database error at start-up");
        Self::Database(format!(
            "{context}: {kind}: {}",
            redact_urls(&err.to_string())
        ))
    }
}

/// Hides the password of any `scheme://user:password@host` in a message.
pub fn redact_urls(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("://") {
        let (head, tail) = rest.split_at(start + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.find('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            super::redact_urls("cannot reach postgres://app:s3cret@db:5432/x now"),
            "cannot reach postgres://app:***@db:5432/x now"
        );
        assert_eq!(
            super::redact_urls("sqlite://./data/t.db"),
            "sqlite://./data/t.db"
        );
    }
}
