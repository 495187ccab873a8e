//! The domain error: semantic variants that the gRPC layer maps to status codes in one place.

use serde::Serialize;

/// One bad item of a batch, by its position in the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub index: usize,
    pub field: String,
    pub message: String,
}

impl ItemError {
    pub fn new(index: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            index,
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// A batch refused as a whole; every bad item is listed (maps to INVALID_ARGUMENT).
    #[error("{} invalid item(s) in batch", .0.len())]
    InvalidItems(Vec<ItemError>),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The same idempotency key came with a different request.
    #[error("idempotency key {0} was used for a different request")]
    IdempotencyKeyReused(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The database's storage is full: nothing was written.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The database's storage failed (an I/O error): nothing was written.
    #[error("storage failed: {0}")]
    StorageFailed(String),
    #[error("internal error: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl DomainError {
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        DomainError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        DomainError::Internal {
            message: message.into(),
            source: None,
        }
    }
}

impl tenantry_common::db::StorageFaultSource for DomainError {
    fn storage_fault(&self) -> Option<tenantry_common::db::StorageFault> {
        use tenantry_common::db::StorageFault;
        match self {
            Self::StorageFull(_) => Some(StorageFault::Full),
            Self::StorageFailed(_) => Some(StorageFault::Failed),
            Self::NotFound { .. }
            | Self::AlreadyExists { .. }
            | Self::InvalidArgument { .. }
            | Self::InvalidItems(_)
            | Self::FailedPrecondition(_)
            | Self::IdempotencyKeyReused(_)
            | Self::PermissionDenied(_)
            | Self::Unavailable(_)
            | Self::Internal { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_count() {
        assert_eq!(
            DomainError::invalid("key", "too long").to_string(),
            "invalid key: too long"
        );
        let e = DomainError::InvalidItems(vec![ItemError::new(0, "planId", "x"); 3]);
        assert_eq!(e.to_string(), "3 invalid item(s) in batch");
        assert_eq!(
            DomainError::not_found("plan", "p1").to_string(),
            "plan p1 not found"
        );
    }
}
