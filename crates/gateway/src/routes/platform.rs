//! Liveness, readiness and `POST /auth/vendor`.

use std::collections::BTreeMap;

use axum::{Json, extract::State, response::IntoResponse};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::IssueError,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(vendor_token))
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Readiness: each backing service's gRPC health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Service → `SERVING`, `NOT_SERVING`, `UNKNOWN` or `UNREACHABLE`.
    pub services: BTreeMap<String, String>,
}

/// Environment credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VendorCredentials {
    pub client_id: String,
    pub secret: String,
}

/// An environment token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VendorToken {
    /// Send as `authorization: Bearer <token>`.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "Platform",
    responses((status = 200, body = Health)))]
#[allow(clippy::unused_async)] // axum handlers are async by contract
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Both services answer gRPC health SERVING.
#[utoipa::path(get, path = "/readyz", tag = "Platform",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (tenant, entitlement) = tokio::join!(
        probe(&state, state.tenant.clone()),
        probe(&state, state.entitlement.clone())
    );
    let ready = tenant == "SERVING" && entitlement == "SERVING";
    let services = BTreeMap::from([
        ("tenant".to_owned(), tenant.to_owned()),
        ("entitlement".to_owned(), entitlement.to_owned()),
    ]);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" }.to_owned(),
            services,
        }),
    )
}

async fn probe(state: &AppState, channel: tenantry_common::grpc::ClientChannel) -> &'static str {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(state.probe_timeout, call).await {
        Ok(Ok(response)) => match response.into_inner().status() {
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
            ServingStatus::Unknown | ServingStatus::ServiceUnknown => "UNKNOWN",
        },
        Ok(Err(_)) | Err(_) => "UNREACHABLE",
    }
}

/// Exchange environment credentials for an environment token (management routes).
///
/// After 5 wrong secrets in a row for one client ID, that client ID is refused with 429
/// (`reason: CLIENT_LOCKED_OUT`, `retry-after`) for 1 s, then 2 s, 4 s, … up to 5 minutes —
/// even with the right secret, until the lock ends. A success resets the count.
#[utoipa::path(post, path = "/auth/vendor", tag = "Platform",
    request_body = VendorCredentials,
    responses((status = 200, body = VendorToken), (status = 429, body = ErrorBody),
        (status = "4XX", body = ErrorBody)))]
#[allow(clippy::unused_async)] // axum handlers are async by contract
async fn vendor_token(
    State(state): State<AppState>,
    ApiJson(b): ApiJson<VendorCredentials>,
) -> Result<Json<VendorToken>, ApiError> {
    match state.auth.issue(&b.client_id, &b.secret) {
        Ok((token, expires_in)) => Ok(Json(VendorToken { token, expires_in })),
        Err(IssueError::Invalid) => Err(ApiError::unauthenticated("invalid client ID or secret")),
        Err(IssueError::LockedOut(wait)) => Err(crate::auth::locked_out(wait)),
        Err(IssueError::Signing) => Err(ApiError::internal()),
    }
}
