//! The domain error: semantic variants that the gRPC layer maps to status codes in one place.

use serde::Serialize;

/// Why an item of a batch is refused, for the callers that decide on it (a single write
/// reports a missing or revoked grant as such; the message is for people).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ItemProblem {
    /// The item is malformed or breaks a rule.
    #[default]
    Invalid,
    /// The item names a grant that does not exist.
    GrantNotFound,
    /// The item changes a revoked grant.
    GrantRevoked,
}

/// One bad item of a batch, by its position in the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub index: usize,
    pub field: String,
    pub message: String,
    #[serde(skip)]
    pub problem: ItemProblem,
}

impl ItemError {
    pub fn new(index: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            index,
            field: field.into(),
            message: message.into(),
            problem: ItemProblem::Invalid,
        }
    }

    /// The item's grant does not exist.
    pub fn grant_not_found(index: usize) -> Self {
        Self {
            problem: ItemProblem::GrantNotFound,
            ..Self::new(index, "id", "grant not found")
        }
    }

    /// The item's grant is revoked.
    pub fn grant_revoked(index: usize) -> Self {
        Self {
            problem: ItemProblem::GrantRevoked,
            ..Self::new(index, "id", "grant is revoked")
        }
    }
}

/// What every domain and use-case operation returns.
pub type Result<T, E = DomainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    /// A write lost a race for a unique value its own check saw free.
    #[error("a {kind} with this {field} already exists")]
    Conflict {
        kind: &'static str,
        field: &'static str,
    },
    /// A concurrent request with the same idempotency key stored its record first.
    #[error("a concurrent request with the same idempotency key is in progress")]
    IdempotencyKeyTaken,
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
    /// An update would change what a metered feature's usage means (its aggregation or usage
    /// period, or its type): usage already counted would be read under other rules.
    #[error(
        "a metered feature's {field} cannot change: its usage was counted under the current one; \
         create a new feature instead"
    )]
    MeteringImmutable { field: &'static str },
    /// A reservation that can no longer be committed or released.
    #[error("{}", reservation_refusal_message(*.0))]
    Reservation(super::metering::ReservationRefusal),
    /// A write that only a meter's owner may make (a credit grant, a reset) asked of an
    /// account that draws on an ancestor's pool: make it of `owner`.
    #[error(
        "account {tenant_id} draws on the pool of account {owner} for this feature: \
         credit or reset that account's meter"
    )]
    MeterPooled { tenant_id: String, owner: String },
    /// A credit grant for a user's own meter asked for a user whose own grants do not
    /// allocate the feature: it draws on the account's meter (README "Per-user meters").
    #[error(
        "user {user_id} of account {tenant_id} has no meter of its own for this feature (no \
         grant to the user allocates it): it draws on the account's meter; credit the account"
    )]
    NoUserMeter { tenant_id: String, user_id: String },
    /// A meter holds as many live reservations as it may.
    #[error("the meter already holds {limit} live reservations")]
    TooManyHolds { limit: usize },
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// An audit-log read on a service that records no entries (`audit_enabled = false`).
    #[error("{}", tenantry_common::audit::DISABLED_MESSAGE)]
    AuditDisabled,
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A read with `min_revision` found as many requests already waiting for revisions this
    /// replica has not reached as it lets wait: refused at once (retry shortly).
    #[error("{limit} requests are already waiting for a revision this replica has not reached")]
    RevisionWaitersFull { limit: usize },
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

fn reservation_refusal_message(r: super::metering::ReservationRefusal) -> String {
    use super::metering::ReservationRefusal;
    match r {
        ReservationRefusal::Expired => "the reservation expired: its hold is gone".to_owned(),
        ReservationRefusal::Settled(status) => {
            format!("the reservation is already {}", status.as_str())
        }
    }
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

impl From<tenantry_index::IndexError> for DomainError {
    fn from(e: tenantry_index::IndexError) -> Self {
        match e {
            tenantry_index::IndexError::NotFound { kind, id } => Self::NotFound { kind, id },
            tenantry_index::IndexError::InvalidArgument { field, message } => {
                Self::InvalidArgument { field, message }
            }
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
            | Self::Conflict { .. }
            | Self::IdempotencyKeyTaken
            | Self::InvalidArgument { .. }
            | Self::InvalidItems(_)
            | Self::FailedPrecondition(_)
            | Self::MeteringImmutable { .. }
            | Self::Reservation(_)
            | Self::MeterPooled { .. }
            | Self::NoUserMeter { .. }
            | Self::TooManyHolds { .. }
            | Self::IdempotencyKeyReused(_)
            | Self::PermissionDenied(_)
            | Self::AuditDisabled
            | Self::Unavailable(_)
            | Self::RevisionWaitersFull { .. }
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
