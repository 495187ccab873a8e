//! gRPC, one file per proto service: handlers decode the request, call a use-case of
//! [`crate::app`] and encode its answer. One mapping from the domain error to `tonic::Status`.

mod audit;
mod convert;
mod feed;
mod hierarchy;
mod membership;
mod migration;
mod tenant;

use prost::Message;
use tenantry_common::{
    CancellationToken,
    db::{StorageFault, StorageHealth},
    grpc::{Services, mark_storage_fault},
};
use tenantry_proto::{
    audit::v1::audit_service_server::AuditServiceServer,
    common::v1::{ErrorDetails, FieldViolation, PageInfo},
    tenant::v1::{
        change_feed_service_server::ChangeFeedServiceServer,
        hierarchy_service_server::HierarchyServiceServer,
        membership_service_server::MembershipServiceServer,
        migration_service_server::MigrationServiceServer,
        tenant_service_server::TenantServiceServer,
    },
};
use tonic::{Code, Status};

use crate::{
    app::Engine,
    domain::{Error, Idempotency, Page},
    storage::Store,
    workers::Workers,
};

/// The state every handler shares.
#[derive(Clone, Debug)]
pub struct Handlers {
    app: Engine<Store>,
    /// Feed streams end when the service stops.
    shutdown: CancellationToken,
    /// The gRPC message limit: list responses stop early to stay under it.
    max_message_bytes: usize,
}

/// The tenant service's gRPC services, ready for [`tenantry_common::grpc::serve`].
pub fn services(
    store: &Store,
    workers: &Workers,
    shutdown: &CancellationToken,
    storage: StorageHealth,
    max_message_bytes: usize,
) -> Services {
    let h = Handlers {
        app: Engine::new(store.clone(), workers.clone()),
        shutdown: shutdown.clone(),
        max_message_bytes,
    };
    Services::new()
        .storage(storage, store.connection().clone())
        .add(
            TenantServiceServer::new(h.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add(
            HierarchyServiceServer::new(h.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add(
            MembershipServiceServer::new(h.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add(
            MigrationServiceServer::new(h.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add(
            AuditServiceServer::new(h.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .add(
            ChangeFeedServiceServer::new(h)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
}

/// Room left in a list response for everything but its items (page info, framing).
const RESPONSE_HEADROOM: usize = 1_024;

/// How many of `items`, from the first, fit in one response under the message limit: a page
/// stops early by size (its `has_next` then says more follow), so a list of large accounts
/// never fails on the limit. At least one, so a reader always moves on (the write-side limits
/// keep one account well under the message limit).
fn fitting<T: Message>(items: &[T], max_message_bytes: usize) -> usize {
    let budget = max_message_bytes.saturating_sub(RESPONSE_HEADROOM);
    let mut used = 0_usize;
    for (i, item) in items.iter().enumerate() {
        let len = item.encoded_len();
        // Tag, length prefix, body.
        used += 1 + prost::length_delimiter_len(len) + len;
        if used > budget {
            return i.max(1);
        }
    }
    items.len()
}

impl Handlers {
    /// A page encoded for a list response, stopped early by size (see [`fitting`]): its page
    /// info then says more follow.
    fn fitting_page<T, P: Message>(
        &self,
        mut page: Page<T>,
        encode: impl Fn(&T) -> P,
    ) -> (Vec<P>, Option<PageInfo>) {
        let mut items: Vec<P> = page.items.iter().map(encode).collect();
        let keep = fitting(&items, self.max_message_bytes);
        items.truncate(keep);
        page.items.truncate(keep);
        (items, Some(convert::page_info(&page)))
    }
}

fn status_with_details(code: Code, message: String, details: ErrorDetails) -> Status {
    Status::with_details(code, message, details.encode_to_vec().into())
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let reason = err.reason().to_owned();
        let details = |field_violations| ErrorDetails {
            reason: reason.clone(),
            field_violations,
            item_errors: vec![],
        };
        match err {
            Error::InvalidArgument { field, message } => status_with_details(
                Code::InvalidArgument,
                format!("{field}: {message}"),
                details(vec![FieldViolation {
                    field,
                    description: message,
                }]),
            ),
            Error::NotFound { message, .. } => {
                status_with_details(Code::NotFound, message, details(vec![]))
            }
            Error::AlreadyExists { message, .. } => {
                status_with_details(Code::AlreadyExists, message, details(vec![]))
            }
            Error::FailedPrecondition { message, .. } => {
                status_with_details(Code::FailedPrecondition, message, details(vec![]))
            }
            Error::PermissionDenied(message) => {
                status_with_details(Code::PermissionDenied, message, details(vec![]))
            }
            Error::Unavailable(message) => {
                status_with_details(Code::Unavailable, message, details(vec![]))
            }
            Error::StorageFull(message) => {
                let mut status =
                    status_with_details(Code::ResourceExhausted, message, details(vec![]));
                mark_storage_fault(&mut status, StorageFault::Full);
                status
            }
            Error::StorageFailed(message) => {
                let mut status = status_with_details(Code::Unavailable, message, details(vec![]));
                mark_storage_fault(&mut status, StorageFault::Failed);
                status
            }
            Error::Internal { context, source } => {
                let mut chain = source.to_string();
                let mut next = source.source();
                while let Some(cause) = next {
                    chain.push_str(": ");
                    chain.push_str(&cause.to_string());
                    next = cause.source();
                }
                tracing::error!(context = %context, error = %chain, "internal error");
                Status::internal("internal error; the tenant service logged the details")
            }
        }
    }
}

/// Shorthand for an INVALID_ARGUMENT about `field`.
fn invalid(field: impl Into<String>, message: impl Into<String>) -> Status {
    Status::from(Error::invalid(field, message))
}

/// A create's idempotency key (taken out of the request) in the scope of its principal, with
/// the fingerprint of the rest of the request; INVALID_ARGUMENT when malformed.
fn idempotency<M: Message>(
    principal: Option<&str>,
    key: Option<String>,
    without_key: &M,
) -> Result<Option<Idempotency>, Status> {
    let Some(key) = key else { return Ok(None) };
    Idempotency::new(principal, key, &without_key.encode_to_vec())
        .map(Some)
        .map_err(|_| Error::key_invalid().into())
}
