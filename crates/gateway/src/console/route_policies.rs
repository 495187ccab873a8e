//! Route policies: method + path pattern → allow, deny, or require features and permissions.
//! List, create, edit, delete; environment sessions only, as the REST routes.

use askama::Template;
use axum::{
    Router,
    extract::{Path, RawForm, State},
    response::Response,
    routing::{get, post},
};
use tenantry_proto::{
    common::v1::StringList,
    entitlement::v1::{
        CreateRouteRequest, DeleteRouteRequest, GetRouteRequest, ListRoutesRequest,
        UpdateRouteRequest,
    },
};

use super::{
    Console, Layout, PageError, SignedIn,
    catalogue::{field, fields, list_field},
    encode, first_page, render, see, write_then_see,
};
use crate::{
    error::ApiError,
    routes::route_policies::{Route, policy},
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/route-policies", get(list).post(create))
        .route("/route-policies/{id}", get(show).post(update))
        .route("/route-policies/{id}/delete", post(delete))
}

pub struct RouteRow {
    pub route: Route,
    pub href: String,
    pub features: String,
    pub permissions: String,
}

impl From<Route> for RouteRow {
    fn from(route: Route) -> Self {
        Self {
            href: format!("/console/route-policies/{}", encode(&route.id)),
            features: route.required_feature_keys.join(", "),
            permissions: route.required_permission_keys.join(", "),
            route,
        }
    }
}

#[derive(Template)]
#[template(path = "console/route_policies.html")]
struct RoutesPage {
    layout: Layout,
    rows: Vec<RouteRow>,
}

async fn list(State(c): State<Console>, session: SignedIn) -> Result<Response, PageError> {
    let p = session.management()?;
    let routes = c
        .app
        .routes()
        .list_routes(grpc(
            p,
            ListRoutesRequest {
                page: first_page(200),
                ..ListRoutesRequest::default()
            },
        ))
        .await?
        .into_inner()
        .routes;
    render(&RoutesPage {
        layout: session.layout("Route policies", "Route policies"),
        rows: routes
            .into_iter()
            .map(|r| RouteRow::from(Route::from(r)))
            .collect(),
    })
}

async fn create(
    State(c): State<Console>,
    session: SignedIn,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let request = CreateRouteRequest {
        method: field(&f, "method"),
        path_pattern: field(&f, "path"),
        policy: policy(&field(&f, "policy"))?.into(),
        required_feature_keys: list_field(&f, "features"),
        required_permission_keys: list_field(&f, "permissions"),
        description: field(&f, "description"),
        idempotency_key: None,
    };
    c.app.routes().create_route(grpc(p, request)).await?;
    Ok(see("/console/route-policies"))
}

#[derive(Template)]
#[template(path = "console/route_policy.html")]
struct RoutePage {
    layout: Layout,
    row: RouteRow,
}

async fn show(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let route = c
        .app
        .routes()
        .get_route(grpc(p, GetRouteRequest { id }))
        .await?
        .into_inner()
        .route
        .ok_or_else(ApiError::internal)?;
    let row = RouteRow::from(Route::from(route));
    render(&RoutePage {
        layout: session.layout(
            format!("Route {} {}", row.route.method, row.route.path),
            "Route policies",
        ),
        row,
    })
}

async fn update(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let request = UpdateRouteRequest {
        id,
        method: Some(field(&f, "method")),
        path_pattern: Some(field(&f, "path")),
        policy: Some(policy(&field(&f, "policy"))?.into()),
        required_feature_keys: Some(StringList {
            values: list_field(&f, "features"),
        }),
        required_permission_keys: Some(StringList {
            values: list_field(&f, "permissions"),
        }),
        description: Some(field(&f, "description")),
    };
    c.app.routes().update_route(grpc(p, request)).await?;
    Ok(see("/console/route-policies"))
}

async fn delete(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    write_then_see(&session, "/console/route-policies", |p| async move {
        let request = DeleteRouteRequest { id };
        c.app.routes().delete_route(grpc(&p, request)).await
    })
    .await
}
