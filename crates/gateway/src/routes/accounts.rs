//! Account management, tag "Accounts" (`/tenants/resources/tenants/...`): accounts v1/v2
//! and their metadata. The account JSON shapes live here; memberships, account settings and
//! migrations have their own modules.

use axum::{
    Json,
    extract::{RawQuery, State},
    response::IntoResponse,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use tenantry_proto::tenant::v1::{
    self as pb, AccountSortField, AddAccountMetadataRequest, CreateAccountRequest,
    DeleteAccountMetadataRequest, DeleteAccountRequest, DeleteCurrentAccountRequest,
    GetAccountByAliasRequest, GetAccountRequest, ListAccountsRequest, UpdateAccountRequest,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Paged, account_settings::AccountSettings, page, sort_field, sort_order};
use crate::{
    auth::{Caller, Management, Principal},
    convert::{json_to_value, metadata_to_struct, opt_struct_to_json, opt_timestamp},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey, query_values, split_list},
    state::{AppState, grpc},
};

// v1 GET/PUT are deprecated (the attribute marks them so in the OpenAPI document).
#[allow(deprecated)]
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account, delete_current_account))
        .routes(routes!(get_account_v1, update_account_v1, delete_account))
        .routes(routes!(add_metadata))
        .routes(routes!(delete_metadata))
        .routes(routes!(list_accounts))
        .routes(routes!(get_account_v2, update_account_v2))
        .routes(routes!(get_account_by_alias))
}

// ---------------------------------------------------------------------------------------------
// JSON shapes

/// An account (tenant).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub tenant_id: String,
    pub name: String,
    pub status: Option<String>,
    pub website: Option<String>,
    pub application_url: Option<String>,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub address: Option<String>,
    pub timezone: Option<String>,
    pub currency: Option<String>,
    pub creator_name: Option<String>,
    pub creator_email: Option<String>,
    pub is_reseller: bool,
    pub parent_tenant_id: Option<String>,
    pub alias: Option<String>,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    pub metadata: Json_,
    pub date_format: Option<String>,
    pub time_format: Option<String>,
    pub locale: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<pb::Account> for Tenant {
    fn from(a: pb::Account) -> Self {
        let settings = a.settings.unwrap_or_default();
        Self {
            tenant_id: a.tenant_id,
            name: a.name,
            status: a.status,
            website: a.website,
            application_url: a.application_url,
            logo: a.logo,
            logo_url: a.logo_url,
            address: a.address,
            timezone: a.timezone,
            currency: a.currency,
            creator_name: a.creator_name,
            creator_email: a.creator_email,
            is_reseller: a.is_reseller,
            parent_tenant_id: a.parent_tenant_id,
            alias: a.alias,
            metadata: opt_struct_to_json(a.metadata),
            date_format: settings.date_format,
            time_format: settings.time_format,
            locale: settings.locale,
            created_at: opt_timestamp(a.created_at),
            updated_at: opt_timestamp(a.updated_at),
        }
    }
}

pub fn tenant(account: Option<pb::Account>) -> Result<Tenant, ApiError> {
    account.map(Tenant::from).ok_or_else(ApiError::internal)
}

/// Body of `POST /tenants/resources/tenants/v1` (and a full migration item).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenantBody {
    /// Your own unique ID (1-255 characters, no whitespace or `/`); generated when absent.
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub website: Option<String>,
    pub application_url: Option<String>,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub address: Option<String>,
    pub timezone: Option<String>,
    pub currency: Option<String>,
    pub creator_name: Option<String>,
    pub creator_email: Option<String>,
    pub is_reseller: Option<bool>,
    pub parent_tenant_id: Option<String>,
    pub alias: Option<String>,
    /// A JSON object or a string holding one.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    /// Initial settings (migrations).
    pub settings: Option<AccountSettings>,
}

impl CreateTenantBody {
    pub(super) fn into_new_account(self, field: &str) -> Result<pb::NewAccount, ApiError> {
        Ok(pb::NewAccount {
            tenant_id: self.tenant_id,
            name: self.name.unwrap_or_default(),
            status: self.status,
            website: self.website,
            application_url: self.application_url,
            logo: self.logo,
            logo_url: self.logo_url,
            address: self.address,
            timezone: self.timezone,
            currency: self.currency,
            creator_name: self.creator_name,
            creator_email: self.creator_email,
            is_reseller: self.is_reseller,
            parent_tenant_id: self.parent_tenant_id,
            alias: self.alias,
            metadata: metadata_to_struct(self.metadata, &format!("{field}metadata"))?,
            settings: self.settings.map(pb::AccountSettings::from),
        })
    }
}

