//! The gRPC layer, one file per proto service: decode → call a use-case of `app` → encode.
//! Handlers hold no rules and no queries; every error passes through the one
//! `From<DomainError> for Status` below.

mod audit;
pub mod checks;
pub mod convert;
mod features;
mod flags;
mod grants;
mod metering;
mod plans;
mod routes;
mod stream;
mod vendor;
mod webhooks;

use std::sync::Arc;

use prost::Message;
use tenantry_common::{
    db::StorageFault,
    error::{
        AUDIT_DISABLED, METER_POOLED, METERING_IMMUTABLE, NO_USER_METER, RESERVATION_EXPIRED,
        RESERVATION_SETTLED, REVISION_WAITERS_FULL, STORAGE_FAILED, STORAGE_FULL, TOO_MANY_HOLDS,
    },
    grpc::{Services, mark_storage_fault, principal},
    idempotency::Idempotency,
};
use tenantry_proto::audit::v1::audit_service_server::AuditServiceServer;
use tenantry_proto::common::v1::{ErrorDetails, FieldViolation, ItemError, PageInfo, PageRequest};
use tenantry_proto::entitlement::v1::{
    entitlement_service_server::EntitlementServiceServer,
    feature_flag_service_server::FeatureFlagServiceServer,
    feature_service_server::FeatureServiceServer, grant_service_server::GrantServiceServer,
    index_stream_service_server::IndexStreamServiceServer,
    metering_service_server::MeteringServiceServer, plan_service_server::PlanServiceServer,
    route_service_server::RouteServiceServer,
    vendor_snapshot_service_server::VendorSnapshotServiceServer,
    webhook_service_server::WebhookServiceServer,
};
use tonic::{Code, Status};

use crate::Engine;
use crate::app::listing::{self, Listed};
use crate::domain::DomainError;
use crate::domain::metering::ReservationRefusal;

/// Items a refused batch's message lists (the details carry every one): the message travels in
/// the gRPC trailers too, and a 1,000-item list of them broke the hop (503, not 400).
const ITEMS_IN_MESSAGE: usize = 10;

/// One handler type implements every entitlement service.
#[derive(Debug, Clone)]
pub struct Handler {
    engine: Arc<Engine>,
}

