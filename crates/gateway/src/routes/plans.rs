//! Plans (Frontegg `/entitlements/resources/plans/v1`) plus our `key`, `features` with
//! allocations and `inheritToSubAccounts`.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use tenantry_proto::entitlement::v1::{
    self as pb, CreatePlanRequest, DeletePlanRequest, GetPlanWithGrantsRequest,
    LinkPlanFeaturesRequest, ListPlanFeaturesRequest, ListPlansRequest, ListTenantPlansRequest,
    NullableDays, PlanFeatureInput, PlanFeatureInputList, PlanSortField, TargetingRuleList,
    UnlinkPlanFeaturesRequest, UpdatePlanRequest,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    ItemsPage, double_option,
    features::{Feature, ForceQuery},
    grants::Entitlement,
    page,
    rules::{
        AllocationJson, Rule, allocation_json, allocation_to_pb, rule_from_pb, rules_to_pb,
        treatment, treatment_name,
    },
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
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(get_plan, update_plan, delete_plan))
        .routes(routes!(list_plan_features))
        .routes(routes!(link_features))
        .routes(routes!(unlink_features))
        .routes(routes!(tenant_plans))
}

/// A feature inside a plan, with what the plan allocates.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanFeature {
    pub id: String,
    pub key: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub allocation: AllocationJson,
}

/// A plan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: String,
    /// Frontegg's vendor: one per deployment (`vendor_id`, README).
    pub vendor_id: String,
    pub key: String,
    pub name: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub metadata: Json_,
    pub features: Vec<PlanFeature>,
    /// Days a grant without expiry lasts; null = no default.
    pub default_time_limitation: Option<u32>,
    pub assign_on_signup: bool,
    pub rules: Vec<Rule>,
    /// `"true"` or `"false"`.
    pub default_treatment: String,
    pub inherit_to_sub_accounts: bool,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// The plan's grants, newest first, in every status (Frontegg's plan object lists them):
    /// on `GET /resources/plans/v1/{planId}` its 100 newest, on a create none; other answers
    /// leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub entitlements: Option<Vec<Entitlement>>,
    /// With `entitlements`: the plan has more grants than it lists (`GET
    /// /resources/entitlements/v2?planIds=` pages through them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_more_entitlements: Option<bool>,
}

fn plan_feature(f: pb::PlanFeature) -> PlanFeature {
    PlanFeature {
        id: f.feature_id,
        key: f.feature_key,
        name: f.feature_name,
        permissions: f.permission_keys,
        allocation: allocation_json(f.allocation),
    }
}

impl Plan {
    pub fn new(p: pb::Plan, vendor_id: &str) -> Self {
        Self {
            vendor_id: vendor_id.to_owned(),
            entitlements: None,
            has_more_entitlements: None,
            default_treatment: treatment_name(p.default_treatment()).to_owned(),
            id: p.id,
            key: p.key,
            name: p.name,
            description: p.description,
            metadata: opt_struct_to_json(p.metadata),
            features: p.features.into_iter().map(plan_feature).collect(),
            default_time_limitation: p.default_time_limitation_days,
            assign_on_signup: p.assign_on_signup,
            rules: p.rules.into_iter().map(rule_from_pb).collect(),
            inherit_to_sub_accounts: p.inherit_to_sub_accounts,
            created_at: opt_timestamp(p.created_at),
            updated_at: opt_timestamp(p.updated_at),
        }
    }
}

pub fn plan(p: Option<pb::Plan>, vendor_id: &str) -> Result<Plan, ApiError> {
    p.map(|p| Plan::new(p, vendor_id))
        .ok_or_else(ApiError::internal)
}

/// A feature to include, with an optional allocation (default `bool` true).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanFeatureBody {
    pub feature_key: String,
    pub allocation: Option<AllocationJson>,
}

/// Body of `POST /resources/plans/v1`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePlanBody {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: String,
    /// Unique key; derived from the name when absent.
    pub key: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Frontegg's bare feature keys (bool true).
    #[serde(default)]
    pub feature_keys: Vec<String>,
    /// Features with allocations.
    #[serde(default)]
    pub features: Vec<PlanFeatureBody>,
    /// Outcome of targeting when no rule matches: `"false"` (default: only grants and
    /// matching rules give the plan) or `"true"` (every account holds it).
    #[schema(pattern = "^(true|false)$")]
    pub default_treatment: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    /// Days, at least 1.
    #[schema(minimum = 1)]
    pub default_time_limitation: Option<u32>,
    #[serde(default)]
    pub assign_on_signup: bool,
    #[serde(default)]
    pub inherit_to_sub_accounts: bool,
}

