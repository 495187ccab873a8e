//! `tenantry.tenant.v1.MembershipService`.

use tenantry_proto::tenant::v1::{self as pb, membership_service_server::MembershipService};
use tonic::{Request, Response, Status};

use tenantry_common::grpc::principal;

use super::{Handlers, convert, idempotency};
use crate::app::idempotency::idempotent;
use crate::domain::{DEFAULT_LIMIT, MAX_LIMIT, Membership, page_limit, validate_user_id};

#[tonic::async_trait]
impl MembershipService for Handlers {
    async fn add_membership(
        &self,
        request: Request<pb::AddMembershipRequest>,
    ) -> Result<Response<pb::AddMembershipResponse>, Status> {
        let principal = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(principal.as_deref(), r.idempotency_key.take(), &r)?;
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        validate_user_id("user_id", &r.user_id)?;
        let membership: Membership =
            idempotent(&self.store, key.as_ref(), "add_membership", |claim| {
                self.store.add_membership(&id, &r.user_id, claim)
            })
            .await?;
        Ok(Response::new(pb::AddMembershipResponse {
            membership: Some(convert::membership(&membership)),
        }))
    }

    async fn remove_membership(
        &self,
        request: Request<pb::RemoveMembershipRequest>,
    ) -> Result<Response<pb::RemoveMembershipResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        validate_user_id("user_id", &r.user_id)?;
        self.store.remove_membership(&id, &r.user_id).await?;
        Ok(Response::new(pb::RemoveMembershipResponse {}))
    }

    async fn list_account_members(
        &self,
        request: Request<pb::ListAccountMembersRequest>,
    ) -> Result<Response<pb::ListAccountMembersResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let page = r.page.unwrap_or_default();
        let limit = page_limit("page.limit", page.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        let page = self.store.list_members(&id, limit, page.offset).await?;
        Ok(Response::new(pb::ListAccountMembersResponse {
            memberships: page.items.iter().map(convert::membership).collect(),
            page: Some(convert::page_info(&page)),
        }))
    }

    async fn list_user_accounts(
        &self,
        request: Request<pb::ListUserAccountsRequest>,
    ) -> Result<Response<pb::ListUserAccountsResponse>, Status> {
        let r = request.into_inner();
        validate_user_id("user_id", &r.user_id)?;
        let page = r.page.unwrap_or_default();
        let limit = page_limit("page.limit", page.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        let page = self
            .store
            .list_user_accounts(&r.user_id, limit, page.offset)
            .await?;
        Ok(Response::new(pb::ListUserAccountsResponse {
            memberships: page.items.iter().map(convert::membership).collect(),
            page: Some(convert::page_info(&page)),
        }))
    }
}
