//! Account settings, tag "Account settings" (self-service): the account of the token, or of
//! `frontegg-tenant-id` with an environment token.

use axum::{Json, extract::State};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tenantry_proto::tenant::v1::{
    self as pb, GetAccountSettingsRequest, GetPublicAccountSettingsRequest,
    UpdateAccountSettingsRequest,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Caller, permissions, require_permission, scope},
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, update_settings))
        .routes(routes!(get_public_settings))
}

/// Account settings; in updates only the given fields change (empty string clears).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountSettings {
    pub timezone: Option<String>,
    pub date_format: Option<String>,
    pub time_format: Option<String>,
    pub currency: Option<String>,
    pub address: Option<String>,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub application_url: Option<String>,
    pub website: Option<String>,
    pub locale: Option<String>,
}

impl From<AccountSettings> for pb::AccountSettings {
    fn from(s: AccountSettings) -> Self {
        Self {
            timezone: s.timezone,
            date_format: s.date_format,
            time_format: s.time_format,
            currency: s.currency,
            address: s.address,
            logo: s.logo,
            logo_url: s.logo_url,
            application_url: s.application_url,
            website: s.website,
            locale: s.locale,
        }
    }
}

impl From<pb::AccountSettings> for AccountSettings {
    fn from(s: pb::AccountSettings) -> Self {
        Self {
            timezone: s.timezone,
            date_format: s.date_format,
            time_format: s.time_format,
            currency: s.currency,
            address: s.address,
            logo: s.logo,
            logo_url: s.logo_url,
            application_url: s.application_url,
            website: s.website,
            locale: s.locale,
        }
    }
}

/// The settings safe to show unauthenticated users.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicSettings {
    pub tenant_id: String,
    pub name: String,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub application_url: Option<String>,
    pub timezone: Option<String>,
    pub date_format: Option<String>,
    pub time_format: Option<String>,
    pub locale: Option<String>,
}

/// Get account settings: the token's account, or `frontegg-tenant-id`.
#[utoipa::path(get, path = "/tenants/resources/account-settings/v1", tag = "Account settings",
    params(("frontegg-tenant-id" = String, Header, description = "The account; required with an environment token (a user token may leave it out for its own account)")),
    responses((status = 200, body = AccountSettings), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_settings(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
) -> Result<Json<AccountSettings>, ApiError> {
    let tenant_id = scope::target_account(&state, &p, &headers).await?;
    let out = state
        .tenants()
        .get_account_settings(grpc(&p, GetAccountSettingsRequest { tenant_id }))
        .await?
        .into_inner();
    Ok(Json(out.settings.unwrap_or_default().into()))
}

/// Update account settings (at least one).
#[utoipa::path(put, path = "/tenants/resources/account-settings/v1", tag = "Account settings",
    params(("frontegg-tenant-id" = String, Header, description = "The account; required with an environment token (a user token may leave it out for its own account)")),
    request_body = AccountSettings,
    responses((status = 200, body = AccountSettings), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_settings(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AccountSettings>,
) -> Result<Json<AccountSettings>, ApiError> {
    let tenant_id = scope::target_account(&state, &p, &headers).await?;
    require_permission(&p, permissions::WRITE_ACCOUNT_SETTINGS)?;
    let out = state
        .tenants()
        .update_account_settings(grpc(
            &p,
            UpdateAccountSettingsRequest {
                tenant_id,
                settings: Some(body.into()),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(out.settings.unwrap_or_default().into()))
}

/// Get the public subset of the account settings.
#[utoipa::path(get, path = "/tenants/resources/account-settings/v1/public", tag = "Account settings",
    params(("frontegg-tenant-id" = String, Header, description = "The account; required with an environment token (a user token may leave it out for its own account)")),
    responses((status = 200, body = PublicSettings), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_public_settings(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
) -> Result<Json<PublicSettings>, ApiError> {
    let tenant_id = scope::target_account(&state, &p, &headers).await?;
    let out = state
        .tenants()
        .get_public_account_settings(grpc(&p, GetPublicAccountSettingsRequest { tenant_id }))
        .await?
        .into_inner();
    let s = out.settings.unwrap_or_default();
    Ok(Json(PublicSettings {
        tenant_id: s.tenant_id,
        name: s.name,
        logo: s.logo,
        logo_url: s.logo_url,
        application_url: s.application_url,
        timezone: s.timezone,
        date_format: s.date_format,
        time_format: s.time_format,
        locale: s.locale,
    }))
}
