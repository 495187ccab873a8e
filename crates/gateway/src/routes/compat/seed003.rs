//! Seed 003: `GET /v1/entitlements/{user_id}`, a user's grants as `{"grants": [...]}`, errors
//! as `{"error", "message"}`.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use serde::Serialize;
use serde_json::Value as Json_;
use tenantry_proto::entitlement::v1::{ListUserGrantsRequest, UserGrantStatus};
use utoipa::ToSchema;

use crate::{
    auth::{Caller, Principal, scope},
    convert::{opt_struct_to_json, opt_timestamp},
    error::ApiError,
    state::{AppState, grpc},
};

/// A grant in the seed-003 schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct Grant {
    pub id: String,
    pub external_id: String,
    pub user_id: String,
    pub product_key: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub granted_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub source: String,
    pub brand_id: String,
    #[schema(value_type = Object)]
    pub metadata: Json_,
    pub granted_by: String,
    pub created_at: String,
    pub updated_at: String,
}

/// `{"grants": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantsResponse {
    pub grants: Vec<Grant>,
}

/// Seed-003 error: `{"error", "message"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedError {
    pub error: String,
    pub message: String,
}

/// An [`ApiError`] rendered in the seed-003 shape.
pub struct Seed003Error(pub(super) ApiError);

impl From<ApiError> for Seed003Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<tonic::Status> for Seed003Error {
    fn from(s: tonic::Status) -> Self {
        Self(ApiError::from(s))
    }
}

impl IntoResponse for Seed003Error {
    fn into_response(self) -> Response {
        let error = if self.0.status == http::StatusCode::BAD_REQUEST {
            "validation_error".to_owned()
        } else {
            self.0.body.error.to_ascii_lowercase()
        };
        let body = SeedError {
            error,
            message: self.0.body.message,
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

/// List a user's entitlement grants (seed 003). A user token reads its own grants within its
/// account (or the reachable account `frontegg-tenant-id` names); an environment token any
/// user's in every account, or in the one `frontegg-tenant-id` names.
#[utoipa::path(get, path = "/v1/entitlements/{user_id}", tag = "Compatibility",
    params(("user_id" = String, Path),
        ("frontegg-tenant-id" = Option<String>, Header, description = "Only this account's grants; with a user token it must be reachable (else 403)")),
    responses((status = 200, body = GrantsResponse), (status = 400, body = SeedError),
        (status = 401, body = SeedError), (status = 403, body = SeedError)),
    security(("bearer" = [])))]
pub(super) async fn user_grants(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<GrantsResponse>, Seed003Error> {
    let Caller(p) = caller?;
    let Path(user_id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let header = scope::header_account(&state, &p, &headers).await?;
    let tenant_id = match &p {
        Principal::Environment { .. } => header,
        Principal::User {
            user_id: own,
            tenant_id,
            ..
        } => {
            if *own != user_id {
                return Err(ApiError::forbidden().into());
            }
            Some(header.unwrap_or_else(|| tenant_id.clone()))
        }
    };
    let out = state
        .grants()
        .list_user_grants(grpc(
            &p,
            ListUserGrantsRequest {
                user_id,
                tenant_id,
                at: None,
            },
        ))
        .await?
        .into_inner();
    let grants = out
        .grants
        .into_iter()
        .map(|g| Grant {
            status: match g.status() {
                UserGrantStatus::Revoked => "revoked",
                UserGrantStatus::Expired => "expired",
                UserGrantStatus::Active | UserGrantStatus::Unspecified => "active",
            }
            .to_owned(),
            id: g.id,
            external_id: g.external_id,
            user_id: g.user_id,
            product_key: g.product_key,
            granted_at: opt_timestamp(g.granted_at).unwrap_or_default(),
            expires_at: opt_timestamp(g.expires_at),
            revoked_at: opt_timestamp(g.revoked_at),
            source: g.source,
            brand_id: g.brand_id,
            metadata: opt_struct_to_json(g.metadata),
            granted_by: g.granted_by,
            created_at: opt_timestamp(g.created_at).unwrap_or_default(),
            updated_at: opt_timestamp(g.updated_at).unwrap_or_default(),
        })
        .collect();
    Ok(Json(GrantsResponse { grants }))
}
