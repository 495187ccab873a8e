//! `tenantry.tenant.v1.MembershipService`.

use tenantry_common::grpc::principal;
use tenantry_proto::tenant::v1::{self as pb, membership_service_server::MembershipService};
use tonic::{Request, Response, Status};

use super::{Handlers, convert, idempotency};

#[tonic::async_trait]
impl MembershipService for Handlers {
    async fn add_membership(
        &self,
        request: Request<pb::AddMembershipRequest>,
    ) -> Result<Response<pb::AddMembershipResponse>, Status> {
        let principal = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(principal.as_deref(), r.idempotency_key.take(), &r)?;
        let membership = self
            .app
            .add_membership(&r.tenant_id, &r.user_id, key.as_ref())
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
        self.app.remove_membership(&r.tenant_id, &r.user_id).await?;
        Ok(Response::new(pb::RemoveMembershipResponse {}))
    }

    async fn list_account_members(
        &self,
        request: Request<pb::ListAccountMembersRequest>,
    ) -> Result<Response<pb::ListAccountMembersResponse>, Status> {
        let r = request.into_inner();
        let page = r.page.unwrap_or_default();
        let page = self
            .app
            .list_members(&r.tenant_id, page.limit, page.offset)
            .await?;
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
        let page = r.page.unwrap_or_default();
        let page = self
            .app
            .list_user_accounts(&r.user_id, page.limit, page.offset)
            .await?;
        Ok(Response::new(pb::ListUserAccountsResponse {
            memberships: page.items.iter().map(convert::membership).collect(),
            page: Some(convert::page_info(&page)),
        }))
    }
}