/// Body of the account update routes (v1 and v2 PUT): the fields to change (an empty string
/// clears an optional field; an absent or `null` one is kept). The account as read may be sent
/// back whole: `tenantId` must then name the path's account, and the fields other routes own
/// (`parentTenantId`, `metadata`, `dateFormat`, `timeFormat`, `locale`) and the server's
/// timestamps are ignored here. A body that changes nothing answers the account as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTenantBody {
    /// As read; must be the path's account.
    pub tenant_id: Option<String>,
    /// As read; ignored (the hierarchy routes change it).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub parent_tenant_id: Option<Json_>,
    /// As read; ignored (the metadata routes change it).
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub metadata: Option<Json_>,
    /// As read; ignored (the account-settings route changes it).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub date_format: Option<Json_>,
    /// As read; ignored (the account-settings route changes it).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub time_format: Option<Json_>,
    /// As read; ignored (the account-settings route changes it).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub locale: Option<Json_>,
    /// As read; ignored (set by the server).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub created_at: Option<Json_>,
    /// As read; ignored (set by the server).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub updated_at: Option<Json_>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub website: Option<String>,
    pub application_url: Option<String>,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub address: Option<String>,
    pub timezone: Option<String>,
    pub currency: Option<String>,
    pub creator_name: Option<String>,
    pub creator_email: Option<String>,
    pub is_reseller: Option<bool>,
    pub alias: Option<String>,
}

/// Body of `POST .../{tenantId}/metadata`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    /// A JSON object, or a string holding a JSON object; keys overwrite existing ones.
    #[schema(value_type = Object)]
    pub metadata: Json_,
}

/// Query of `GET /tenants/resources/tenants/v2`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size: default 50, maximum 200 (more is refused).
    #[serde(rename = "_limit")]
    #[param(rename = "_limit")]
    pub limit: Option<u32>,
    #[serde(rename = "_offset")]
    #[param(rename = "_offset")]
    pub offset: Option<u32>,
    /// Case-insensitive substring of the name or tenantId.
    #[serde(rename = "_filter")]
    #[param(rename = "_filter")]
    pub filter: Option<String>,
    /// `createdAt`, `name` or `tenantId`.
    #[serde(rename = "_sortBy")]
    #[param(rename = "_sortBy", pattern = "^(createdAt|name|tenantId)?$")]
    pub sort_by: Option<String>,
    /// `ASC` or `DESC`.
    #[serde(rename = "_order")]
    #[param(rename = "_order", pattern = "^([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc])?$")]
    pub order: Option<String>,
    /// Only these accounts (comma-separated or repeated).
    #[serde(rename = "_tenantIds")]
    #[param(rename = "_tenantIds")]
    pub tenant_ids: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Accounts

