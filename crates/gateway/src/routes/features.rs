//! Features (Frontegg `/entitlements/resources/features/v1` and `/v2`) plus our `type` and
//! `mergePolicy`.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use tenantry_proto::entitlement::v1::{
    self as pb, CreateFeatureRequest, DeleteFeatureRequest, FeaturePermission,
    FeaturePermissionList, FeatureSortField, GetFeatureRequest, ListFeaturesRequest,
    UpdateFeatureRequest, get_feature_request,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    ItemsPage, page,
    rules::{
        allocation_type, allocation_type_name, merge_policy, merge_policy_name, treatment_name,
    },
    sort_field, sort_order, with_revision,
};
use crate::{
    auth::Management,
    convert::{metadata_to_struct, opt_struct_to_json, opt_timestamp, parse_time_field},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey, split_list},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_features, create_feature_v1))
        .routes(routes!(get_feature, update_feature_v1, delete_feature))
        .routes(routes!(create_feature_v2))
        .routes(routes!(update_feature_v2))
}

/// A permission linked to a feature.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permission {
    pub permission_key: String,
    pub permission_id: Option<String>,
}

/// The flag embedded in a feature.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedFlag {
    pub id: String,
    pub name: String,
    pub on: bool,
    pub off_treatment: String,
    pub default_treatment: String,
    pub description: String,
}

/// A feature.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    pub id: String,
    /// Frontegg's vendor: one per deployment (`vendor_id`, README).
    pub vendor_id: String,
    pub key: String,
    pub name: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub metadata: Json_,
    pub permissions: Vec<Permission>,
    /// `bool`, `max_count` or `metered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `max` or `sum` for `max_count` and `metered` features.
    pub merge_policy: Option<String>,
    /// What a `metered` feature counts and when its balance resets; absent for other types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metering: Option<Metering>,
    pub feature_flag: Option<EmbeddedFlag>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl Feature {
    pub fn new(f: pb::Feature, vendor_id: &str) -> Self {
        Self {
            vendor_id: vendor_id.to_owned(),
            kind: allocation_type_name(f.allocation_type()).to_owned(),
            merge_policy: merge_policy_name(f.merge_policy()).map(str::to_owned),
            metering: f.metering.map(Metering::new),
            id: f.id,
            key: f.key,
            name: f.name,
            description: f.description,
            metadata: opt_struct_to_json(f.metadata),
            permissions: f
                .permissions
                .into_iter()
                .map(|p| Permission {
                    permission_key: p.permission_key,
                    permission_id: p.permission_id,
                })
                .collect(),
            feature_flag: f.feature_flag.map(|flag| EmbeddedFlag {
                off_treatment: treatment_name(flag.off_treatment()).to_owned(),
                default_treatment: treatment_name(flag.default_treatment()).to_owned(),
                id: flag.id,
                name: flag.name,
                on: flag.on,
                description: flag.description,
            }),
            created_at: opt_timestamp(f.created_at),
            updated_at: opt_timestamp(f.updated_at),
        }
    }
}

/// A metered feature's metering, as answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metering {
    /// The usage unit.
    pub unit: String,
    /// `SUM`, `COUNT`, `MAX` or `UNIQUE_COUNT`.
    pub aggregation: String,
    /// The usage period's recurrence in its canonical ISO-8601 form (`MONTH` reads `P1M`).
    pub recurrence: String,
    /// The period's anchor: periods are anchor + n recurrences.
    #[schema(format = DateTime)]
    pub anchor: String,
    pub soft_limit: bool,
    pub carry_overage: bool,
}

impl Metering {
    fn new(m: pb::Metering) -> Self {
        Self {
            aggregation: aggregation_name(m.aggregation()).to_owned(),
            // Exact (not cut to milliseconds): an update sends the anchor back as read, and a
            // different one is refused.
            anchor: m.anchor.as_ref().map(exact_time).unwrap_or_default(),
            unit: m.unit,
            recurrence: m.recurrence,
            soft_limit: m.soft_limit,
            carry_overage: m.carry_overage,
        }
    }
}

fn exact_time(t: &prost_types::Timestamp) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub(crate) fn aggregation_name(a: pb::Aggregation) -> &'static str {
    match a {
        pb::Aggregation::Count => "COUNT",
        pb::Aggregation::Max => "MAX",
        pb::Aggregation::UniqueCount => "UNIQUE_COUNT",
        pb::Aggregation::Sum | pb::Aggregation::Unspecified => "SUM",
    }
}

