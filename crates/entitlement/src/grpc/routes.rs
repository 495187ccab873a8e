//! `RouteService`.

use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};

use super::convert::{self, uuid};
use super::{Handler, Result, encode_page, idempotency, page, principal, request_fingerprint};
use crate::app::routes::{NewRoute, PolicyKind, RoutePatch, RouteQuery};

fn policy_kind(policy: i32) -> Option<PolicyKind> {
    match pb::RoutePolicy::try_from(policy) {
        Ok(pb::RoutePolicy::Allow) => Some(PolicyKind::Allow),
        Ok(pb::RoutePolicy::Deny) => Some(PolicyKind::Deny),
        Ok(pb::RoutePolicy::Require) => Some(PolicyKind::Require),
        Ok(pb::RoutePolicy::Unspecified) | Err(_) => None,
    }
}

#[tonic::async_trait]
impl route_service_server::RouteService for Handler {
    async fn create_route(
        &self,
        request: Request<CreateRouteRequest>,
    ) -> Result<Response<CreateRouteResponse>> {
        let by = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(by.as_deref(), r.idempotency_key.take(), || {
            request_fingerprint(&r)
        })?;
        let new = NewRoute {
            method: r.method,
            path: r.path_pattern,
            policy: policy_kind(r.policy),
            required_features: r.required_feature_keys,
            required_permissions: r.required_permission_keys,
            description: Some(r.description).filter(|d| !d.is_empty()),
        };
        let saved = self.engine.create_route(new, key.as_ref()).await?;
        Ok(Response::new(CreateRouteResponse {
            route: Some(convert::route(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn get_route(
        &self,
        request: Request<GetRouteRequest>,
    ) -> Result<Response<GetRouteResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let route = self.engine.route(id).await?;
        Ok(Response::new(GetRouteResponse {
            route: Some(convert::route(&route)),
        }))
    }

    async fn list_routes(
        &self,
        request: Request<ListRoutesRequest>,
    ) -> Result<Response<ListRoutesResponse>> {
        let r = request.into_inner();
        let query = RouteQuery {
            page: page(r.page)?,
            path_contains: r.filter,
            method: r.method,
        };
        let listed = self.engine.list_routes(query).await?;
        let (routes, page) = encode_page(listed, |route| convert::route(&route));
        Ok(Response::new(ListRoutesResponse { routes, page }))
    }

    async fn update_route(
        &self,
        request: Request<UpdateRouteRequest>,
    ) -> Result<Response<UpdateRouteResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let patch = RoutePatch {
            method: r.method,
            path: r.path_pattern,
            description: r.description,
            policy: r.policy.map(policy_kind),
            required_features: r.required_feature_keys.map(|l| l.values),
            required_permissions: r.required_permission_keys.map(|l| l.values),
        };
        let saved = self.engine.update_route(id, patch).await?;
        Ok(Response::new(UpdateRouteResponse {
            route: Some(convert::route(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn delete_route(
        &self,
        request: Request<DeleteRouteRequest>,
    ) -> Result<Response<DeleteRouteResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let revision = self.engine.delete_route(id).await?;
        Ok(Response::new(DeleteRouteResponse { revision }))
    }
}
