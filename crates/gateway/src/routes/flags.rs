//! Feature flags, tag "Feature flags" (Frontegg `/entitlements/resources/feature-flags/v1`).

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use tenantry_proto::entitlement::v1::{
    self as pb, CreateFeatureFlagRequest, DeleteFeatureFlagRequest, FeatureFlagSortField,
    GetFeatureFlagRequest, ListFeatureFlagsRequest, TargetingRuleList, UpdateFeatureFlagRequest,
    create_feature_flag_request,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    Deleted, ItemsPage, page,
    rules::{Rule, rule_from_pb, rules_to_pb, treatment, treatment_name},
    sort_field, sort_order, with_revision,
};
use crate::{
    auth::Management,
    convert::{metadata_to_struct, opt_struct_to_json, opt_timestamp},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey, split_list},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_flags, create_flag))
        .routes(routes!(get_flag, update_flag, delete_flag))
}

/// The feature a flag belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlagFeature {
    pub id: String,
    pub key: String,
    pub name: String,
}

/// A feature flag.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureFlag {
    pub id: String,
    /// Frontegg's vendor: one per deployment (`vendor_id`, README).
    pub vendor_id: String,
    pub name: String,
    pub on: bool,
    pub off_treatment: String,
    pub default_treatment: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub metadata: Json_,
    pub rules: Vec<Rule>,
    pub feature_id: String,
    pub feature: FlagFeature,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl FeatureFlag {
    pub fn new(f: pb::FeatureFlag, vendor_id: &str) -> Self {
        Self {
            vendor_id: vendor_id.to_owned(),
            off_treatment: treatment_name(f.off_treatment()).to_owned(),
            default_treatment: treatment_name(f.default_treatment()).to_owned(),
            feature: FlagFeature {
                id: f.feature_id.clone(),
                key: f.feature_key,
                name: f.feature_name,
            },
            id: f.id,
            name: f.name,
            on: f.on,
            description: f.description,
            metadata: opt_struct_to_json(f.metadata),
            rules: f.rules.into_iter().map(rule_from_pb).collect(),
            feature_id: f.feature_id,
            created_at: opt_timestamp(f.created_at),
            updated_at: opt_timestamp(f.updated_at),
        }
    }
}

fn flag(f: Option<pb::FeatureFlag>, vendor_id: &str) -> Result<FeatureFlag, ApiError> {
    f.map(|f| FeatureFlag::new(f, vendor_id))
        .ok_or_else(ApiError::internal)
}

/// Body of `POST /resources/feature-flags/v1` (the feature by `featureId` or `featureKey`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateFlagBody {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: String,
    pub on: bool,
    /// `"true"` or `"false"`.
    #[schema(pattern = "^(true|false)$")]
    pub off_treatment: String,
    /// `"true"` or `"false"`.
    #[schema(pattern = "^(true|false)$")]
    pub default_treatment: String,
    #[schema(format = Uuid)]
    pub feature_id: Option<String>,
    pub feature_key: Option<String>,
    #[serde(default)]
    pub description: String,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Body of `PATCH /resources/feature-flags/v1/{id}`: the fields to change. The flag as read
/// may be sent back whole, as Frontegg's clients do: `id` must then be the path's flag and
/// `featureId` its feature (a flag cannot move), while `feature`, `vendorId` and the
/// timestamps are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFlagBody {
    /// As read; must be the path's flag.
    pub id: Option<String>,
    /// As read; must be the flag's feature.
    pub feature_id: Option<String>,
    /// As read; ignored.
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub feature: Option<Json_>,
    /// As read; ignored.
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub vendor_id: Option<Json_>,
    /// As read; ignored (set by the server).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub created_at: Option<Json_>,
    /// As read; ignored (set by the server).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)] // accepted as read, ignored
    pub updated_at: Option<Json_>,
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: Option<String>,
    pub on: Option<bool>,
    #[schema(pattern = "^(true|false)$")]
    pub off_treatment: Option<String>,
    #[schema(pattern = "^(true|false)$")]
    pub default_treatment: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    pub rules: Option<Vec<Rule>>,
}

/// Query of the flag list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct FlagQuery {
    pub offset: Option<u32>,
    pub limit: Option<u32>,
    pub filter: Option<String>,
    /// `name`, `createdAt` (the default) or `updatedAt`; ties broken by id.
    #[param(pattern = "^(name|createdAt|updatedAt)?$")]
    pub order_by: Option<String>,
    /// `ASC` (the default) or `DESC`.
    #[param(pattern = "^([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc])?$")]
    pub sort_type: Option<String>,
    /// Comma-separated.
    pub feature_ids: Option<String>,
    pub on: Option<bool>,
}

