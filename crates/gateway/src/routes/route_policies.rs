//! Route policies, tag "Routes" (`/entitlements/resources/routes/v1`, in the style of the
//! feature flags): method + path pattern → allow, deny, or require features/permissions.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_proto::{
    common::v1::StringList,
    entitlement::v1::{
        self as pb, CreateRouteRequest, DeleteRouteRequest, GetRouteRequest, ListRoutesRequest,
        RoutePolicy, UpdateRouteRequest,
    },
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Deleted, ItemsPage, page, with_revision};
use crate::{
    auth::Management,
    convert::opt_timestamp,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_routes, create_route))
        .routes(routes!(get_route, update_route, delete_route))
}

/// A route policy: method + path pattern → allow, deny, or require features/permissions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub id: String,
    /// `GET`, `POST`, ... or `*`.
    pub method: String,
    /// Pattern with `*` (one segment) and a trailing `**`.
    pub path: String,
    /// `allow`, `deny` or `require`.
    pub policy: String,
    pub required_feature_keys: Vec<String>,
    pub required_permission_keys: Vec<String>,
    pub description: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<pb::Route> for Route {
    fn from(r: pb::Route) -> Self {
        Self {
            policy: match r.policy() {
                RoutePolicy::Allow => "allow",
                RoutePolicy::Deny => "deny",
                RoutePolicy::Require | RoutePolicy::Unspecified => "require",
            }
            .to_owned(),
            id: r.id,
            method: r.method,
            path: r.path_pattern,
            required_feature_keys: r.required_feature_keys,
            required_permission_keys: r.required_permission_keys,
            description: r.description,
            created_at: opt_timestamp(r.created_at),
            updated_at: opt_timestamp(r.updated_at),
        }
    }
}

fn route(r: Option<pb::Route>) -> Result<Route, ApiError> {
    r.map(Route::from).ok_or_else(ApiError::internal)
}

pub fn policy(value: &str) -> Result<RoutePolicy, ApiError> {
    match value {
        "allow" => Ok(RoutePolicy::Allow),
        "deny" => Ok(RoutePolicy::Deny),
        "require" => Ok(RoutePolicy::Require),
        _ => Err(ApiError::invalid_field(
            "policy",
            "must be allow, deny or require",
        )),
    }
}

/// Body of `POST /resources/routes/v1`. Only a `require` route lists required keys, and it
/// lists at least one feature or permission (else 400).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRouteBody {
    #[schema(pattern = "^(\\*|[A-Z]{1,16})$")]
    pub method: String,
    #[schema(pattern = "^/")]
    pub path: String,
    #[schema(pattern = "^(allow|deny|require)$")]
    pub policy: String,
    #[serde(default)]
    pub required_feature_keys: Vec<String>,
    #[serde(default)]
    pub required_permission_keys: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// Body of `PATCH /resources/routes/v1/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRouteBody {
    #[schema(pattern = "^(\\*|[A-Z]{1,16})$")]
    pub method: Option<String>,
    #[schema(pattern = "^/")]
    pub path: Option<String>,
    #[schema(pattern = "^(allow|deny|require)$")]
    pub policy: Option<String>,
    pub required_feature_keys: Option<Vec<String>>,
    pub required_permission_keys: Option<Vec<String>>,
    pub description: Option<String>,
}

/// Query of the route list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    pub offset: Option<u32>,
    pub limit: Option<u32>,
    /// Substring of the path pattern.
    pub filter: Option<String>,
    pub method: Option<String>,
}

/// List route policies.
#[utoipa::path(get, path = "/entitlements/resources/routes/v1", tag = "Routes",
    params(RouteQuery),
    responses((status = 200, body = ItemsPage<Route>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_routes(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<RouteQuery>,
) -> Result<Json<ItemsPage<Route>>, ApiError> {
    let out = state
        .routes()
        .list_routes(grpc(
            &p,
            ListRoutesRequest {
                page: page(q.limit, q.offset),
                filter: q.filter,
                method: q.method,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(ItemsPage::new(
        out.routes.into_iter().map(Route::from).collect(),
        out.page,
    )))
}

/// Create a route policy.
#[utoipa::path(post, path = "/entitlements/resources/routes/v1", tag = "Routes",
    params(IdempotencyKey), request_body = CreateRouteBody,
    responses((status = 201, body = Route), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_route(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<CreateRouteBody>,
) -> Result<Response, ApiError> {
    let request = CreateRouteRequest {
        method: b.method,
        path_pattern: b.path,
        policy: policy(&b.policy)?.into(),
        required_feature_keys: b.required_feature_keys,
        required_permission_keys: b.required_permission_keys,
        description: b.description,
        idempotency_key,
    };
    let out = state
        .routes()
        .create_route(grpc(&p, request))
        .await?
        .into_inner();
    Ok(with_revision(
        (StatusCode::CREATED, Json(route(out.route)?)),
        out.revision,
    ))
}

/// Get a route policy.
#[utoipa::path(get, path = "/entitlements/resources/routes/v1/{routeId}", tag = "Routes",
    params(("routeId" = String, Path)),
    responses((status = 200, body = Route), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_route(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Route>, ApiError> {
    let out = state
        .routes()
        .get_route(grpc(&p, GetRouteRequest { id }))
        .await?
        .into_inner();
    Ok(Json(route(out.route)?))
}

/// Change a route policy.
#[utoipa::path(patch, path = "/entitlements/resources/routes/v1/{routeId}", tag = "Routes",
    params(("routeId" = String, Path)), request_body = UpdateRouteBody,
    responses((status = 200, body = Route), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_route(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<UpdateRouteBody>,
) -> Result<Response, ApiError> {
    let request = UpdateRouteRequest {
        id,
        method: b.method,
        path_pattern: b.path,
        policy: b.policy.map(|v| policy(&v).map(i32::from)).transpose()?,
        required_feature_keys: b.required_feature_keys.map(|values| StringList { values }),
        required_permission_keys: b
            .required_permission_keys
            .map(|values| StringList { values }),
        description: b.description,
    };
    let out = state
        .routes()
        .update_route(grpc(&p, request))
        .await?
        .into_inner();
    Ok(with_revision(Json(route(out.route)?), out.revision))
}

/// Delete a route policy.
#[utoipa::path(delete, path = "/entitlements/resources/routes/v1/{routeId}", tag = "Routes",
    params(("routeId" = String, Path)),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_route(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let out = state
        .routes()
        .delete_route(grpc(&p, DeleteRouteRequest { id }))
        .await?
        .into_inner();
    Ok(with_revision(Json(Deleted { deleted: true }), out.revision))
}
