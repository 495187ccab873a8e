//! `tenantry.tenant.v1.HierarchyService`.

use tenantry_common::grpc::principal;
use tenantry_proto::tenant::v1::{self as pb, hierarchy_service_server::HierarchyService};
use tonic::{Request, Response, Status};

use super::{Handlers, RESPONSE_HEADROOM, convert, idempotency};
use crate::domain::{Account, NewAccount, Settings, build_tree};

/// Bytes a tree node adds around its account at most: the node's tag and length in its
/// parent, the account's tag and length in the node.
const NODE_FRAMING: usize = 2 * (1 + 5);

/// An account's encoded size with its tag and length.
fn framed(account: &Account) -> usize {
    let len = prost::Message::encoded_len(&convert::account(account));
    1 + prost::length_delimiter_len(len) + len
}

#[tonic::async_trait]
impl HierarchyService for Handlers {
    async fn create_sub_account(
        &self,
        request: Request<pb::CreateSubAccountRequest>,
    ) -> Result<Response<pb::CreateSubAccountResponse>, Status> {
        let principal = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(principal.as_deref(), r.idempotency_key.take(), &r)?;
        let new = NewAccount {
            tenant_id: Some(r.tenant_id),
            name: r.name,
            status: r.status,
            creator_name: r.creator_name,
            creator_email: r.creator_email,
            is_reseller: r.is_reseller,
            parent_tenant_id: Some(r.parent_tenant_id),
            alias: None,
            metadata: None,
            settings: Settings {
                logo: r.logo,
                logo_url: r.logo_url,
                ..Settings::default()
            },
        };
        let created = self.app.create_sub_account(new, key.as_ref()).await?;
        Ok(Response::new(pb::CreateSubAccountResponse {
            account: Some(convert::account(&created.account)),
            reactivated: created.reactivated,
        }))
    }

    async fn attach_sub_account(
        &self,
        request: Request<pb::AttachSubAccountRequest>,
    ) -> Result<Response<pb::AttachSubAccountResponse>, Status> {
        let principal = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(principal.as_deref(), r.idempotency_key.take(), &r)?;
        let child = self
            .app
            .attach(&r.parent_tenant_id, &r.child_tenant_id, key.as_ref())
            .await?;
        Ok(Response::new(pb::AttachSubAccountResponse {
            child: Some(convert::account(&child)),
        }))
    }

    async fn detach_sub_account(
        &self,
        request: Request<pb::DetachSubAccountRequest>,
    ) -> Result<Response<pb::DetachSubAccountResponse>, Status> {
        let r = request.into_inner();
        let child = self
            .app
            .detach(&r.parent_tenant_id, &r.child_tenant_id)
            .await?;
        Ok(Response::new(pb::DetachSubAccountResponse {
            child: Some(convert::account(&child)),
        }))
    }

    async fn list_descendants(
        &self,
        request: Request<pb::ListDescendantsRequest>,
    ) -> Result<Response<pb::ListDescendantsResponse>, Status> {
        let r = request.into_inner();
        let page = r.page.unwrap_or_default();
        let page = self
            .app
            .list_descendants(&r.tenant_id, r.direct_only, page.limit, page.offset)
            .await?;
        let (entries, page) = self.fitting_page(page, convert::hierarchy_entry);
        Ok(Response::new(pb::ListDescendantsResponse { entries, page }))
    }

    async fn list_ancestors(
        &self,
        request: Request<pb::ListAncestorsRequest>,
    ) -> Result<Response<pb::ListAncestorsResponse>, Status> {
        let entries = self
            .app
            .list_ancestors(&request.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::ListAncestorsResponse {
            entries: entries.iter().map(convert::hierarchy_entry).collect(),
        }))
    }

    async fn get_subtree(
        &self,
        request: Request<pb::GetSubtreeRequest>,
    ) -> Result<Response<pb::GetSubtreeResponse>, Status> {
        let r = request.into_inner();
        let mut subtree = self.app.subtree(&r.tenant_id, r.max_nodes).await?;
        // Cut further, still breadth first, to stay under the message limit: the root's
        // size first, then each node's with the framing of its node and of its parent's
        // child field.
        let budget = self
            .max_message_bytes
            .saturating_sub(RESPONSE_HEADROOM + framed(&subtree.root));
        let mut used = 0_usize;
        let keep = subtree
            .descendants
            .iter()
            .position(|account| {
                used += framed(account) + NODE_FRAMING;
                used > budget
            })
            .unwrap_or(subtree.descendants.len());
        if keep < subtree.descendants.len() {
            subtree.descendants.truncate(keep);
            subtree.truncated = true;
        }
        let root = build_tree(subtree.root, subtree.descendants);
        Ok(Response::new(pb::GetSubtreeResponse {
            root: Some(convert::tree(&root)),
            truncated: subtree.truncated,
        }))
    }

    async fn update_sub_account_management(
        &self,
        request: Request<pb::UpdateSubAccountManagementRequest>,
    ) -> Result<Response<pb::UpdateSubAccountManagementResponse>, Status> {
        let r = request.into_inner();
        let account = self
            .app
            .update_reseller(&r.tenant_id, r.is_reseller)
            .await?;
        Ok(Response::new(pb::UpdateSubAccountManagementResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn get_hierarchy_settings(
        &self,
        request: Request<pb::GetHierarchySettingsRequest>,
    ) -> Result<Response<pb::GetHierarchySettingsResponse>, Status> {
        let account = self
            .app
            .hierarchy_settings(&request.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::GetHierarchySettingsResponse {
            settings: Some(convert::hierarchy_settings(&account)),
        }))
    }

    async fn check_sub_account_scope(
        &self,
        request: Request<pb::CheckSubAccountScopeRequest>,
    ) -> Result<Response<pb::CheckSubAccountScopeResponse>, Status> {
        let r = request.into_inner();
        let reachable = self
            .app
            .check_sub_account_scope(&r.caller_tenant_id, r.tenant_ids)
            .await?;
        Ok(Response::new(pb::CheckSubAccountScopeResponse {
            reachable_tenant_ids: reachable,
        }))
    }

    async fn update_hierarchy_settings(
        &self,
        request: Request<pb::UpdateHierarchySettingsRequest>,
    ) -> Result<Response<pb::UpdateHierarchySettingsResponse>, Status> {
        let r = request.into_inner();
        let access =
            convert::access_type_from("sub_account_access_type", r.sub_account_access_type)?;
        let account = self.app.update_access_type(&r.tenant_id, access).await?;
        Ok(Response::new(pb::UpdateHierarchySettingsResponse {
            settings: Some(convert::hierarchy_settings(&account)),
        }))
    }
}
