//! The tenant-scope rule of self-service routes: a user token acts on its own account, and on
//! that account's descendants when the account's hierarchy settings give sub-account access
//! (`defaultOn` or `alwaysOn`; `defaultOff`, the default, keeps users to their own account).
//! Anything else is the same 403 whether the target exists, is elsewhere or is unknown, so a
//! token cannot probe other tenants. Environment tokens reach every account.

use std::collections::HashSet;

use http::HeaderMap;
use tenantry_proto::tenant::v1::CheckSubAccountScopeRequest;

use super::Principal;
use crate::{
    error::ApiError,
    state::{AppState, grpc},
};

/// Header naming the account of a self-service call (required with environment tokens).
pub const TENANT_HEADER: &str = "frontegg-tenant-id";

/// The account a self-service call acts on: the `frontegg-tenant-id` header (checked against
/// the token's scope) or, for a user token without it, the token's own account.
pub async fn target_account(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let header = match headers.get(TENANT_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid_field(TENANT_HEADER, "must be a non-empty account ID")
                })?
                .to_owned(),
        ),
    };
    // Checked whatever the token: an environment token's header names the account as-is, so
    // a malformed one would otherwise reach the services (or be ignored) instead of a 400.
    if let Some(problem) = header
        .as_deref()
        .and_then(tenantry_common::ids::tenant_id_problem)
    {
        return Err(ApiError::invalid_field(TENANT_HEADER, problem));
    }
    match (principal, header) {
        (Principal::Environment { .. }, Some(tenant)) => Ok(tenant),
        (Principal::Environment { .. }, None) => Err(ApiError::invalid_field(
            TENANT_HEADER,
            "is required with an environment token",
        )),
        (Principal::User { tenant_id, .. }, None) => Ok(tenant_id.clone()),
        (Principal::User { .. }, Some(tenant)) => {
            ensure_account(state, principal, &tenant).await?;
            Ok(tenant)
        }
    }
}

/// The `frontegg-tenant-id` header, when given, checked like [`target_account`]: routes that
/// name their account in the body or the path still refuse a header naming an account the
/// token cannot reach (the same 403 whether or not it exists). `None` without the header.
pub async fn header_account(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    if headers.contains_key(TENANT_HEADER) {
        target_account(state, principal, headers).await.map(Some)
    } else {
        Ok(None)
    }
}

/// Allows the call when the principal may act on `target`.
pub async fn ensure_account(
    state: &AppState,
    principal: &Principal,
    target: &str,
) -> Result<(), ApiError> {
    match principal {
        Principal::Environment { .. } => Ok(()),
        Principal::User { tenant_id, .. } if tenant_id == target => Ok(()),
        Principal::User { .. } => ensure_descendant(state, principal, target).await,
    }
}

/// Allows the call only when the principal may act on every account in `targets` (the rule
/// of [`ensure_account`] for the set, in one scope call per [`SCOPE_CALL_MAX`] accounts).
pub async fn ensure_accounts<'a>(
    state: &AppState,
    principal: &Principal,
    targets: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), ApiError> {
    match readable(state, principal, targets.clone()).await? {
        Some(allowed) if !targets.into_iter().all(|t| allowed.contains(t)) => {
            Err(ApiError::forbidden())
        }
        Some(_) | None => Ok(()),
    }
}

/// Allows the call only when `target` is a sub-account (at any depth) the user may reach;
/// the user's own account is not its own sub-account.
pub async fn ensure_descendant(
    state: &AppState,
    principal: &Principal,
    target: &str,
) -> Result<(), ApiError> {
    let Principal::User { tenant_id: own, .. } = principal else {
        return Ok(());
    };
    if own == target {
        return Err(ApiError::forbidden());
    }
    if reachable_sub_accounts(state, principal, own, &[target])
        .await?
        .contains(target)
    {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// The accounts among `targets` the principal may act on, by the rule of [`ensure_account`],
/// decided for the whole set with one scope call (per [`SCOPE_CALL_MAX`] accounts) whatever
/// the set's size or the accounts' depths. `None` for an environment token: every account.
pub async fn readable<'a>(
    state: &AppState,
    principal: &Principal,
    targets: impl IntoIterator<Item = &'a str>,
) -> Result<Option<HashSet<String>>, ApiError> {
    let Principal::User { tenant_id: own, .. } = principal else {
        return Ok(None);
    };
    let mut others: Vec<&str> = targets.into_iter().filter(|t| *t != own).collect();
    others.sort_unstable();
    others.dedup();
    let mut allowed = HashSet::with_capacity(others.len() + 1);
    for chunk in others.chunks(SCOPE_CALL_MAX) {
        allowed.extend(reachable_sub_accounts(state, principal, own, chunk).await?);
    }
    allowed.insert(own.clone());
    Ok(Some(allowed))
}

/// Most accounts the tenant service decides in one scope call.
pub const SCOPE_CALL_MAX: usize = 1_000;

/// The sub-accounts among `targets` that users of `own` reach (the tenant service applies
/// the hierarchy settings).
async fn reachable_sub_accounts(
    state: &AppState,
    principal: &Principal,
    own: &str,
    targets: &[&str],
) -> Result<HashSet<String>, ApiError> {
    if targets.is_empty() {
        return Ok(HashSet::new());
    }
    let out = state
        .hierarchy()
        .check_sub_account_scope(grpc(
            principal,
            CheckSubAccountScopeRequest {
                caller_tenant_id: own.to_owned(),
                tenant_ids: targets.iter().map(|t| (*t).to_owned()).collect(),
            },
        ))
        .await
        .map_err(outage_or_forbidden)?
        .into_inner();
    Ok(out.reachable_tenant_ids.into_iter().collect())
}

/// Outages keep their status (503, 504, …); every other failure to prove scope is the uniform
/// 403.
fn outage_or_forbidden(status: tonic::Status) -> ApiError {
    if tenantry_common::grpc::is_outage(&status) {
        ApiError::from(status)
    } else {
        ApiError::forbidden()
    }
}
