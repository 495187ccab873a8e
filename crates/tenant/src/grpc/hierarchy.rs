//! `tenantry.tenant.v1.HierarchyService`.

use tenantry_proto::tenant::v1::{self as pb, hierarchy_service_server::HierarchyService};
use tonic::{Request, Response, Status};

use tenantry_common::grpc::principal;

use super::{Handlers, convert, idempotency, invalid};
use crate::app::idempotency::idempotent;

/// Most accounts one CheckSubAccountScope call may ask about (a batch check's items).
const MAX_SCOPE_CHECK_IDS: usize = 1_000;
use crate::domain::{
    Account, Created, DEFAULT_LIMIT, DeletedIds, MAX_LIMIT, NewAccount, Settings, page_limit,
};

#[tonic::async_trait]
impl HierarchyService for Handlers {
    async fn create_sub_account(
        &self,
        request: Request<pb::CreateSubAccountRequest>,
    ) -> Result<Response<pb::CreateSubAccountResponse>, Status> {
        let principal = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(principal.as_deref(), r.idempotency_key.take(), &r)?;
        convert::tenant_id("tenant_id", &r.tenant_id)?;
        convert::tenant_id("parent_tenant_id", &r.parent_tenant_id)?;
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
        }
        .validated("", true)?;
        // Deleted IDs stay taken here: see `DeletedIds::Reserved`.
        let created: Created =
            idempotent(&self.store, key.as_ref(), "create_sub_account", |claim| {
                self.store.create_account(new, DeletedIds::Reserved, claim)
            })
            .await?;
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
        let parent = convert::tenant_id("parent_tenant_id", &r.parent_tenant_id)?;
        let child = convert::tenant_id("child_tenant_id", &r.child_tenant_id)?;
        let child: Account = idempotent(&self.store, key.as_ref(), "attach_sub_account", |claim| {
            self.store.attach(&parent, &child, claim)
        })
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
        let parent = convert::tenant_id("parent_tenant_id", &r.parent_tenant_id)?;
        let child = convert::tenant_id("child_tenant_id", &r.child_tenant_id)?;
        let child = self.store.detach(&parent, &child).await?;
        Ok(Response::new(pb::DetachSubAccountResponse {
            child: Some(convert::account(&child)),
        }))
    }

    async fn list_descendants(
        &self,
        request: Request<pb::ListDescendantsRequest>,
    ) -> Result<Response<pb::ListDescendantsResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let page = r.page.unwrap_or_default();
        let limit = page_limit("page.limit", page.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        let mut page = self
            .store
            .list_descendants(&id, r.direct_only, limit, page.offset)
            .await?;
        let mut entries: Vec<pb::HierarchyEntry> =
            page.items.iter().map(convert::hierarchy_entry).collect();
        let keep = super::fitting(&entries, self.max_message_bytes);
        entries.truncate(keep);
        page.items.truncate(keep);
        Ok(Response::new(pb::ListDescendantsResponse {
            entries,
            page: Some(convert::page_info(&page)),
        }))
    }

    async fn list_ancestors(
        &self,
        request: Request<pb::ListAncestorsRequest>,
    ) -> Result<Response<pb::ListAncestorsResponse>, Status> {
        let id = convert::tenant_id("tenant_id", &request.into_inner().tenant_id)?;
        let entries = self.store.list_ancestors(&id).await?;
        Ok(Response::new(pb::ListAncestorsResponse {
            entries: entries.iter().map(convert::hierarchy_entry).collect(),
        }))
    }

    async fn get_subtree(
        &self,
        request: Request<pb::GetSubtreeRequest>,
    ) -> Result<Response<pb::GetSubtreeResponse>, Status> {
        let id = convert::tenant_id("tenant_id", &request.into_inner().tenant_id)?;
        let root = self.store.subtree(&id).await?;
        Ok(Response::new(pb::GetSubtreeResponse {
            root: Some(convert::tree(&root)),
        }))
    }

    async fn update_sub_account_management(
        &self,
        request: Request<pb::UpdateSubAccountManagementRequest>,
    ) -> Result<Response<pb::UpdateSubAccountManagementResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let account = self.store.update_reseller(&id, r.is_reseller).await?;
        Ok(Response::new(pb::UpdateSubAccountManagementResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn get_hierarchy_settings(
        &self,
        request: Request<pb::GetHierarchySettingsRequest>,
    ) -> Result<Response<pb::GetHierarchySettingsResponse>, Status> {
        let id = convert::tenant_id("tenant_id", &request.into_inner().tenant_id)?;
        let account = self.store.get_account(&id).await?;
        Ok(Response::new(pb::GetHierarchySettingsResponse {
            settings: Some(convert::hierarchy_settings(&account)),
        }))
    }

    async fn check_sub_account_scope(
        &self,
        request: Request<pb::CheckSubAccountScopeRequest>,
    ) -> Result<Response<pb::CheckSubAccountScopeResponse>, Status> {
        let r = request.into_inner();
        let caller = convert::tenant_id("caller_tenant_id", &r.caller_tenant_id)?;
        if r.tenant_ids.len() > MAX_SCOPE_CHECK_IDS {
            return Err(invalid(
                "tenant_ids",
                format!("at most {MAX_SCOPE_CHECK_IDS} accounts per call"),
            ));
        }
        let mut ids = Vec::with_capacity(r.tenant_ids.len());
        for id in r.tenant_ids {
            ids.push(convert::tenant_id("tenant_ids", &id)?);
        }
        ids.sort_unstable();
        ids.dedup();
        let reachable = self.store.reachable_sub_accounts(&caller, &ids).await?;
        Ok(Response::new(pb::CheckSubAccountScopeResponse {
            reachable_tenant_ids: reachable,
        }))
    }

    async fn update_hierarchy_settings(
        &self,
        request: Request<pb::UpdateHierarchySettingsRequest>,
    ) -> Result<Response<pb::UpdateHierarchySettingsResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let access =
            convert::access_type_from("sub_account_access_type", r.sub_account_access_type)?;
        let account = self.store.update_access_type(&id, access).await?;
        Ok(Response::new(pb::UpdateHierarchySettingsResponse {
            settings: Some(convert::hierarchy_settings(&account)),
        }))
    }
}
