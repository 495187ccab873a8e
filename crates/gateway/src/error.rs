//! The one error shape of the gateway (Frontegg's NestJS style):
//! `{"statusCode": 404, "error": "NOT_FOUND", "message": "...", "reason"?, "fieldViolations"?,
//! "itemErrors"?}`. `error` is the stable code name from `tenantry_common::error::code_name`;
//! `reason`, when present, the service's finer machine-readable code. Only the seed-003 and
//! seed-004 compatibility routes answer in their own shapes (see `routes::compat`).

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode};
use prost::Message;
use serde::Serialize;
use tenantry_common::{
    error::{REVISION_WAITERS_FULL, STORAGE_FAILED, code_name, grpc_code, http_status_for},
    grpc,
};
use tenantry_proto::common::v1::ErrorDetails;
use tonic::Code;
use utoipa::ToSchema;

/// Every error the gateway answers with.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The HTTP status, repeated in the body.
    pub status_code: u16,
    /// Stable code: `INVALID_ARGUMENT`, `UNAUTHENTICATED`, `PERMISSION_DENIED`, `NOT_FOUND`,
    /// `ALREADY_EXISTS`, `FAILED_PRECONDITION`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `INTERNAL`, ...
    pub error: String,
    /// What went wrong, for a human.
    pub message: String,
    /// Finer machine-readable code from the service, e.g. `ACCOUNT_NOT_FOUND`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Invalid request fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub field_violations: Vec<FieldViolation>,
    /// Refused items of a batch, by zero-based index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub item_errors: Vec<ItemError>,
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct FieldViolation {
    /// The field's path in the request, camelCase.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// One refused item of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ItemError {
    /// Zero-based position in the request.
    pub index: u32,
    /// The item's ID when it has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The item's field at fault, camelCase; empty when the whole item is.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// Stable machine-readable code.
    pub reason: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// An error on its way to becoming a response.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for `retry-after` (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error raised by the gateway itself.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                status_code: status.as_u16(),
                error: code_name(grpc_code(status)).to_owned(),
                message: message.into(),
                reason: None,
                field_violations: Vec::new(),
                item_errors: Vec::new(),
            },
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A request field the gateway itself found invalid.
    pub fn invalid_field(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut e = Self::bad_request(format!("`{field}`: {description}"));
        e.body.field_violations.push(FieldViolation {
            field: field.to_owned(),
            description,
        });
        e
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// The one refusal for "valid token, not allowed here", whether or not the target exists.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "the token does not allow this operation on this account",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    pub fn with_reason(mut self, reason: &str) -> Self {
        self.body.reason = Some(reason.to_owned());
        self
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        // A hop that broke (e.g. the service was killed mid-call) is UNAVAILABLE, not a bug.
        let details = if status.details().is_empty() {
            None
        } else {
            ErrorDetails::decode(status.details()).ok()
        };
        let code = grpc::caller_code(&status);
        // No service answers OUT_OF_RANGE about a caller's input without ErrorDetails: without
        // them it is tonic's message-size limit, our failure, and its text (sizes, limits) is not
        // for callers.
        let code = if code == Code::OutOfRange && details.is_none() {
            Code::Internal
        } else {
            code
        };
        let reason = details.as_ref().map_or("", |d| d.reason.as_str());
        let http = http_status_for(code, reason);
        let message = match code {
            // Internal failures are logged by the service; their text is not for callers.
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::warn!(grpc.code = code_name(code), error = %status.message(), "service error");
                "internal error".to_owned()
            }
            // A failed disk is named: the operator must act, retrying alone will not help.
            Code::Unavailable if reason == STORAGE_FAILED => {
                tracing::warn!(error = %status.message(), "service storage failed");
                status.message().to_owned()
            }
            // The client's own request to wait met a full waiting room: its text says so.
            Code::Unavailable if reason == REVISION_WAITERS_FULL => status.message().to_owned(),
            Code::Unavailable => {
                tracing::warn!(error = %status.message(), "service unavailable");
                "a backing service is unavailable; retry later".to_owned()
            }
            Code::DeadlineExceeded => "the backing service did not answer in time".to_owned(),
            Code::Ok
            | Code::Cancelled
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Unauthenticated => status.message().to_owned(),
        };
        let mut body = ErrorBody {
            status_code: http.as_u16(),
            error: code_name(code).to_owned(),
            message,
            reason: None,
            field_violations: Vec::new(),
            item_errors: Vec::new(),
        };
        if let Some(details) = details {
            if !details.reason.is_empty() {
                body.reason = Some(details.reason);
            }
            body.field_violations = details
                .field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: camel_path(&v.field),
                    description: v.description,
                })
                .collect();
            body.item_errors = details
                .item_errors
                .into_iter()
                .map(|i| ItemError {
                    index: i.index,
                    id: i.id,
                    field: camel_path(&i.field),
                    reason: i.reason,
                    message: i.message,
                })
                .collect();
        }
        // The waiters of a replica are gone within its revision wait (2 s).
        let retry_after = (code == Code::Unavailable
            && body.reason.as_deref() == Some(REVISION_WAITERS_FULL))
        .then_some(1);
        Self {
            status: http,
            body,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Kept with the response, so a compatibility surface can answer it in its own shape
        // (`routes::compat::reshape`), whichever layer made it.
        let kept = self.clone();
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(kept);
        response
    }
}

