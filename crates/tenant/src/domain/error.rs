//! The domain error: what went wrong, in terms a caller can act on.

/// The conflicts a write can meet, named once: the service's own checks and the storage's
/// mapping of the unique keys that back them up give the same reason, and code that decides
/// on one (an import item's field at fault) matches these constants, never a message.
pub const ACCOUNT_EXISTS: &str = "ACCOUNT_EXISTS";
/// Another live account has the alias.
pub const ALIAS_TAKEN: &str = "ALIAS_TAKEN";
/// The user is already a member of the account.
pub const MEMBERSHIP_EXISTS: &str = "MEMBERSHIP_EXISTS";

/// Every way a tenant-service operation can fail. `reason` values are stable UPPER_SNAKE_CASE
/// codes clients may match on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    NotFound {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    AlreadyExists {
        reason: &'static str,
        message: String,
    },
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    /// The database's storage is full: nothing was written.
    #[error("{0}")]
    StorageFull(String),
    /// The database's storage failed (an I/O error): nothing was written.
    #[error("{0}")]
    StorageFailed(String),
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn account_not_found(tenant_id: &str) -> Self {
        Self::NotFound {
            reason: "ACCOUNT_NOT_FOUND",
            message: format!("account `{tenant_id}` does not exist"),
        }
    }

    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    /// A feed cursor older than what the outbox retains.
    pub fn cursor_expired(cursor: u64, pruned_through: u64) -> Self {
        Self::precondition(
            "CURSOR_EXPIRED",
            format!(
                "events after sequence {cursor} are no longer retained (pruned through \
                 {pruned_through}); resynchronise from ReadSnapshot"
            ),
        )
    }

    pub fn internal(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The stable reason code of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { reason, .. }
            | Self::AlreadyExists { reason, .. }
            | Self::FailedPrecondition { reason, .. } => reason,
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::PermissionDenied(_) => "PERMISSION_DENIED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::StorageFull(_) => tenantry_common::error::STORAGE_FULL,
            Self::StorageFailed(_) => tenantry_common::error::STORAGE_FAILED,
            Self::Internal { .. } => "INTERNAL",
        }
    }
}

impl tenantry_common::db::StorageFaultSource for Error {
    fn storage_fault(&self) -> Option<tenantry_common::db::StorageFault> {
        use tenantry_common::db::StorageFault;
        match self {
            Self::StorageFull(_) => Some(StorageFault::Full),
            Self::StorageFailed(_) => Some(StorageFault::Failed),
            Self::InvalidArgument { .. }
            | Self::NotFound { .. }
            | Self::AlreadyExists { .. }
            | Self::FailedPrecondition { .. }
            | Self::PermissionDenied(_)
            | Self::Unavailable(_)
            | Self::Internal { .. } => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