/// Body of `PATCH /resources/plans/v1/{id}`: only the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePlanBody {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: Option<String>,
    pub key: Option<String>,
    pub description: Option<String>,
    /// Replaces the features (with `features`).
    pub feature_keys: Option<Vec<String>>,
    pub features: Option<Vec<PlanFeatureBody>>,
    #[schema(pattern = "^(true|false)$")]
    pub default_treatment: Option<String>,
    pub rules: Option<Vec<Rule>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    /// Days, at least 1; `null` clears.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub default_time_limitation: Option<Option<u32>>,
    pub assign_on_signup: Option<bool>,
    pub inherit_to_sub_accounts: Option<bool>,
}

/// Body of `PATCH .../features/link`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkBody {
    /// Frontegg's feature IDs.
    #[serde(default)]
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub features_ids: Vec<String>,
    /// Features by key with allocations.
    #[serde(default)]
    pub features: Vec<PlanFeatureBody>,
}

/// Body of `PATCH .../features/unlink`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnlinkBody {
    /// IDs of linked features; others are ignored.
    #[serde(default)]
    pub features_ids: Vec<String>,
    #[serde(default)]
    pub feature_keys: Vec<String>,
}

/// Query of the plan list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PlanQuery {
    pub offset: Option<u32>,
    pub limit: Option<u32>,
    pub filter: Option<String>,
    /// `name` or `createdAt`.
    #[param(pattern = "^(name|createdAt)?$")]
    pub order_by: Option<String>,
    #[param(pattern = "^([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc])?$")]
    pub sort_type: Option<String>,
    /// Comma-separated.
    pub feature_ids: Option<String>,
    /// Comma-separated.
    pub user_ids: Option<String>,
    /// Comma-separated.
    pub tenant_ids: Option<String>,
}

/// Query of the plans of an account.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TenantPlansQuery {
    pub exclude_non_entitled_plans: Option<bool>,
    /// Comma-separated.
    pub feature_keys: Option<String>,
    /// Answer only once the entitlement index includes this revision (the
    /// `x-tenantry-revision` of a write), else 503.
    pub min_revision: Option<u64>,
}

/// A plan as it applies to one account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantPlan {
    #[serde(flatten)]
    pub plan: Plan,
    pub targeted: bool,
    pub entitled: bool,
    pub grant_ids: Vec<String>,
}

fn features_input(
    keys: Vec<String>,
    features: Vec<PlanFeatureBody>,
) -> Result<Vec<PlanFeatureInput>, ApiError> {
    let mut out: Vec<PlanFeatureInput> = keys
        .into_iter()
        .map(|feature_key| PlanFeatureInput {
            feature_key,
            allocation: None,
        })
        .collect();
    for (i, f) in features.into_iter().enumerate() {
        out.push(PlanFeatureInput {
            feature_key: f.feature_key,
            allocation: f
                .allocation
                .map(|a| allocation_to_pb(a, &format!("features[{i}].allocation")))
                .transpose()?,
        });
    }
    Ok(out)
}