/// `metering` of a create or an update: required exactly when `type` is `metered`. An update
/// replaces the whole metering (send it as read); its `aggregation`, `recurrence` and `anchor`
/// cannot change (412 `METERING_IMMUTABLE`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeteringBody {
    /// What is counted (`api_call`, `GB`): 1–64 characters, no whitespace or control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$"
    )]
    pub unit: String,
    /// How a period's usage aggregates: `SUM` (default), `COUNT`, `MAX` or `UNIQUE_COUNT`.
    #[schema(pattern = "^(SUM|COUNT|MAX|UNIQUE_COUNT)$")]
    pub aggregation: Option<String>,
    /// The usage period's recurrence: `DAY`, `WEEK`, `MONTH`, `YEAR` (any case) or an ISO-8601
    /// duration of whole numbers (`P14D`, `P1MT12H`), from one minute to 100 years.
    #[schema(
        max_length = 64,
        pattern = "^([Dd][Aa][Yy]|[Ww][Ee][Ee][Kk]|[Mm][Oo][Nn][Tt][Hh]|[Yy][Ee][Aa][Rr]|P([0-9]+Y([0-9]+M)?([0-9]+W)?([0-9]+D)?|[0-9]+M([0-9]+W)?([0-9]+D)?|[0-9]+W([0-9]+D)?|[0-9]+D)(T([0-9]+H([0-9]+M)?([0-9]+S)?|[0-9]+M([0-9]+S)?|[0-9]+S))?|PT([0-9]+H([0-9]+M)?([0-9]+S)?|[0-9]+M([0-9]+S)?|[0-9]+S))$"
    )]
    pub recurrence: String,
    /// The period's anchor (RFC 3339): periods start at anchor + n recurrences, months
    /// calendar-correct (an anchor on the 31st gives Feb 28/29, then Mar 31).
    #[schema(format = DateTime)]
    pub anchor: String,
    /// Soft limit: access continues past a zero balance, the excess reported as overage.
    #[serde(default)]
    pub soft_limit: bool,
    /// Overage at a reset is owed by the next period.
    #[serde(default)]
    pub carry_overage: bool,
}

impl MeteringBody {
    fn into_pb(self) -> Result<pb::Metering, ApiError> {
        let aggregation = match self.aggregation.as_deref() {
            None | Some("SUM") => pb::Aggregation::Sum,
            Some("COUNT") => pb::Aggregation::Count,
            Some("MAX") => pb::Aggregation::Max,
            Some("UNIQUE_COUNT") => pb::Aggregation::UniqueCount,
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "metering.aggregation",
                    "must be SUM, COUNT, MAX or UNIQUE_COUNT",
                ));
            }
        };
        Ok(pb::Metering {
            unit: self.unit,
            aggregation: aggregation.into(),
            recurrence: self.recurrence,
            anchor: Some(parse_time_field(&self.anchor, "metering.anchor")?),
            soft_limit: self.soft_limit,
            carry_overage: self.carry_overage,
        })
    }
}

fn feature(f: Option<pb::Feature>, vendor_id: &str) -> Result<Feature, ApiError> {
    f.map(|f| Feature::new(f, vendor_id))
        .ok_or_else(ApiError::internal)
}

/// Body of `POST /resources/features/v1`: permissions as keys.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateFeatureV1 {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// A JSON object or a string holding one.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    /// `bool` (default), `max_count` or `metered` (with `metering`).
    #[serde(rename = "type")]
    #[schema(pattern = "^(bool|max_count|metered)$")]
    pub kind: Option<String>,
    /// `max` (default) or `sum`, for `max_count` and `metered`.
    #[schema(pattern = "^(max|sum)$")]
    pub merge_policy: Option<String>,
    pub metering: Option<MeteringBody>,
}

/// Body of `POST /resources/features/v2`: permissions as objects, metadata a JSON string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateFeatureV2 {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: Vec<Permission>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    #[serde(rename = "type")]
    #[schema(pattern = "^(bool|max_count|metered)$")]
    pub kind: Option<String>,
    #[schema(pattern = "^(max|sum)$")]
    pub merge_policy: Option<String>,
    pub metering: Option<MeteringBody>,
}

/// Body of `PATCH /resources/features/v1/{id}`: only the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFeatureV1 {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: Option<String>,
    pub key: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    #[serde(rename = "type")]
    #[schema(pattern = "^(bool|max_count|metered)$")]
    pub kind: Option<String>,
    #[schema(pattern = "^(max|sum)$")]
    pub merge_policy: Option<String>,
    pub metering: Option<MeteringBody>,
}

/// Body of `PATCH /resources/features/v2/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFeatureV2 {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: Option<String>,
    pub key: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<Vec<Permission>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    #[serde(rename = "type")]
    #[schema(pattern = "^(bool|max_count|metered)$")]
    pub kind: Option<String>,
    #[schema(pattern = "^(max|sum)$")]
    pub merge_policy: Option<String>,
    pub metering: Option<MeteringBody>,
}

