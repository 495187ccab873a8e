//! `tenantry.tenant.v1.TenantService`.

use tenantry_common::grpc::principal;
use tenantry_proto::{
    common::v1::SortOrder,
    tenant::v1::{self as pb, tenant_service_server::TenantService},
};
use tonic::{Request, Response, Status};

use super::{Handlers, convert, idempotency, invalid};
use crate::{
    app::accounts::Listing,
    domain::{AccountPatch, MetadataMatch, Settings, SortField},
};

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
        let new = convert::new_account("account.", new)?;
        let created = self.app.create_account(new, key.as_ref()).await?;
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(convert::account(&created.account)),
            reactivated: created.reactivated,
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let account = self
            .app
            .get_account(&request.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn get_account_by_alias(
        &self,
        request: Request<pb::GetAccountByAliasRequest>,
    ) -> Result<Response<pb::GetAccountByAliasResponse>, Status> {
        let account = self
            .app
            .get_account_by_alias(&request.into_inner().alias)
            .await?;
        Ok(Response::new(pb::GetAccountByAliasResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn batch_get_accounts(
        &self,
        request: Request<pb::BatchGetAccountsRequest>,
    ) -> Result<Response<pb::BatchGetAccountsResponse>, Status> {
        let r = request.into_inner();
        let batch = self
            .app
            .batch_get_accounts(&r.tenant_ids, r.missing_only)
            .await?;
        Ok(Response::new(pb::BatchGetAccountsResponse {
            accounts: batch.accounts.iter().map(convert::account).collect(),
            missing_tenant_ids: batch.missing,
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
        let listing = Listing {
            limit: page.limit,
            offset: page.offset,
            filter: r.filter,
            sort,
            descending,
            tenant_ids: r.tenant_ids,
            metadata: r
                .metadata
                .into_iter()
                .map(|m| MetadataMatch {
                    key: m.key,
                    value: m.value,
                })
                .collect(),
        };
        let page = self.app.list_accounts(listing).await?;
        let (accounts, page) = self.fitting_page(page, convert::account);
        Ok(Response::new(pb::ListAccountsResponse { accounts, page }))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::UpdateAccountResponse>, Status> {
        let r = request.into_inner();
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
        let account = self.app.update_account(&r.tenant_id, patch).await?;
        Ok(Response::new(pb::UpdateAccountResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let r = request.into_inner();
        let deleted = self
            .app
            .delete_account(&r.tenant_id, r.expected_parent_tenant_id.as_deref())
            .await?;
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
        let deleted = self
            .app
            .delete_current_account(&r.tenant_id, &r.caller_permissions)
            .await?;
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
        let value = match r.metadata {
            Some(v) => Some(convert::pb_to_json("metadata", v)?),
            None => None,
        };
        let account = self.app.add_metadata(&r.tenant_id, value).await?;
        Ok(Response::new(pb::AddAccountMetadataResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn delete_account_metadata(
        &self,
        request: Request<pb::DeleteAccountMetadataRequest>,
    ) -> Result<Response<pb::DeleteAccountMetadataResponse>, Status> {
        let r = request.into_inner();
        let account = self.app.delete_metadata(&r.tenant_id, &r.key).await?;
        Ok(Response::new(pb::DeleteAccountMetadataResponse {
            account: Some(convert::account(&account)),
        }))
    }

    async fn get_account_settings(
        &self,
        request: Request<pb::GetAccountSettingsRequest>,
    ) -> Result<Response<pb::GetAccountSettingsResponse>, Status> {
        let settings = self
            .app
            .account_settings(&request.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::GetAccountSettingsResponse {
            settings: Some(convert::settings(&settings)),
        }))
    }

    async fn update_account_settings(
        &self,
        request: Request<pb::UpdateAccountSettingsRequest>,
    ) -> Result<Response<pb::UpdateAccountSettingsResponse>, Status> {
        let r = request.into_inner();
        let patch = r.settings.map(convert::settings_from).unwrap_or_default();
        let settings = self.app.update_settings(&r.tenant_id, patch).await?;
        Ok(Response::new(pb::UpdateAccountSettingsResponse {
            settings: Some(convert::settings(&settings)),
        }))
    }

    async fn get_public_account_settings(
        &self,
        request: Request<pb::GetPublicAccountSettingsRequest>,
    ) -> Result<Response<pb::GetPublicAccountSettingsResponse>, Status> {
        let settings = self
            .app
            .public_settings(&request.into_inner().tenant_id)
            .await?;
        Ok(Response::new(pb::GetPublicAccountSettingsResponse {
            settings: Some(convert::public_settings(settings)),
        }))
    }
}