pub fn services(
    engine: Arc<Engine>,
    webhooks: Arc<crate::app::webhooks::Webhooks<crate::storage::Store>>,
    max_message_bytes: usize,
) -> Services {
    let (conn, storage) = (
        engine.store().connection().clone(),
        engine.storage_health().clone(),
    );
    let h = Handler { engine };
    macro_rules! sized {
        ($server:ident) => {
            $server::new(h.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes)
        };
    }
    Services::new()
        .storage(storage, conn)
        .add(sized!(AuditServiceServer))
        .add(sized!(FeatureServiceServer))
        .add(sized!(PlanServiceServer))
        .add(sized!(FeatureFlagServiceServer))
        .add(sized!(RouteServiceServer))
        .add(sized!(GrantServiceServer))
        .add(sized!(MeteringServiceServer))
        .add(sized!(VendorSnapshotServiceServer))
        .add(sized!(IndexStreamServiceServer))
        .add(
            WebhookServiceServer::new(webhooks::WebhookHandler::new(webhooks))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add(
            EntitlementServiceServer::new(checks::CheckService::new(h.engine))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
}

fn with_details(code: Code, message: String, details: ErrorDetails) -> Status {
    Status::with_details(code, message, details.encode_to_vec().into())
}

fn reason_for_field(field: &str) -> String {
    let mut reason = String::new();
    for (i, c) in field.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            reason.push('_');
        }
        if c.is_ascii_alphanumeric() {
            reason.push(c.to_ascii_uppercase());
        } else if !reason.ends_with('_') {
            reason.push('_');
        }
    }
    format!("INVALID_{}", reason.trim_end_matches('_'))
}

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        let plain = |reason: &str| ErrorDetails {
            reason: reason.to_owned(),
            field_violations: vec![],
            item_errors: vec![],
        };
        match err {
            DomainError::InvalidArgument { field, message } => with_details(
                Code::InvalidArgument,
                format!("invalid {field}: {message}"),
                ErrorDetails {
                    reason: reason_for_field(&field),
                    field_violations: vec![FieldViolation {
                        field,
                        description: message,
                    }],
                    item_errors: vec![],
                },
            ),
            DomainError::InvalidItems(items) => {
                let count = items.len();
                let listed = items
                    .iter()
                    .take(ITEMS_IN_MESSAGE)
                    .map(|e| format!("[{}] {}: {}", e.index, e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let more = count.saturating_sub(ITEMS_IN_MESSAGE);
                let message = if more == 0 {
                    format!("{count} invalid item(s); nothing was written: {listed}")
                } else {
                    format!(
                        "{count} invalid item(s); nothing was written: {listed}; and {more} more"
                    )
                };
                with_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails {
                        reason: "INVALID_BATCH_ITEMS".into(),
                        field_violations: vec![],
                        item_errors: items
                            .into_iter()
                            .map(|e| ItemError {
                                index: e.index as u32,
                                id: String::new(),
                                reason: reason_for_field(&e.field),
                                field: e.field,
                                message: e.message,
                            })
                            .collect(),
                    },
                )
            }
            DomainError::NotFound { kind, id } => with_details(
                Code::NotFound,
                format!("{kind} {id} not found"),
                plain(&format!(
                    "{}_NOT_FOUND",
                    kind.to_ascii_uppercase().replace(' ', "_")
                )),
            ),
            DomainError::AlreadyExists { kind, id } => with_details(
                Code::AlreadyExists,
                format!("{kind} {id} already exists"),
                plain(&format!(
                    "{}_ALREADY_EXISTS",
                    kind.to_ascii_uppercase().replace(' ', "_")
                )),
            ),
            DomainError::Conflict { kind, field } => with_details(
                Code::AlreadyExists,
                format!("a {kind} with this {field} already exists"),
                ErrorDetails {
                    reason: format!(
                        "{}_ALREADY_EXISTS",
                        kind.to_ascii_uppercase().replace(' ', "_")
                    ),
                    field_violations: vec![FieldViolation {
                        field: field.to_owned(),
                        description: "already taken".to_owned(),
                    }],
                    item_errors: vec![],
                },
            ),
            DomainError::IdempotencyKeyTaken => with_details(
                Code::Unavailable,
                "a concurrent request with the same idempotency key is in progress; retry".into(),
                plain("UNAVAILABLE"),
            ),
            DomainError::FailedPrecondition(message) => with_details(
                Code::FailedPrecondition,
                message,
                plain("FAILED_PRECONDITION"),
            ),
            DomainError::MeteringImmutable { field } => {
                let message = DomainError::MeteringImmutable { field }.to_string();
                with_details(
                    Code::FailedPrecondition,
                    message.clone(),
                    ErrorDetails {
                        reason: METERING_IMMUTABLE.to_owned(),
                        field_violations: vec![FieldViolation {
                            field: field.to_owned(),
                            description: message,
                        }],
                        item_errors: vec![],
                    },
                )
            }
            DomainError::Reservation(refusal) => {
                let reason = match refusal {
                    ReservationRefusal::Expired => RESERVATION_EXPIRED,
                    ReservationRefusal::Settled(_) => RESERVATION_SETTLED,
                };
                let message = DomainError::Reservation(refusal).to_string();
                with_details(Code::FailedPrecondition, message, plain(reason))
            }
            e @ DomainError::MeterPooled { .. } => {
                with_details(Code::FailedPrecondition, e.to_string(), plain(METER_POOLED))
            }
            e @ DomainError::NoUserMeter { .. } => with_details(
                Code::FailedPrecondition,
                e.to_string(),
                plain(NO_USER_METER),
            ),
            DomainError::TooManyHolds { limit } => with_details(
                Code::ResourceExhausted,
                DomainError::TooManyHolds { limit }.to_string(),
                plain(TOO_MANY_HOLDS),
            ),
            DomainError::IdempotencyKeyReused(key) => with_details(
                Code::FailedPrecondition,
                format!("idempotency key {key} was already used for a different request"),
                plain(tenantry_common::idempotency::KEY_REUSED),
            ),
            DomainError::AuditDisabled => with_details(
                Code::FailedPrecondition,
                tenantry_common::audit::DISABLED_MESSAGE.to_owned(),
                plain(AUDIT_DISABLED),
            ),
            DomainError::PermissionDenied(message) => {
                with_details(Code::PermissionDenied, message, plain("PERMISSION_DENIED"))
            }
            DomainError::Unavailable(message) => {
                with_details(Code::Unavailable, message, plain("UNAVAILABLE"))
            }
            DomainError::RevisionWaitersFull { limit } => with_details(
                Code::Unavailable,
                format!(
                    "{limit} requests are already waiting for a revision this replica has not \
                     reached; retry shortly"
                ),
                plain(REVISION_WAITERS_FULL),
            ),
            DomainError::StorageFull(message) => {
                let mut status =
                    with_details(Code::ResourceExhausted, message, plain(STORAGE_FULL));
                mark_storage_fault(&mut status, StorageFault::Full);
                status
            }
            DomainError::StorageFailed(message) => {
                let mut status = with_details(Code::Unavailable, message, plain(STORAGE_FAILED));
                mark_storage_fault(&mut status, StorageFault::Failed);
                status
            }
            DomainError::Internal { message, source } => {
                let mut chain = message;
                let mut next: Option<&(dyn std::error::Error + 'static)> = source
                    .as_deref()
                    .map(|s| s as &(dyn std::error::Error + 'static));
                while let Some(cause) = next {
                    chain.push_str(": ");
                    chain.push_str(&cause.to_string());
                    next = cause.source();
                }
                tracing::error!(error = %chain, "internal error");
                Status::internal("internal error; the entitlement service logged the details")
            }
        }
    }
}

type Result<T> = std::result::Result<T, Status>;

/// The page a list asks for (default 10 items, at most 1,000).
fn page(page: Option<PageRequest>) -> std::result::Result<listing::PageRequest, DomainError> {
    let page = page.unwrap_or_default();
    listing::PageRequest::new(page.offset, page.limit)
}

fn page_info(page: listing::PageInfo) -> PageInfo {
    PageInfo {
        total_items: page.total,
        total_pages: page.total_pages(),
        has_next: page.has_next(),
    }
}

/// A listed page, encoded.
fn encode_page<T, U>(listed: Listed<T>, encode: impl FnMut(T) -> U) -> (Vec<U>, Option<PageInfo>) {
    let page = page_info(listed.page);
    (listed.items.into_iter().map(encode).collect(), Some(page))
}

/// A write's idempotency key in the scope of its caller (`principal`), with the fingerprint
/// of the request it came with (taken only when there is a key); INVALID_ARGUMENT when the
/// key breaks the rule both services share.
fn idempotency(
    principal: Option<&str>,
    key: Option<String>,
    fingerprint: impl FnOnce() -> String,
) -> std::result::Result<Option<Idempotency>, DomainError> {
    let Some(key) = key else { return Ok(None) };
    Idempotency::with_fingerprint(principal, key, fingerprint())
        .map(Some)
        .map_err(|rule| DomainError::invalid("idempotency_key", rule))
}

/// The fingerprint of a create request, without its idempotency key.
fn request_fingerprint<M: Message>(without_key: &M) -> String {
    crate::app::fingerprint(&without_key.encode_to_vec())
}

fn descending(order: i32) -> bool {
    order == tenantry_proto::common::v1::SortOrder::Desc as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_upper_snake_case() {
        assert_eq!(reason_for_field("expiresAt"), "INVALID_EXPIRES_AT");
        assert_eq!(
            reason_for_field("rules[0].conditions[1]"),
            "INVALID_RULES_0_CONDITIONS_1"
        );
    }

    #[test]
    fn internal_errors_are_generic() {
        let status = Status::from(DomainError::internal("db exploded: SELECT secret"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }
}
