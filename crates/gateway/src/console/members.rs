//! An account's members and settings, on its page.
//!
//! The REST rules: members are environment-only (`Management`: list, add, remove); settings
//! follow the self-service rule (`scope::ensure_account` to read, plus the
//! `fe.account-settings.write.account` permission to change), so a user session reads the
//! settings of every account it reaches and changes them only with that permission.

use axum::{
    Form, Router,
    extract::{Path, State},
    response::Response,
    routing::post,
};
use serde::Deserialize;
use tenantry_proto::tenant::v1::{
    self as pb, AddMembershipRequest, GetAccountSettingsRequest, ListAccountMembersRequest,
    RemoveMembershipRequest, UpdateAccountSettingsRequest,
};

use super::{Console, PageError, SignedIn, account_href, encode, first_page, see, write_then_see};
use crate::{
    auth::{Principal, permissions, require_permission, scope},
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/accounts/{id}/members", post(add))
        .route("/accounts/{id}/members/{user}/remove", post(remove))
        .route("/accounts/{id}/settings", post(update_settings))
}

/// Most members an account's page lists.
const MEMBERS: u32 = 200;

pub struct MemberRow {
    pub user_id: String,
    pub since: String,
    pub remove_action: String,
}

/// The account's members (environment sessions; `None` for a user session, which the REST
/// API does not show them to).
pub async fn members(
    c: &Console,
    p: &Principal,
    tenant_id: &str,
) -> Result<Option<Vec<MemberRow>>, PageError> {
    if !matches!(p, Principal::Environment { .. }) {
        return Ok(None);
    }
    let out = c
        .app
        .memberships()
        .list_account_members(grpc(
            p,
            ListAccountMembersRequest {
                tenant_id: tenant_id.to_owned(),
                page: first_page(MEMBERS),
            },
        ))
        .await?
        .into_inner();
    Ok(Some(
        out.memberships
            .into_iter()
            .map(|m| MemberRow {
                remove_action: format!(
                    "/console/accounts/{}/members/{}/remove",
                    encode(tenant_id),
                    encode(&m.user_id)
                ),
                since: crate::convert::opt_timestamp(m.created_at).unwrap_or_default(),
                user_id: m.user_id,
            })
            .collect(),
    ))
}

/// One setting as the page shows and the form sends it.
pub struct SettingRow {
    pub field: &'static str,
    pub label: &'static str,
    pub value: String,
}

/// The settings the console shows, in the REST body's names (`logo`, a base64 image, is left
/// to the API).
fn setting_rows(s: pb::AccountSettings) -> Vec<SettingRow> {
    let row = |field, label, value: Option<String>| SettingRow {
        field,
        label,
        value: value.unwrap_or_default(),
    };
    vec![
        row("timezone", "Time zone", s.timezone),
        row("locale", "Locale", s.locale),
        row("currency", "Currency", s.currency),
        row("dateFormat", "Date format", s.date_format),
        row("timeFormat", "Time format", s.time_format),
        row("address", "Address", s.address),
        row("website", "Website", s.website),
        row("applicationUrl", "Application URL", s.application_url),
        row("logoUrl", "Logo URL", s.logo_url),
    ]
}

/// The account's settings and whether this session may change them.
pub async fn settings(
    c: &Console,
    p: &Principal,
    tenant_id: &str,
) -> Result<(Vec<SettingRow>, bool), PageError> {
    let out = c
        .app
        .tenants()
        .get_account_settings(grpc(
            p,
            GetAccountSettingsRequest {
                tenant_id: tenant_id.to_owned(),
            },
        ))
        .await?
        .into_inner();
    Ok((
        setting_rows(out.settings.unwrap_or_default()),
        p.has_permission(permissions::WRITE_ACCOUNT_SETTINGS),
    ))
}

#[derive(Deserialize)]
pub struct MemberForm {
    user_id: String,
}

async fn add(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> Result<Response, PageError> {
    let request = AddMembershipRequest {
        tenant_id: id.clone(),
        user_id: form.user_id.trim().to_owned(),
        idempotency_key: None,
    };
    write_then_see(&session, &account_href(&id), |p| async move {
        c.app.memberships().add_membership(grpc(&p, request)).await
    })
    .await
}

async fn remove(
    State(c): State<Console>,
    session: SignedIn,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let request = RemoveMembershipRequest {
        tenant_id: id.clone(),
        user_id: user,
    };
    write_then_see(&session, &account_href(&id), |p| async move {
        c.app
            .memberships()
            .remove_membership(grpc(&p, request))
            .await
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsForm {
    timezone: Option<String>,
    locale: Option<String>,
    currency: Option<String>,
    date_format: Option<String>,
    time_format: Option<String>,
    address: Option<String>,
    website: Option<String>,
    application_url: Option<String>,
    logo_url: Option<String>,
}

/// Writes every shown setting as typed (an empty field clears it, as in the API).
async fn update_settings(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Result<Response, PageError> {
    let p = &session.principal;
    scope::ensure_account(&c.app, p, &id).await?;
    require_permission(p, permissions::WRITE_ACCOUNT_SETTINGS)?;
    let trim = |v: Option<String>| v.map(|v| v.trim().to_owned());
    let settings = pb::AccountSettings {
        timezone: trim(form.timezone),
        locale: trim(form.locale),
        currency: trim(form.currency),
        date_format: trim(form.date_format),
        time_format: trim(form.time_format),
        address: trim(form.address),
        website: trim(form.website),
        application_url: trim(form.application_url),
        logo_url: trim(form.logo_url),
        logo: None,
    };
    c.app
        .tenants()
        .update_account_settings(grpc(
            p,
            UpdateAccountSettingsRequest {
                tenant_id: id.clone(),
                settings: Some(settings),
            },
        ))
        .await?;
    Ok(see(&account_href(&id)))
}
