//! Memberships, tag "Memberships": the users of an account and the accounts of a user.

use axum::{Json, extract::State, response::IntoResponse};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_proto::tenant::v1::{
    self as pb, AddMembershipRequest, ListAccountMembersRequest, ListUserAccountsRequest,
    RemoveMembershipRequest,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Deleted, PageQuery, Paged, page};
use crate::{
    auth::Management,
    convert::opt_timestamp,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member))
        .routes(routes!(list_user_accounts))
}

/// A user's membership of an account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub tenant_id: String,
    pub user_id: String,
    pub created_at: Option<String>,
}

impl From<pb::Membership> for Membership {
    fn from(m: pb::Membership) -> Self {
        Self {
            tenant_id: m.tenant_id,
            user_id: m.user_id,
            created_at: opt_timestamp(m.created_at),
        }
    }
}

/// Body of `POST .../{tenantId}/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMemberBody {
    /// The identity provider's user ID.
    pub user_id: String,
}

/// List the users of an account.
#[utoipa::path(get, path = "/tenants/resources/tenants/v1/{tenantId}/users", tag = "Memberships",
    params(("tenantId" = String, Path), PageQuery),
    responses((status = 200, body = Paged<Membership>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_members(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<Membership>>, ApiError> {
    let out = state
        .memberships()
        .list_account_members(grpc(
            &p,
            ListAccountMembersRequest {
                tenant_id,
                page: page(q.limit, q.offset),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(Paged {
        items: out.memberships.into_iter().map(Membership::from).collect(),
        metadata: out.page.into(),
    }))
}

/// Add a user to an account (`Idempotency-Key` makes retries safe).
#[utoipa::path(post, path = "/tenants/resources/tenants/v1/{tenantId}/users", tag = "Memberships",
    params(("tenantId" = String, Path), IdempotencyKey), request_body = AddMemberBody,
    responses((status = 201, body = Membership), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn add_member(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(body): ApiJson<AddMemberBody>,
) -> Result<impl IntoResponse, ApiError> {
    let out = state
        .memberships()
        .add_membership(grpc(
            &p,
            AddMembershipRequest {
                tenant_id,
                user_id: body.user_id,
                idempotency_key,
            },
        ))
        .await?
        .into_inner();
    let membership = out.membership.ok_or_else(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(Membership::from(membership))))
}

/// Remove a user from an account.
#[utoipa::path(delete, path = "/tenants/resources/tenants/v1/{tenantId}/users/{userId}", tag = "Memberships",
    params(("tenantId" = String, Path), ("userId" = String, Path)),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn remove_member(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((tenant_id, user_id)): ApiPath<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    state
        .memberships()
        .remove_membership(grpc(&p, RemoveMembershipRequest { tenant_id, user_id }))
        .await?;
    Ok(Json(Deleted { deleted: true }))
}

/// List the accounts a user belongs to.
#[utoipa::path(get, path = "/tenants/resources/users/v1/{userId}/tenants", tag = "Memberships",
    params(("userId" = String, Path), PageQuery),
    responses((status = 200, body = Paged<Membership>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_user_accounts(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Paged<Membership>>, ApiError> {
    let out = state
        .memberships()
        .list_user_accounts(grpc(
            &p,
            ListUserAccountsRequest {
                user_id,
                page: page(q.limit, q.offset),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(Paged {
        items: out.memberships.into_iter().map(Membership::from).collect(),
        metadata: out.page.into(),
    }))
}