/// List plans (`{"items", "hasNext"}`).
#[utoipa::path(get, path = "/entitlements/resources/plans/v1", tag = "Plans",
    params(PlanQuery),
    responses((status = 200, body = ItemsPage<Plan>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_plans(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> Result<Json<ItemsPage<Plan>>, ApiError> {
    let sort_by = sort_field(
        q.order_by.as_deref(),
        "orderBy",
        PlanSortField::Unspecified,
        &[
            ("name", PlanSortField::Name),
            ("createdAt", PlanSortField::CreatedAt),
        ],
    )?;
    let request = ListPlansRequest {
        page: page(q.limit, q.offset),
        filter: q.filter,
        feature_ids: split_list(q.feature_ids.as_deref()),
        user_ids: split_list(q.user_ids.as_deref()),
        tenant_ids: split_list(q.tenant_ids.as_deref()),
        sort_by: sort_by.into(),
        order: sort_order(q.sort_type.as_deref(), "sortType")?.into(),
    };
    let out = state
        .plans()
        .list_plans(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(ItemsPage::new(
        out.plans
            .into_iter()
            .map(|p| Plan::new(p, &state.vendor_id))
            .collect(),
        out.page,
    )))
}

/// Create a plan.
#[utoipa::path(post, path = "/entitlements/resources/plans/v1", tag = "Plans",
    params(IdempotencyKey), request_body = CreatePlanBody,
    responses((status = 201, body = Plan), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_plan(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<CreatePlanBody>,
) -> Result<Response, ApiError> {
    let request = CreatePlanRequest {
        key: b.key,
        name: b.name,
        description: b.description,
        metadata: metadata_to_struct(b.metadata, "metadata")?,
        features: features_input(b.feature_keys, b.features)?,
        default_time_limitation_days: b.default_time_limitation,
        assign_on_signup: b.assign_on_signup,
        rules: rules_to_pb(b.rules, "rules")?,
        default_treatment: b
            .default_treatment
            .map(|t| treatment(&t, "defaultTreatment"))
            .transpose()?
            .unwrap_or(pb::Treatment::Unspecified)
            .into(),
        inherit_to_sub_accounts: b.inherit_to_sub_accounts,
        idempotency_key,
    };
    let out = state
        .plans()
        .create_plan(grpc(&p, request))
        .await?
        .into_inner();
    // A new plan has no grants yet.
    let created = Plan {
        entitlements: Some(Vec::new()),
        has_more_entitlements: Some(false),
        ..plan(out.plan, &state.vendor_id)?
    };
    Ok(with_revision(
        (StatusCode::CREATED, Json(created)),
        out.revision,
    ))
}

/// Get a plan by ID, with its newest grants (`entitlements`).
#[utoipa::path(get, path = "/entitlements/resources/plans/v1/{planId}", tag = "Plans",
    params(("planId" = String, Path)),
    responses((status = 200, body = Plan), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_plan(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Plan>, ApiError> {
    let out = state
        .grants()
        .get_plan_with_grants(grpc(&p, GetPlanWithGrantsRequest { plan_id: id }))
        .await?
        .into_inner();
    let vendor = &state.vendor_id;
    Ok(Json(Plan {
        entitlements: Some(
            out.grants
                .into_iter()
                .map(|g| Entitlement::new(g, vendor))
                .collect(),
        ),
        has_more_entitlements: Some(out.more_grants),
        ..plan(out.plan, vendor)?
    }))
}

/// Change a plan.
#[utoipa::path(patch, path = "/entitlements/resources/plans/v1/{planId}", tag = "Plans",
    params(("planId" = String, Path)), request_body = UpdatePlanBody,
    responses((status = 200, body = Plan), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_plan(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<UpdatePlanBody>,
) -> Result<Response, ApiError> {
    let features = match (b.feature_keys, b.features) {
        (None, None) => None,
        (keys, features) => Some(PlanFeatureInputList {
            features: features_input(keys.unwrap_or_default(), features.unwrap_or_default())?,
        }),
    };
    let request = UpdatePlanRequest {
        id,
        key: b.key,
        name: b.name,
        description: b.description,
        metadata: metadata_to_struct(b.metadata, "metadata")?,
        features,
        default_time_limitation_days: b
            .default_time_limitation
            .map(|value| NullableDays { value }),
        assign_on_signup: b.assign_on_signup,
        rules: b
            .rules
            .map(|r| rules_to_pb(r, "rules").map(|rules| TargetingRuleList { rules }))
            .transpose()?,
        default_treatment: b
            .default_treatment
            .map(|t| treatment(&t, "defaultTreatment").map(i32::from))
            .transpose()?,
        inherit_to_sub_accounts: b.inherit_to_sub_accounts,
    };
    let out = state
        .plans()
        .update_plan(grpc(&p, request))
        .await?
        .into_inner();
    Ok(with_revision(
        Json(plan(out.plan, &state.vendor_id)?),
        out.revision,
    ))
}

/// What deleting a plan revoked.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanDeleted {
    pub revoked_grants: u64,
}

/// Delete a plan; one with live grants needs `?force=true` (which revokes them).
#[utoipa::path(delete, path = "/entitlements/resources/plans/v1/{planId}", tag = "Plans",
    params(("planId" = String, Path), ForceQuery),
    responses((status = 200, body = PlanDeleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_plan(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let out = state
        .plans()
        .delete_plan(grpc(
            &p,
            DeletePlanRequest {
                id,
                force: q.force.unwrap_or(false),
            },
        ))
        .await?
        .into_inner();
    Ok(with_revision(
        Json(PlanDeleted {
            revoked_grants: out.revoked_grants,
        }),
        out.revision,
    ))
}

/// A plan's feature with the full feature object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanFeatureDetail {
    #[serde(flatten)]
    pub feature: Feature,
    pub allocation: AllocationJson,
}

/// The features of a plan with their allocations.
#[utoipa::path(get, path = "/entitlements/resources/plans/v1/{planId}/features", tag = "Plans",
    params(("planId" = String, Path)),
    responses((status = 200, body = ItemsPage<PlanFeatureDetail>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_plan_features(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(plan_id): ApiPath<String>,
) -> Result<Json<ItemsPage<PlanFeatureDetail>>, ApiError> {
    let out = state
        .plans()
        .list_plan_features(grpc(&p, ListPlanFeaturesRequest { plan_id }))
        .await?
        .into_inner();
    let items = out
        .features
        .into_iter()
        .zip(out.plan_features)
        .map(|(feature, pf)| PlanFeatureDetail {
            feature: Feature::new(feature, &state.vendor_id),
            allocation: allocation_json(pf.allocation),
        })
        .collect();
    Ok(Json(ItemsPage {
        items,
        has_next: false,
    }))
}

/// Add features to a plan (`{"featuresIds": [...]}`).
#[utoipa::path(patch, path = "/entitlements/resources/plans/v1/{planId}/features/link", tag = "Plans",
    params(("planId" = String, Path)), request_body = LinkBody,
    responses((status = 200, body = Plan), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn link_features(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(plan_id): ApiPath<String>,
    ApiJson(b): ApiJson<LinkBody>,
) -> Result<Response, ApiError> {
    let out = state
        .plans()
        .link_plan_features(grpc(
            &p,
            LinkPlanFeaturesRequest {
                plan_id,
                feature_ids: b.features_ids,
                features: features_input(Vec::new(), b.features)?,
            },
        ))
        .await?
        .into_inner();
    Ok(with_revision(
        Json(plan(out.plan, &state.vendor_id)?),
        out.revision,
    ))
}

/// Remove features from a plan.
#[utoipa::path(patch, path = "/entitlements/resources/plans/v1/{planId}/features/unlink", tag = "Plans",
    params(("planId" = String, Path)), request_body = UnlinkBody,
    responses((status = 200, body = Plan), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn unlink_features(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(plan_id): ApiPath<String>,
    ApiJson(b): ApiJson<UnlinkBody>,
) -> Result<Response, ApiError> {
    let out = state
        .plans()
        .unlink_plan_features(grpc(
            &p,
            UnlinkPlanFeaturesRequest {
                plan_id,
                feature_ids: b.features_ids,
                feature_keys: b.feature_keys,
            },
        ))
        .await?
        .into_inner();
    Ok(with_revision(
        Json(plan(out.plan, &state.vendor_id)?),
        out.revision,
    ))
}

/// The plans relevant to an account.
#[utoipa::path(get, path = "/entitlements/resources/plans/v1/tenant/{tenantId}", tag = "Plans",
    params(("tenantId" = String, Path), TenantPlansQuery),
    responses((status = 200, body = ItemsPage<TenantPlan>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn tenant_plans(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantPlansQuery>,
) -> Result<Json<ItemsPage<TenantPlan>>, ApiError> {
    let out = state
        .plans()
        .list_tenant_plans(grpc(
            &p,
            ListTenantPlansRequest {
                tenant_id,
                exclude_non_entitled_plans: q.exclude_non_entitled_plans.unwrap_or(false),
                feature_keys: split_list(q.feature_keys.as_deref()),
                min_revision: q.min_revision.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    let items = out
        .plans
        .into_iter()
        .filter_map(|tp| {
            tp.plan.map(|pl| TenantPlan {
                plan: Plan::new(pl, &state.vendor_id),
                targeted: tp.targeted,
                entitled: tp.entitled,
                grant_ids: tp.grant_ids,
            })
        })
        .collect();
    Ok(Json(ItemsPage {
        items,
        has_next: false,
    }))
}