/// `account.tenant_id` → `account.tenantId`: proto field paths in REST spelling.
pub fn camel_path(path: &str) -> String {
    path.split('.')
        .map(|segment| {
            let mut out = String::with_capacity(segment.len());
            let mut upper = false;
            for c in segment.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_hop_is_503_but_a_server_sent_internal_error_stays_500() {
        // What tonic makes of a connection that died under a call: Unknown, with the cause.
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert_eq!(broken.code(), Code::Unknown);
        let e = ApiError::from(broken);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.body.error, "UNAVAILABLE");

        let e = ApiError::from(tonic::Status::internal("a bug in the service"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::from(tonic::Status::unknown("sent by the server"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn storage_faults_are_507_or_503_naming_the_cause() {
        let with_reason = |code, message: &str, reason: &str| {
            let details = ErrorDetails {
                reason: reason.into(),
                field_violations: vec![],
                item_errors: vec![],
            };
            tonic::Status::with_details(code, message, details.encode_to_vec().into())
        };
        let e = ApiError::from(with_reason(
            Code::ResourceExhausted,
            "the tenant database's storage is full; nothing was written",
            "STORAGE_FULL",
        ));
        assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(e.body.status_code, 507);
        assert_eq!(e.body.reason.as_deref(), Some("STORAGE_FULL"));
        assert!(e.body.message.contains("storage is full"));
        let e = ApiError::from(with_reason(
            Code::Unavailable,
            "the tenant database's storage failed (I/O error); nothing was written",
            "STORAGE_FAILED",
        ));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.body.message.contains("storage failed"), "{e:?}");
        // Other exhaustion keeps its 429; other outages their generic text.
        let e = ApiError::from(with_reason(Code::ResourceExhausted, "quota", "QUOTA"));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let e = ApiError::from(with_reason(
            Code::Unavailable,
            "db at 10.0.0.1",
            "UNAVAILABLE",
        ));
        assert!(!e.body.message.contains("10.0.0.1"));
    }

    #[test]
    fn a_message_size_failure_is_an_internal_error_without_its_text() {
        // What tonic answers when a response exceeds the message limit.
        let e = ApiError::from(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
        ));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body.message, "internal error");
        // A service's own OUT_OF_RANGE about the caller's input carries details and stays 400.
        let details = ErrorDetails {
            reason: "PAST_THE_END".into(),
            ..ErrorDetails::default()
        };
        let e = ApiError::from(tonic::Status::with_details(
            Code::OutOfRange,
            "offset past the end",
            details.encode_to_vec().into(),
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn grpc_codes_map_through_the_common_table() {
        let e = ApiError::from(tonic::Status::unavailable("connection refused to 10.0.0.1"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.body.error, "UNAVAILABLE");
        assert!(!e.body.message.contains("10.0.0.1"));
        let e = ApiError::from(tonic::Status::deadline_exceeded("slow"));
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        let e = ApiError::from(tonic::Status::internal("SELECT * FROM secrets"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body.message, "internal error");
    }

    #[test]
    fn error_details_become_camel_case_violations_and_items() {
        let details = ErrorDetails {
            reason: "BATCH_INVALID".into(),
            field_violations: vec![tenantry_proto::common::v1::FieldViolation {
                field: "account.tenant_id".into(),
                description: "has whitespace".into(),
            }],
            item_errors: vec![tenantry_proto::common::v1::ItemError {
                index: 2,
                id: String::new(),
                field: "expires_at".into(),
                reason: "EXPIRY_BEFORE_START".into(),
                message: "expiry before start".into(),
            }],
        };
        let status = tonic::Status::with_details(
            Code::InvalidArgument,
            "bad batch",
            details.encode_to_vec().into(),
        );
        let e = ApiError::from(status);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.reason.as_deref(), Some("BATCH_INVALID"));
        assert_eq!(e.body.field_violations[0].field, "account.tenantId");
        assert_eq!(e.body.item_errors[0].field, "expiresAt");
        assert_eq!(e.body.item_errors[0].index, 2);
    }
}