/// Query of the feature list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct FeatureQuery {
    pub offset: Option<u32>,
    /// Default 10.
    pub limit: Option<u32>,
    /// Substring of the name.
    pub filter: Option<String>,
    /// `name`, `key` or `createdAt`.
    #[param(pattern = "^(name|key|createdAt)?$")]
    pub order_by: Option<String>,
    /// `ASC` or `DESC`.
    #[param(pattern = "^([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc])?$")]
    pub sort_type: Option<String>,
    /// Comma-separated.
    pub feature_ids: Option<String>,
    /// Comma-separated.
    pub feature_keys: Option<String>,
    /// Comma-separated.
    pub permission_keys: Option<String>,
    pub has_feature_flag: Option<bool>,
}

/// Query of feature deletion.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Also unlink the feature from plans (and delete what depends on it).
    pub force: Option<bool>,
}

/// What a forced delete removed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDeleted {
    pub unlinked_plan_ids: Vec<String>,
}

fn keys(permissions: Vec<String>) -> Vec<FeaturePermission> {
    permissions
        .into_iter()
        .map(|permission_key| FeaturePermission {
            permission_key,
            permission_id: None,
        })
        .collect()
}

fn objects(permissions: Vec<Permission>) -> Vec<FeaturePermission> {
    permissions
        .into_iter()
        .map(|p| FeaturePermission {
            permission_key: p.permission_key,
            permission_id: p.permission_id,
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn create_request(
    idempotency_key: Option<String>,
    name: String,
    key: String,
    description: String,
    permissions: Vec<FeaturePermission>,
    metadata: Option<Json_>,
    kind: Option<&str>,
    merge: Option<&str>,
    metering: Option<MeteringBody>,
) -> Result<CreateFeatureRequest, ApiError> {
    Ok(CreateFeatureRequest {
        key,
        name,
        description,
        metadata: metadata_to_struct(metadata, "metadata")?,
        permissions,
        allocation_type: kind
            .map(|k| allocation_type(k, "type"))
            .transpose()?
            .unwrap_or(pb::AllocationType::Unspecified)
            .into(),
        merge_policy: merge
            .map(|m| merge_policy(m, "mergePolicy"))
            .transpose()?
            .unwrap_or(pb::MergePolicy::Unspecified)
            .into(),
        metering: metering.map(MeteringBody::into_pb).transpose()?,
        idempotency_key,
    })
}

async fn create(
    state: &AppState,
    p: &crate::auth::Principal,
    request: CreateFeatureRequest,
) -> Result<Response, ApiError> {
    let out = state
        .features()
        .create_feature(grpc(p, request))
        .await?
        .into_inner();
    Ok(with_revision(
        (
            StatusCode::CREATED,
            Json(feature(out.feature, &state.vendor_id)?),
        ),
        out.revision,
    ))
}

#[allow(clippy::too_many_arguments)]
fn update_request(
    id: String,
    name: Option<String>,
    key: Option<String>,
    description: Option<String>,
    permissions: Option<Vec<FeaturePermission>>,
    metadata: Option<Json_>,
    kind: Option<&str>,
    merge: Option<&str>,
    metering: Option<MeteringBody>,
) -> Result<UpdateFeatureRequest, ApiError> {
    Ok(UpdateFeatureRequest {
        id,
        key,
        name,
        description,
        metadata: metadata_to_struct(metadata, "metadata")?,
        permissions: permissions.map(|permissions| FeaturePermissionList { permissions }),
        allocation_type: kind
            .map(|k| allocation_type(k, "type").map(i32::from))
            .transpose()?,
        merge_policy: merge
            .map(|m| merge_policy(m, "mergePolicy").map(i32::from))
            .transpose()?,
        metering: metering.map(MeteringBody::into_pb).transpose()?,
    })
}

async fn update(
    state: &AppState,
    p: &crate::auth::Principal,
    request: UpdateFeatureRequest,
) -> Result<Response, ApiError> {
    let out = state
        .features()
        .update_feature(grpc(p, request))
        .await
        .map_err(|status| {
            // The service names the gRPC field; REST calls it `type`.
            let mut e = ApiError::from(status);
            for v in &mut e.body.field_violations {
                if v.field == "allocationType" {
                    "type".clone_into(&mut v.field);
                }
            }
            e
        })?
        .into_inner();
    Ok(with_revision(
        Json(feature(out.feature, &state.vendor_id)?),
        out.revision,
    ))
}

/// List features (`{"items", "hasNext"}`).
#[utoipa::path(get, path = "/entitlements/resources/features/v1", tag = "Features",
    params(FeatureQuery),
    responses((status = 200, body = ItemsPage<Feature>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_features(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<FeatureQuery>,
) -> Result<Json<ItemsPage<Feature>>, ApiError> {
    let sort_by = sort_field(
        q.order_by.as_deref(),
        "orderBy",
        FeatureSortField::Unspecified,
        &[
            ("name", FeatureSortField::Name),
            ("key", FeatureSortField::Key),
            ("createdAt", FeatureSortField::CreatedAt),
        ],
    )?;
    let request = ListFeaturesRequest {
        page: page(q.limit, q.offset),
        filter: q.filter,
        feature_ids: split_list(q.feature_ids.as_deref()),
        feature_keys: split_list(q.feature_keys.as_deref()),
        permission_keys: split_list(q.permission_keys.as_deref()),
        has_feature_flag: q.has_feature_flag,
        sort_by: sort_by.into(),
        order: sort_order(q.sort_type.as_deref(), "sortType")?.into(),
    };
    let out = state
        .features()
        .list_features(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(ItemsPage::new(
        out.features
            .into_iter()
            .map(|f| Feature::new(f, &state.vendor_id))
            .collect(),
        out.page,
    )))
}

/// Create a feature (permissions as keys).
#[utoipa::path(post, path = "/entitlements/resources/features/v1", tag = "Features",
    params(IdempotencyKey), request_body = CreateFeatureV1,
    responses((status = 201, body = Feature), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_feature_v1(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<CreateFeatureV1>,
) -> Result<Response, ApiError> {
    let request = create_request(
        idempotency_key,
        b.name,
        b.key,
        b.description,
        keys(b.permissions),
        b.metadata,
        b.kind.as_deref(),
        b.merge_policy.as_deref(),
        b.metering,
    )?;
    create(&state, &p, request).await
}

/// Create a feature (permissions as `{permissionKey, permissionId}`).
#[utoipa::path(post, path = "/entitlements/resources/features/v2", tag = "Features",
    params(IdempotencyKey), request_body = CreateFeatureV2,
    responses((status = 201, body = Feature), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_feature_v2(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<CreateFeatureV2>,
) -> Result<Response, ApiError> {
    let request = create_request(
        idempotency_key,
        b.name,
        b.key,
        b.description,
        objects(b.permissions),
        b.metadata,
        b.kind.as_deref(),
        b.merge_policy.as_deref(),
        b.metering,
    )?;
    create(&state, &p, request).await
}

/// Get a feature by ID.
#[utoipa::path(get, path = "/entitlements/resources/features/v1/{featureId}", tag = "Features",
    params(("featureId" = String, Path)),
    responses((status = 200, body = Feature), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_feature(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Feature>, ApiError> {
    let out = state
        .features()
        .get_feature(grpc(
            &p,
            GetFeatureRequest {
                selector: Some(get_feature_request::Selector::Id(id)),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(feature(out.feature, &state.vendor_id)?))
}

/// Change a feature (permissions as keys).
#[utoipa::path(patch, path = "/entitlements/resources/features/v1/{featureId}", tag = "Features",
    params(("featureId" = String, Path)), request_body = UpdateFeatureV1,
    responses((status = 200, body = Feature), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_feature_v1(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<UpdateFeatureV1>,
) -> Result<Response, ApiError> {
    let request = update_request(
        id,
        b.name,
        b.key,
        b.description,
        b.permissions.map(keys),
        b.metadata,
        b.kind.as_deref(),
        b.merge_policy.as_deref(),
        b.metering,
    )?;
    update(&state, &p, request).await
}

/// Change a feature (permissions as objects).
#[utoipa::path(patch, path = "/entitlements/resources/features/v2/{featureId}", tag = "Features",
    params(("featureId" = String, Path)), request_body = UpdateFeatureV2,
    responses((status = 200, body = Feature), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_feature_v2(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<UpdateFeatureV2>,
) -> Result<Response, ApiError> {
    let request = update_request(
        id,
        b.name,
        b.key,
        b.description,
        b.permissions.map(objects),
        b.metadata,
        b.kind.as_deref(),
        b.merge_policy.as_deref(),
        b.metering,
    )?;
    update(&state, &p, request).await
}

/// Delete a feature; one linked to plans needs `?force=true`.
#[utoipa::path(delete, path = "/entitlements/resources/features/v1/{featureId}", tag = "Features",
    params(("featureId" = String, Path), ForceQuery),
    responses((status = 200, body = FeatureDeleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_feature(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let out = state
        .features()
        .delete_feature(grpc(
            &p,
            DeleteFeatureRequest {
                id,
                force: q.force.unwrap_or(false),
            },
        ))
        .await?
        .into_inner();
    Ok(with_revision(
        Json(FeatureDeleted {
            unlinked_plan_ids: out.unlinked_plan_ids,
        }),
        out.revision,
    ))
}
