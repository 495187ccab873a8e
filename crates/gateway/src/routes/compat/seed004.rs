//! Seed 004: `GET /tenants/{tenant_id}/entitlements`, an account's effective entitlements in
//! Cloudflare's `{success, errors, messages, result}` envelope, error codes ≥ 1000.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Value as Json_, json};
use tenantry_proto::entitlement::v1::GetAccountEntitlementsRequest;
use utoipa::ToSchema;

use crate::{
    auth::{Caller, Principal, scope},
    error::ApiError,
    routes::rules::{AllocationJson, allocation_json},
    state::{AppState, grpc},
};

/// `{"allocation", "feature": {"key"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomEntitlement {
    pub allocation: AllocationJson,
    #[schema(value_type = Object)]
    pub feature: Json_,
}

/// Cloudflare's `TenantEntitlements`: the fixed keys (from features of those keys, else off or
/// zero) and every effective feature in `custom_entitlements`. `max_count` values are numbers;
/// an unlimited one is 9007199254740991 (`Number.MAX_SAFE_INTEGER`). A metered feature is a
/// `max_count` of what remains of the period's amount (its meter's balance).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantEntitlements {
    pub allow_add_subdomain: AllocationJson,
    pub allow_auto_accept_invites: AllocationJson,
    pub cname_setup_allowed: AllocationJson,
    pub custom_entitlements: Vec<CustomEntitlement>,
    pub mhs_certificate_count: AllocationJson,
    pub partial_setup_allowed: AllocationJson,
}

/// One `messages`/`errors` entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseInfo {
    /// ≥ 1000.
    pub code: u32,
    pub message: String,
}

/// The envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope {
    pub success: bool,
    pub errors: Vec<ResponseInfo>,
    pub messages: Vec<ResponseInfo>,
    pub result: Option<TenantEntitlements>,
}

/// An [`ApiError`] rendered in the envelope; the code is 1000 + the HTTP status.
pub struct Seed004Error(pub(super) ApiError);

impl From<ApiError> for Seed004Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<tonic::Status> for Seed004Error {
    fn from(s: tonic::Status) -> Self {
        Self(ApiError::from(s))
    }
}

impl IntoResponse for Seed004Error {
    fn into_response(self) -> Response {
        let body = Envelope {
            success: false,
            errors: vec![ResponseInfo {
                code: 1000 + u32::from(self.0.status.as_u16()),
                message: self.0.body.message,
            }],
            messages: Vec::new(),
            result: None,
        };
        let mut response = (self.0.status, Json(body)).into_response();
        if let Some(secs) = self.0.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}

/// What an unlimited `max_count` reads as in the envelope, whose `value` is a number:
/// JavaScript's `Number.MAX_SAFE_INTEGER`, so `used < value` holds for any count.
pub const UNLIMITED: u64 = (1 << 53) - 1;

/// Seed 004's allocation: `max_count` values are always numbers (unlimited is [`UNLIMITED`]).
fn seed_004_allocation(a: AllocationJson) -> AllocationJson {
    if a.kind == "max_count" && a.value.is_null() {
        AllocationJson {
            kind: a.kind,
            value: json!(UNLIMITED),
        }
    } else {
        a
    }
}

/// A fixed key of the envelope: the feature of that key when it has the seed's type for it,
/// else off (`bool`) or zero (`max_count`).
fn fixed(entries: &[CustomEntitlement], key: &str, max_count: bool) -> AllocationJson {
    let kind = if max_count { "max_count" } else { "bool" };
    entries
        .iter()
        .find(|e| {
            e.feature.get("key").and_then(Json_::as_str) == Some(key) && e.allocation.kind == kind
        })
        .map_or_else(
            || AllocationJson {
                kind: kind.to_owned(),
                value: if max_count { json!(0) } else { json!(false) },
            },
            |e| AllocationJson {
                kind: e.allocation.kind.clone(),
                value: e.allocation.value.clone(),
            },
        )
}

/// List an account's effective entitlements (seed 004, Cloudflare shape). Authenticates with a
/// bearer token or, as the seed does, with `X-Auth-Email` + `X-Auth-Key`: an environment
/// credential's client ID and secret (checked as `POST /auth/vendor` checks them, with the
/// same lockout). Every error, including those of the gateway's layers (401, 408, 413, 429,
/// 503, 504), comes in the envelope.
#[utoipa::path(get, path = "/tenants/{tenant_id}/entitlements", tag = "Compatibility",
    params(("tenant_id" = String, Path),
        ("frontegg-tenant-id" = Option<String>, Header, description = "With a user token: must name an account the token reaches (else 403)")),
    responses((status = 200, body = Envelope), (status = "4XX", body = Envelope),
        (status = "5XX", body = Envelope)),
    security(("bearer" = []), ("api_email" = [], "api_key" = [])))]
pub(super) async fn tenant_entitlements(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Envelope>, Seed004Error> {
    let Caller(p) = caller?;
    let Path(tenant_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    scope::header_account(&state, &p, &headers).await?;
    scope::ensure_account(&state, &p, &tenant_id).await?;
    let user_id = match &p {
        Principal::User { user_id, .. } => Some(user_id.clone()),
        Principal::Environment { .. } => None,
    };
    let out = state
        .checks()
        .get_account_entitlements(grpc(
            &p,
            GetAccountEntitlementsRequest {
                tenant_id,
                user_id,
                attributes: None,
                at: None,
                min_revision: 0,
            },
        ))
        .await?
        .into_inner();
    let custom: Vec<CustomEntitlement> = out
        .entitlements
        .into_iter()
        .map(|e| CustomEntitlement {
            allocation: match e.meter {
                // A metered feature: `max_count` with what remains of this period's amount.
                Some(meter) => AllocationJson {
                    kind: "max_count".to_owned(),
                    value: meter.balance.map_or(json!(UNLIMITED), |b| json!(b.max(0))),
                },
                None => seed_004_allocation(allocation_json(e.allocation)),
            },
            feature: json!({ "key": e.feature_key }),
        })
        .collect();
    let result = TenantEntitlements {
        allow_add_subdomain: fixed(&custom, "allow_add_subdomain", false),
        allow_auto_accept_invites: fixed(&custom, "allow_auto_accept_invites", false),
        cname_setup_allowed: fixed(&custom, "cname_setup_allowed", false),
        mhs_certificate_count: fixed(&custom, "mhs_certificate_count", true),
        partial_setup_allowed: fixed(&custom, "partial_setup_allowed", false),
        custom_entitlements: custom,
    };
    Ok(Json(Envelope {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result: Some(result),
    }))
}