/// Create an account (reactivates a deleted one with the same ID; `Idempotency-Key` makes
/// retries safe).
#[utoipa::path(post, path = "/tenants/resources/tenants/v1", tag = "Accounts",
    params(IdempotencyKey),
    request_body = CreateTenantBody,
    responses((status = 201, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_account(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(body): ApiJson<CreateTenantBody>,
) -> Result<impl IntoResponse, ApiError> {
    let account = Some(body.into_new_account("")?);
    let out = state
        .tenants()
        .create_account(grpc(
            &p,
            CreateAccountRequest {
                account,
                idempotency_key,
            },
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(tenant(out.account)?)))
}

/// Delete the caller's own account (user token with `fe.account-settings.delete.account`).
#[utoipa::path(delete, path = "/tenants/resources/tenants/v1", tag = "Accounts",
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_current_account(
    State(state): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Tenant>, ApiError> {
    let Principal::User {
        tenant_id,
        permissions,
        ..
    } = &p
    else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "deleting the current account requires a user token",
        ));
    };
    // The service checks `fe.account-settings.delete.account` among the token's permissions.
    let out = state
        .tenants()
        .delete_current_account(grpc(
            &p,
            DeleteCurrentAccountRequest {
                tenant_id: tenant_id.clone(),
                caller_permissions: permissions.clone(),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(tenant(out.account)?))
}

async fn get_account(
    state: &AppState,
    p: &Principal,
    tenant_id: String,
) -> Result<Json<Tenant>, ApiError> {
    let out = state
        .tenants()
        .get_account(grpc(p, GetAccountRequest { tenant_id }))
        .await?
        .into_inner();
    Ok(Json(tenant(out.account)?))
}

async fn update_account(
    state: &AppState,
    p: &Principal,
    tenant_id: String,
    b: UpdateTenantBody,
) -> Result<Json<Tenant>, ApiError> {
    if b.tenant_id.as_ref().is_some_and(|id| *id != tenant_id) {
        return Err(ApiError::invalid_field(
            "tenantId",
            "names another account than the path; an account's ID cannot change",
        ));
    }
    let request = UpdateAccountRequest {
        tenant_id,
        name: b.name,
        status: b.status,
        website: b.website,
        application_url: b.application_url,
        logo: b.logo,
        logo_url: b.logo_url,
        address: b.address,
        timezone: b.timezone,
        currency: b.currency,
        creator_name: b.creator_name,
        creator_email: b.creator_email,
        is_reseller: b.is_reseller,
        alias: b.alias,
    };
    let out = state
        .tenants()
        .update_account(grpc(p, request))
        .await?
        .into_inner();
    Ok(Json(tenant(out.account)?))
}

/// Get an account (deprecated v1 form).
#[utoipa::path(get, path = "/tenants/resources/tenants/v1/{tenantId}", tag = "Accounts",
    params(("tenantId" = String, Path)),
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
#[deprecated(note = "the seed keeps v1 as a deprecated form of v2")]
async fn get_account_v1(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    get_account(&state, &p, tenant_id).await
}

/// Update an account (deprecated v1 form); an update that changes nothing is refused.
#[utoipa::path(put, path = "/tenants/resources/tenants/v1/{tenantId}", tag = "Accounts",
    params(("tenantId" = String, Path)), request_body = UpdateTenantBody,
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
#[deprecated(note = "the seed keeps v1 as a deprecated form of v2")]
async fn update_account_v1(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTenantBody>,
) -> Result<Json<Tenant>, ApiError> {
    update_account(&state, &p, tenant_id, body).await
}

/// Delete an account: memberships removed, sub-accounts re-parented to its parent.
#[utoipa::path(delete, path = "/tenants/resources/tenants/v1/{tenantId}", tag = "Accounts",
    params(("tenantId" = String, Path)),
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_account(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    delete(&state, &p, tenant_id).await
}

/// Deletes an account (memberships removed, sub-accounts re-parented) and answers it; shared
/// by the management route and the self-service sub-account route.
pub async fn delete(
    state: &AppState,
    p: &Principal,
    tenant_id: String,
) -> Result<Json<Tenant>, ApiError> {
    let out = state
        .tenants()
        .delete_account(grpc(
            p,
            DeleteAccountRequest {
                tenant_id,
                expected_parent_tenant_id: None,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(tenant(out.account)?))
}

/// Merge keys into an account's metadata (existing keys are overwritten).
#[utoipa::path(post, path = "/tenants/resources/tenants/v1/{tenantId}/metadata", tag = "Accounts",
    params(("tenantId" = String, Path)), request_body = MetadataBody,
    responses((status = 201, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn add_metadata(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<MetadataBody>,
) -> Result<impl IntoResponse, ApiError> {
    // Refused here when over the limits (the service parses a string form itself).
    metadata_to_struct(Some(body.metadata.clone()), "metadata")?;
    let out = state
        .tenants()
        .add_account_metadata(grpc(
            &p,
            AddAccountMetadataRequest {
                tenant_id,
                metadata: Some(json_to_value(body.metadata)),
            },
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(tenant(out.account)?)))
}

/// Remove one metadata key.
#[utoipa::path(delete, path = "/tenants/resources/tenants/v1/{tenantId}/metadata/{key}", tag = "Accounts",
    params(("tenantId" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_metadata(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((tenant_id, key)): ApiPath<(String, String)>,
) -> Result<Json<Tenant>, ApiError> {
    let out = state
        .tenants()
        .delete_account_metadata(grpc(&p, DeleteAccountMetadataRequest { tenant_id, key }))
        .await?
        .into_inner();
    Ok(Json(tenant(out.account)?))
}

/// The accounts list's `metadata` filter: each `key:value` (the key ends at the first `:`; the
/// value is the rest, commas and colons included). The service bounds their number and sizes.
pub fn metadata_matches(raw_query: Option<&str>) -> Result<Vec<pb::MetadataMatch>, ApiError> {
    query_values(raw_query, "metadata")?
        .into_iter()
        .enumerate()
        .map(|(i, pair)| match pair.split_once(':') {
            Some((key, value)) => Ok(pb::MetadataMatch {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            None => Err(ApiError::invalid_field(
                &format!("metadata[{i}]"),
                "must be `key:value` (the key ends at the first colon)",
            )),
        })
        .collect()
}

/// List accounts with filter, sort and paging.
#[utoipa::path(get, path = "/tenants/resources/tenants/v2", tag = "Accounts",
    params(ListQuery,
        ("metadata" = Option<Vec<String>>, Query, style = Form, explode = true,
            description = "Only accounts whose metadata holds this pair: `key:value`, repeated for \
                several (all must hold). The key ends at the first `:` (1-256 characters); the \
                value is the rest (up to 1,024) and must equal the key's value exactly, as a \
                string (a number or boolean never matches). At most 10; no control characters.")),
    responses((status = 200, body = Paged<Tenant>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_accounts(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<ListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Paged<Tenant>>, ApiError> {
    let metadata = metadata_matches(raw.as_deref())?;
    let sort_by = sort_field(
        q.sort_by.as_deref(),
        "_sortBy",
        AccountSortField::Unspecified,
        &[
            ("createdAt", AccountSortField::CreatedAt),
            ("name", AccountSortField::Name),
            ("tenantId", AccountSortField::TenantId),
        ],
    )?;
    let request = ListAccountsRequest {
        page: page(q.limit, q.offset),
        filter: q.filter,
        sort_by: sort_by.into(),
        order: sort_order(q.order.as_deref(), "_order")?.into(),
        tenant_ids: split_list(q.tenant_ids.as_deref()),
        metadata,
    };
    let out = state
        .tenants()
        .list_accounts(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(Paged {
        items: out.accounts.into_iter().map(Tenant::from).collect(),
        metadata: out.page.into(),
    }))
}

/// The v2 read's answer: the account, or an empty array when there is none.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TenantOrNone {
    Found(Box<Tenant>),
    /// Always empty: no live account has this ID.
    #[schema(value_type = Vec<Object>)]
    Missing([Tenant; 0]),
}

/// Get an account; as the seed documents, an account that does not exist (or was deleted)
/// answers an empty array.
#[utoipa::path(get, path = "/tenants/resources/tenants/v2/{tenantId}", tag = "Accounts",
    params(("tenantId" = String, Path)),
    responses((status = 200, body = TenantOrNone), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_account_v2(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<Json<TenantOrNone>, ApiError> {
    let out = state
        .tenants()
        .get_account(grpc(&p, GetAccountRequest { tenant_id }))
        .await;
    match out {
        Ok(out) => Ok(Json(TenantOrNone::Found(Box::new(tenant(
            out.into_inner().account,
        )?)))),
        Err(status) if status.code() == tonic::Code::NotFound => {
            Ok(Json(TenantOrNone::Missing([])))
        }
        Err(status) => Err(status.into()),
    }
}

/// Update an account.
#[utoipa::path(put, path = "/tenants/resources/tenants/v2/{tenantId}", tag = "Accounts",
    params(("tenantId" = String, Path)), request_body = UpdateTenantBody,
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_account_v2(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTenantBody>,
) -> Result<Json<Tenant>, ApiError> {
    update_account(&state, &p, tenant_id, body).await
}

/// Get an account by its alias.
#[utoipa::path(get, path = "/tenants/resources/tenants/v2/alias/{alias}", tag = "Accounts",
    params(("alias" = String, Path)),
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_account_by_alias(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(alias): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    let out = state
        .tenants()
        .get_account_by_alias(grpc(&p, GetAccountByAliasRequest { alias }))
        .await?
        .into_inner();
    Ok(Json(tenant(out.account)?))
}
