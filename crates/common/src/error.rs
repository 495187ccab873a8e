//! The error-code table: one place that says which HTTP status answers each gRPC code.
//!
//! Services map their domain errors to a gRPC [`tonic::Code`] (one exhaustive mapping per
//! service); the gateway maps that code to HTTP through [`http_status`] and names it in JSON
//! bodies with [`code_name`]. Keeping both directions here means a new code is one edit.

use http::StatusCode;
use tonic::Code;

use crate::idempotency::KEY_REUSED;

/// Reason (in `ErrorDetails.reason`) of a write refused because the database's storage is full
/// (code RESOURCE_EXHAUSTED): nothing was written, retry once space is freed. HTTP 507.
pub const STORAGE_FULL: &str = "STORAGE_FULL";
/// Reason of a write refused because the database's storage failed (an I/O error; code
/// UNAVAILABLE): nothing was written. HTTP 503, the message naming the cause.
pub const STORAGE_FAILED: &str = "STORAGE_FAILED";
/// Reason of a read with a minimum revision refused at once (code UNAVAILABLE) because as many
/// requests as the replica lets wait (`max_revision_waiters`) already wait for revisions its
/// index has not reached. HTTP 503 with `retry-after`.
pub const REVISION_WAITERS_FULL: &str = "REVISION_WAITERS_FULL";
/// Reasons of a hierarchy attach refused (code FAILED_PRECONDITION): the parent is the child,
/// the child already has a parent, or the child is an ancestor of the parent. HTTP 400, as
/// the seed's `POST /resources/hierarchy/v1` documents for all three.
pub const SELF_PARENT: &str = "SELF_PARENT";
pub const ALREADY_HAS_PARENT: &str = "ALREADY_HAS_PARENT";
pub const CYCLE: &str = "CYCLE";
/// Reason of an audit-log read (list or export) refused because the service records no audit
/// entries (`audit_enabled = false`; code FAILED_PRECONDITION). HTTP 409: the request is fine,
/// the service's configuration conflicts with it.
pub const AUDIT_DISABLED: &str = "AUDIT_DISABLED";
/// Reason of a feature update refused because it would change a metered feature's aggregation,
/// usage period or type (code FAILED_PRECONDITION, with the field): usage already counted
/// would be read under other rules. HTTP 412.
pub const METERING_IMMUTABLE: &str = "METERING_IMMUTABLE";
/// Reasons of a reservation's commit or release refused (code FAILED_PRECONDITION): its hold
/// expired, or it was already committed or released. HTTP 409: the request is fine, the
/// reservation's state conflicts with it.
pub const RESERVATION_EXPIRED: &str = "RESERVATION_EXPIRED";
pub const RESERVATION_SETTLED: &str = "RESERVATION_SETTLED";
/// Reason of a reservation refused because its meter holds as many live reservations as it
/// may (code RESOURCE_EXHAUSTED): retry once some are committed, released or expired.
pub const TOO_MANY_HOLDS: &str = "TOO_MANY_HOLDS";
/// Reason of a credit grant or meter reset refused because the account draws on an
/// ancestor's pool for the feature (code FAILED_PRECONDITION): credit or reset the pool's
/// owner, which the message names. HTTP 409: the request is fine, the hierarchy conflicts.
pub const METER_POOLED: &str = "METER_POOLED";
/// Reason of a credit grant with a `userId` refused because that user has no meter of its own
/// for the feature (its own grants do not allocate it; code FAILED_PRECONDITION): the user
/// draws on the account's meter, so credit the account. HTTP 409, as `METER_POOLED`.
pub const NO_USER_METER: &str = "NO_USER_METER";

/// The HTTP status that answers a gRPC code carrying a service's typed `reason` (empty when
/// none): the code's status, except where a reason is finer than its code.
pub fn http_status_for(code: Code, reason: &str) -> StatusCode {
    match (code, reason) {
        (Code::ResourceExhausted, STORAGE_FULL) => StatusCode::INSUFFICIENT_STORAGE,
        // A key sent again with another request conflicts with the stored one, as an
        // existing ID does; the reason tells the two apart.
        (Code::FailedPrecondition, KEY_REUSED) => StatusCode::CONFLICT,
        (Code::FailedPrecondition, AUDIT_DISABLED) => StatusCode::CONFLICT,
        (
            Code::FailedPrecondition,
            RESERVATION_EXPIRED | RESERVATION_SETTLED | METER_POOLED | NO_USER_METER,
        ) => StatusCode::CONFLICT,
        (Code::FailedPrecondition, SELF_PARENT | ALREADY_HAS_PARENT | CYCLE) => {
            StatusCode::BAD_REQUEST
        }
        _ => http_status(code),
    }
}

/// The HTTP status that answers a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code that best describes an HTTP status (for errors raised in the gateway itself).
pub fn grpc_code(status: StatusCode) -> Code {
    match status.as_u16() {
        200..=299 => Code::Ok,
        400 | 405 | 411 | 413 | 414 | 415 | 422 | 431 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        507 => Code::ResourceExhausted,
        504 | 408 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// A stable, machine-readable name for a code, used in REST error bodies.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_4xx_and_outages_are_503_or_504() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn a_full_disk_is_507_and_other_exhaustion_stays_429() {
        assert_eq!(
            http_status_for(Code::ResourceExhausted, STORAGE_FULL),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            http_status_for(Code::ResourceExhausted, ""),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status_for(Code::Unavailable, STORAGE_FAILED),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status_for(Code::NotFound, STORAGE_FULL),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            grpc_code(StatusCode::INSUFFICIENT_STORAGE),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn a_reused_idempotency_key_is_409_and_other_preconditions_stay_412() {
        assert_eq!(
            http_status_for(Code::FailedPrecondition, KEY_REUSED),
            StatusCode::CONFLICT
        );
        assert_eq!(
            http_status_for(Code::FailedPrecondition, AUDIT_DISABLED),
            StatusCode::CONFLICT
        );
        assert_eq!(
            http_status_for(Code::FailedPrecondition, "GRANT_REVOKED"),
            StatusCode::PRECONDITION_FAILED
        );
    }

    #[test]
    fn the_two_directions_agree_on_the_common_codes() {
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
        ] {
            assert_eq!(grpc_code(http_status(code)), code, "{}", code_name(code));
        }
    }
}