/// List feature flags.
#[utoipa::path(get, path = "/entitlements/resources/feature-flags/v1", tag = "Feature flags",
    params(FlagQuery),
    responses((status = 200, body = ItemsPage<FeatureFlag>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_flags(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<FlagQuery>,
) -> Result<Json<ItemsPage<FeatureFlag>>, ApiError> {
    let sort_by = sort_field(
        q.order_by.as_deref(),
        "orderBy",
        FeatureFlagSortField::Unspecified,
        &[
            ("name", FeatureFlagSortField::Name),
            ("createdAt", FeatureFlagSortField::CreatedAt),
            ("updatedAt", FeatureFlagSortField::UpdatedAt),
        ],
    )?;
    let request = ListFeatureFlagsRequest {
        page: page(q.limit, q.offset),
        filter: q.filter,
        feature_ids: split_list(q.feature_ids.as_deref()),
        on: q.on,
        order: sort_order(q.sort_type.as_deref(), "sortType")?.into(),
        sort_by: sort_by.into(),
    };
    let out = state
        .flags()
        .list_feature_flags(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(ItemsPage::new(
        out.feature_flags
            .into_iter()
            .map(|f| FeatureFlag::new(f, &state.vendor_id))
            .collect(),
        out.page,
    )))
}

/// Create a feature flag.
#[utoipa::path(post, path = "/entitlements/resources/feature-flags/v1", tag = "Feature flags",
    params(IdempotencyKey), request_body = CreateFlagBody,
    responses((status = 201, body = FeatureFlag), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_flag(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<CreateFlagBody>,
) -> Result<Response, ApiError> {
    let feature = match (b.feature_id, b.feature_key) {
        (Some(id), None) => create_feature_flag_request::Feature::FeatureId(id),
        (None, Some(key)) => create_feature_flag_request::Feature::FeatureKey(key),
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::invalid_field(
                "featureId",
                "give exactly one of featureId and featureKey",
            ));
        }
    };
    let request = CreateFeatureFlagRequest {
        name: b.name,
        on: b.on,
        off_treatment: treatment(&b.off_treatment, "offTreatment")?.into(),
        default_treatment: treatment(&b.default_treatment, "defaultTreatment")?.into(),
        feature: Some(feature),
        description: b.description,
        metadata: metadata_to_struct(b.metadata, "metadata")?,
        rules: rules_to_pb(b.rules, "rules")?,
        idempotency_key,
    };
    let out = state
        .flags()
        .create_feature_flag(grpc(&p, request))
        .await?
        .into_inner();
    Ok(with_revision(
        (
            StatusCode::CREATED,
            Json(flag(out.feature_flag, &state.vendor_id)?),
        ),
        out.revision,
    ))
}

/// Get a feature flag.
#[utoipa::path(get, path = "/entitlements/resources/feature-flags/v1/{flagId}", tag = "Feature flags",
    params(("flagId" = String, Path)),
    responses((status = 200, body = FeatureFlag), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_flag(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FeatureFlag>, ApiError> {
    let out = state
        .flags()
        .get_feature_flag(grpc(&p, GetFeatureFlagRequest { id }))
        .await?
        .into_inner();
    Ok(Json(flag(out.feature_flag, &state.vendor_id)?))
}

/// Change a feature flag.
#[utoipa::path(patch, path = "/entitlements/resources/feature-flags/v1/{flagId}", tag = "Feature flags",
    params(("flagId" = String, Path)), request_body = UpdateFlagBody,
    responses((status = 200, body = FeatureFlag), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_flag(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<UpdateFlagBody>,
) -> Result<Response, ApiError> {
    if b.id.as_ref().is_some_and(|body_id| *body_id != id) {
        return Err(ApiError::invalid_field(
            "id",
            "names another flag than the path; a flag's ID cannot change",
        ));
    }
    let request = UpdateFeatureFlagRequest {
        id,
        feature_id: b.feature_id,
        name: b.name,
        on: b.on,
        off_treatment: b
            .off_treatment
            .map(|t| treatment(&t, "offTreatment").map(i32::from))
            .transpose()?,
        default_treatment: b
            .default_treatment
            .map(|t| treatment(&t, "defaultTreatment").map(i32::from))
            .transpose()?,
        description: b.description,
        metadata: metadata_to_struct(b.metadata, "metadata")?,
        rules: b
            .rules
            .map(|r| rules_to_pb(r, "rules").map(|rules| TargetingRuleList { rules }))
            .transpose()?,
    };
    let out = state
        .flags()
        .update_feature_flag(grpc(&p, request))
        .await?
        .into_inner();
    Ok(with_revision(
        Json(flag(out.feature_flag, &state.vendor_id)?),
        out.revision,
    ))
}

/// Delete a feature flag.
#[utoipa::path(delete, path = "/entitlements/resources/feature-flags/v1/{flagId}", tag = "Feature flags",
    params(("flagId" = String, Path)),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_flag(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let out = state
        .flags()
        .delete_feature_flag(grpc(&p, DeleteFeatureFlagRequest { id }))
        .await?
        .into_inner();
    Ok(with_revision(Json(Deleted { deleted: true }), out.revision))
}
