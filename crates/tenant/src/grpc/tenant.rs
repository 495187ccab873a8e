//! `tenantry.tenant.v1.TenantService`.

use tenantry_proto::{
    common::v1::SortOrder,
    tenant::v1::{self as pb, tenant_service_server::TenantService},
};
use tonic::{Request, Response, Status};

use tenantry_common::grpc::principal;

use super::{Handlers, convert, idempotency, invalid};
use crate::app::idempotency::idempotent;
use crate::domain::{
    self, AccountPatch, Created, DELETE_ACCOUNT_PERMISSION, DeletedIds, Error, ListQuery, Settings,
    SortField,
};

/// Most IDs one BatchGetAccounts may name.
const MAX_BATCH_GET: usize = 1_000;

#[tonic::async_trait]
impl TenantService for Handlers {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let principal = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(principal.as_deref(), r.idempotency_key.take(), &r)?;
        let new = r.account.ok_or_else(|| invalid("account", "is required"))?;
        let new = convert::new_account("account.", new)?.validated("account.", false)?;
        let created: Created = idempotent(&self.store, key.as_ref(), "create_account", |claim| {
            self.store
                .create_account(new, DeletedIds::Reactivate, claim)
        })
        .await?;
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(convert::account(&created.account)),
            reactivated: created.reactivated,
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let id = convert::tenant_id("tenant_id", &request.into_inner().tenant_id)?;
        let account = self.store.get_account(&id).await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn get_account_by_alias(
        &self,
        request: Request<pb::GetAccountByAliasRequest>,
    ) -> Result<Response<pb::GetAccountByAliasResponse>, Status> {
        let alias = request.into_inner().alias;
        domain::validate_alias("alias", &alias)?;
        let account = self.store.get_account_by_alias(&alias).await?;
        Ok(Response::new(pb::GetAccountByAliasResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn batch_get_accounts(
        &self,
        request: Request<pb::BatchGetAccountsRequest>,
    ) -> Result<Response<pb::BatchGetAccountsResponse>, Status> {
        let pb::BatchGetAccountsRequest {
            tenant_ids: ids,
            missing_only,
        } = request.into_inner();
        if ids.is_empty() || ids.len() > MAX_BATCH_GET {
            return Err(invalid(
                "tenant_ids",
                format!("give between 1 and {MAX_BATCH_GET} IDs (got {})", ids.len()),
            ));
        }
        for (i, id) in ids.iter().enumerate() {
            convert::tenant_id(&format!("tenant_ids[{i}]"), id)?;
        }
        if missing_only {
            return Ok(Response::new(pb::BatchGetAccountsResponse {
                accounts: Vec::new(),
                missing_tenant_ids: self.store.missing_accounts(&ids).await?,
            }));
        }
        let (accounts, missing) = self.store.batch_get_accounts(&ids).await?;
        Ok(Response::new(pb::BatchGetAccountsResponse {
            accounts: accounts.iter().map(convert::account).collect(),
            missing_tenant_ids: missing,
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let r = request.into_inner();
        let sort = match pb::AccountSortField::try_from(r.sort_by) {
            Ok(pb::AccountSortField::Unspecified | pb::AccountSortField::CreatedAt) => {
                SortField::CreatedAt
            }
            Ok(pb::AccountSortField::Name) => SortField::Name,
            Ok(pb::AccountSortField::TenantId) => SortField::TenantId,
            Err(_) => return Err(invalid("sort_by", "must be createdAt, name or tenantId")),
        };
        let descending = match SortOrder::try_from(r.order) {
            Ok(SortOrder::Unspecified | SortOrder::Asc) => false,
            Ok(SortOrder::Desc) => true,
            Err(_) => return Err(invalid("order", "must be ASC or DESC")),
        };
        let page = r.page.unwrap_or_default();
        let query = ListQuery::new(
            page.limit,
            page.offset,
            r.filter,
            sort,
            descending,
            r.tenant_ids,
        )?;
        let mut page = self.store.list_accounts(&query).await?;
        let mut accounts: Vec<pb::Account> = page.items.iter().map(convert::account).collect();
        let keep = super::fitting(&accounts, self.max_message_bytes);
        accounts.truncate(keep);
        page.items.truncate(keep);
        Ok(Response::new(pb::ListAccountsResponse {
            accounts,
            page: Some(convert::page_info(&page)),
        }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::UpdateAccountResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let patch = AccountPatch {
            name: r.name,
            status: r.status,
            creator_name: r.creator_name,
            creator_email: r.creator_email,
            is_reseller: r.is_reseller,
            alias: r.alias,
            settings: Settings {
                timezone: r.timezone,
                currency: r.currency,
                address: r.address,
                logo: r.logo,
                logo_url: r.logo_url,
                application_url: r.application_url,
                website: r.website,
                ..Settings::default()
            },
        };
        patch.validate()?;
        let account = self.store.update_account(&id, patch).await?;
        Ok(Response::new(pb::UpdateAccountResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let expected = match r.expected_parent_tenant_id {
            Some(p) => Some(convert::tenant_id("expected_parent_tenant_id", &p)?),
            None => None,
        };
        let deleted = self.store.delete_account(&id, expected.as_deref()).await?;
        Ok(Response::new(pb::DeleteAccountResponse {
            account: Some(convert::account(&deleted.account)),
            reparented_tenant_ids: deleted.reparented,
            removed_memberships: deleted.removed_memberships,
        }))
    }

    async fn delete_current_account(
        &self,
        request: Request<pb::DeleteCurrentAccountRequest>,
    ) -> Result<Response<pb::DeleteCurrentAccountResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        if !tenantry_common::permission::holds(&r.caller_permissions, DELETE_ACCOUNT_PERMISSION) {
            return Err(Error::PermissionDenied(format!(
                "deleting the current account requires the `{DELETE_ACCOUNT_PERMISSION}` permission"
            ))
            .into());
        }
        let deleted = self.store.delete_account(&id, None).await?;
        Ok(Response::new(pb::DeleteCurrentAccountResponse {
            account: Some(convert::account(&deleted.account)),
            reparented_tenant_ids: deleted.reparented,
            removed_memberships: deleted.removed_memberships,
        }))
    }

    async fn add_account_metadata(
        &self,
        request: Request<pb::AddAccountMetadataRequest>,
    ) -> Result<Response<pb::AddAccountMetadataResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let value = match r.metadata {
            Some(v) => Some(convert::pb_to_json("metadata", v)?),
            None => None,
        };
        let add = domain::parse_metadata("metadata", value)?;
        let account = self.store.add_metadata(&id, add).await?;
        Ok(Response::new(pb::AddAccountMetadataResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn delete_account_metadata(
        &self,
        request: Request<pb::DeleteAccountMetadataRequest>,
    ) -> Result<Response<pb::DeleteAccountMetadataResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        if r.key.is_empty() {
            return Err(invalid("key", "is required"));
        }
        let account = self.store.delete_metadata(&id, &r.key).await?;
        Ok(Response::new(pb::DeleteAccountMetadataResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn get_account_settings(
        &self,
        request: Request<pb::GetAccountSettingsRequest>,
    ) -> Result<Response<pb::GetAccountSettingsResponse>, Status> {
        let id = convert::tenant_id("tenant_id", &request.into_inner().tenant_id)?;
        let account = self.store.get_account(&id).await?;
        Ok(Response::new(pb::GetAccountSettingsResponse {
            settings: Some(convert::settings(&account.settings)),
        }))
    }

    async fn update_account_settings(
        &self,
        request: Request<pb::UpdateAccountSettingsRequest>,
    ) -> Result<Response<pb::UpdateAccountSettingsResponse>, Status> {
        let r = request.into_inner();
        let id = convert::tenant_id("tenant_id", &r.tenant_id)?;
        let patch = r.settings.map(convert::settings_from).unwrap_or_default();
        if patch.is_empty() {
            return Err(invalid("settings", "give at least one setting to change"));
        }
        patch.validate("settings.")?;
        let account = self.store.update_settings(&id, patch).await?;
        Ok(Response::new(pb::UpdateAccountSettingsResponse {
            settings: Some(convert::settings(&account.settings)),
        }))
    }

    async fn get_public_account_settings(
        &self,
        request: Request<pb::GetPublicAccountSettingsRequest>,
    ) -> Result<Response<pb::GetPublicAccountSettingsResponse>, Status> {
        let id = convert::tenant_id("tenant_id", &request.into_inner().tenant_id)?;
        let account = self.store.get_account(&id).await?;
        Ok(Response::new(pb::GetPublicAccountSettingsResponse {
            settings: Some(convert::public_settings(account.public_settings())),
        }))
    }
}
