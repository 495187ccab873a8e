//! Route handlers: authenticate, map JSON ⇄ gRPC, map status codes. No business logic.

pub mod account_settings;
pub mod accounts;
pub mod audit;
pub mod checks;
pub mod compat;
pub mod features;
pub mod flags;
pub mod grants;
pub mod hierarchy;
pub mod memberships;
pub mod metering;
pub mod migrations;
pub mod plans;
pub mod platform;
pub mod reservations;
pub mod route_policies;
pub mod rules;
pub mod stream;
pub mod vendor_entitlements;
pub mod webhooks;
pub mod what_if;

use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tenantry_proto::common::v1::{PageInfo, PageRequest, SortOrder};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Header carrying the entitlement service revision a write produced; pass it as
/// `minRevision` to a check to read your own write.
pub const REVISION_HEADER: &str = "x-tenantry-revision";

/// Paging totals of account-management lists.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListMetadata {
    pub total_items: u64,
    pub total_pages: u64,
}

impl From<Option<PageInfo>> for ListMetadata {
    fn from(page: Option<PageInfo>) -> Self {
        let page = page.unwrap_or_default();
        Self {
            total_items: page.total_items,
            total_pages: page.total_pages,
        }
    }
}

/// Paging of membership lists and of a migration's item errors.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size: default 50, maximum 200.
    #[serde(rename = "_limit")]
    #[param(rename = "_limit")]
    pub limit: Option<u32>,
    #[serde(rename = "_offset")]
    #[param(rename = "_offset")]
    pub offset: Option<u32>,
}

/// An account-management list: `{"items": [...], "_metadata": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    #[serde(rename = "_metadata")]
    pub metadata: ListMetadata,
}

/// An entitlements list (Frontegg): `{"items": [...], "hasNext": bool}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemsPage<T: ToSchema> {
    pub items: Vec<T>,
    pub has_next: bool,
}

impl<T: ToSchema> ItemsPage<T> {
    pub fn new(items: Vec<T>, page: Option<PageInfo>) -> Self {
        Self {
            items,
            has_next: page.is_some_and(|p| p.has_next),
        }
    }
}

/// Frontegg's `ASC`/`DESC` (any case).
pub fn sort_order(value: Option<&str>, field: &str) -> Result<SortOrder, ApiError> {
    match value.map(str::to_ascii_uppercase).as_deref() {
        None | Some("") => Ok(SortOrder::Unspecified),
        Some("ASC") => Ok(SortOrder::Asc),
        Some("DESC") => Ok(SortOrder::Desc),
        Some(_) => Err(ApiError::invalid_field(field, "must be ASC or DESC")),
    }
}

/// A sort-field query parameter: absent or empty means the service's default (`unspecified`),
/// anything else must be one of `choices`, else 400 naming them.
pub fn sort_field<T: Copy>(
    value: Option<&str>,
    field: &str,
    unspecified: T,
    choices: &[(&str, T)],
) -> Result<T, ApiError> {
    match value {
        None | Some("") => Ok(unspecified),
        Some(v) => choices
            .iter()
            .find(|(name, _)| *name == v)
            .map(|(_, sort)| *sort)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                let listed = match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    _ => names.concat(),
                };
                ApiError::invalid_field(field, format!("must be {listed}"))
            }),
    }
}

pub fn page(limit: Option<u32>, offset: Option<u32>) -> Option<PageRequest> {
    Some(PageRequest {
        limit,
        offset: offset.unwrap_or_default(),
    })
}

/// A JSON body with the write's revision in [`REVISION_HEADER`].
pub fn with_revision(response: impl IntoResponse, revision: u64) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(REVISION_HEADER, HeaderValue::from(revision));
    response
}

/// `{"id": ...}`-free acknowledgement of a delete.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    /// Always true.
    pub deleted: bool,
}

/// Distinguishes an absent JSON field (outer `None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_fields_default_when_absent_and_name_the_choices_when_unknown() {
        let choices = [("name", 1), ("key", 2), ("createdAt", 3)];
        assert_eq!(sort_field(None, "orderBy", 0, &choices).unwrap(), 0);
        assert_eq!(sort_field(Some(""), "orderBy", 0, &choices).unwrap(), 0);
        assert_eq!(sort_field(Some("key"), "orderBy", 0, &choices).unwrap(), 2);
        let err = sort_field(Some("Key"), "orderBy", 0, &choices).unwrap_err();
        assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
        assert!(
            err.body.message.contains("must be name, key or createdAt"),
            "{}",
            err.body.message
        );
        let err = sort_field(Some("x"), "orderBy", 0, &choices[..2]).unwrap_err();
        assert!(
            err.body.message.contains("must be name or key"),
            "{}",
            err.body.message
        );
    }
}
