//! Entitlements (grants): Frontegg `/entitlements/resources/entitlements/v2` single and batch
//! forms (the seed), plus revocation.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use tenantry_proto::{
    common::v1::NullableTimestamp,
    entitlement::v1::{
        self as pb, AssignLevel, BatchCreateGrantsRequest, BatchDeleteGrantsRequest,
        BatchUpdateGrantsRequest, CreateGrantRequest, DeleteGrantRequest, GetGrantRequest,
        GrantPatch, GrantSortField, GrantStatus, ListGrantsRequest, NewGrant, RevokeGrantRequest,
        UpdateGrantRequest, new_grant,
    },
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    Deleted, ItemsPage, double_option, page, plans::Plan, sort_field, sort_order, with_revision,
};
use crate::{
    auth::Management,
    convert::{metadata_to_struct, opt_struct_to_json, opt_timestamp, parse_time_field},
    error::{ApiError, ErrorBody, FieldViolation, ItemError},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey, split_list},
    state::{AppState, grpc},
};

/// Most items in one batch call.
pub const MAX_BATCH: usize = 1_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_grants, create_grant))
        .routes(routes!(batch_create, batch_update, batch_delete))
        .routes(routes!(get_grant, update_grant, delete_grant))
        .routes(routes!(revoke_grant))
}

/// An entitlement (grant): a plan given to an account, optionally to one of its users.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    pub id: String,
    pub plan_id: String,
    pub plan_key: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub starts_at: Option<String>,
    pub expiration_date: Option<String>,
    /// `scheduled`, `active`, `expired` or `revoked`.
    pub status: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub source: String,
    pub external_id: Option<String>,
    pub granted_by: String,
    #[schema(value_type = Object)]
    pub metadata: Json_,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// With `withRelations=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

impl Entitlement {
    pub fn new(g: pb::Grant, vendor_id: &str) -> Self {
        Self {
            status: match g.status() {
                GrantStatus::Scheduled => "scheduled",
                GrantStatus::Expired => "expired",
                GrantStatus::Revoked => "revoked",
                GrantStatus::Active | GrantStatus::Unspecified => "active",
            }
            .to_owned(),
            id: g.id,
            plan_id: g.plan_id,
            plan_key: g.plan_key,
            tenant_id: g.tenant_id,
            user_id: g.user_id,
            starts_at: opt_timestamp(g.starts_at),
            expiration_date: opt_timestamp(g.expires_at),
            revoked_at: opt_timestamp(g.revoked_at),
            revoked_by: g.revoked_by,
            revoke_reason: g.revoke_reason,
            source: g.source,
            external_id: g.external_id,
            granted_by: g.granted_by,
            metadata: opt_struct_to_json(g.metadata),
            created_at: opt_timestamp(g.created_at),
            updated_at: opt_timestamp(g.updated_at),
            plan: g.plan.map(|p| Plan::new(p, vendor_id)),
        }
    }
}

fn entitlement(g: Option<pb::Grant>, vendor_id: &str) -> Result<Entitlement, ApiError> {
    g.map(|g| Entitlement::new(g, vendor_id))
        .ok_or_else(ApiError::internal)
}

/// One entitlement to create (seed batch item and single create).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEntitlement {
    /// The plan by ID (Frontegg) ...
    #[schema(format = Uuid)]
    pub plan_id: Option<String>,
    /// ... or by key.
    pub plan_key: Option<String>,
    pub tenant_id: String,
    pub user_id: Option<String>,
    /// Zone-less times (`2022-01-01T12:00:00`) are UTC. After `startsAt` when both are given;
    /// a past one alone creates the grant already ended.
    #[schema(format = DateTime)]
    pub expiration_date: Option<String>,
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    pub external_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    pub source: Option<String>,
}

impl NewEntitlement {
    /// The gRPC form, or every field the gateway itself finds invalid (item-relative names).
    fn into_pb(self) -> Result<NewGrant, Vec<FieldViolation>> {
        let mut bad = Vec::new();
        let plan = match (self.plan_id, self.plan_key) {
            (Some(id), None) => Some(new_grant::Plan::PlanId(id)),
            (None, Some(key)) => Some(new_grant::Plan::PlanKey(key)),
            (Some(_), Some(_)) | (None, None) => {
                bad.push(violation(
                    "planId",
                    "give exactly one of planId and planKey",
                ));
                None
            }
        };
        let starts_at = time_field(self.starts_at, "startsAt", &mut bad);
        let expires_at = time_field(self.expiration_date, "expirationDate", &mut bad);
        let metadata = metadata_to_struct(self.metadata, "metadata").unwrap_or_else(|e| {
            bad.extend(e.body.field_violations);
            None
        });
        if !bad.is_empty() {
            return Err(bad);
        }
        Ok(NewGrant {
            plan,
            tenant_id: self.tenant_id,
            user_id: self.user_id,
            starts_at,
            expires_at,
            external_id: self.external_id,
            metadata,
            source: self.source,
        })
    }
}

fn violation(field: &str, description: &str) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        description: description.to_owned(),
    }
}

/// Parses an optional date-time, recording a violation when it is malformed.
fn time_field(
    value: Option<String>,
    field: &str,
    bad: &mut Vec<FieldViolation>,
) -> Option<prost_types::Timestamp> {
    let value = value?;
    match parse_time_field(&value, field) {
        Ok(t) => Some(t),
        Err(e) => {
            bad.extend(e.body.field_violations);
            None
        }
    }
}

/// A single item's violations as a plain 400.
fn single_error(bad: Vec<FieldViolation>) -> ApiError {
    let mut e = ApiError::bad_request(describe(&bad));
    e.body.field_violations = bad;
    e
}

fn describe(bad: &[FieldViolation]) -> String {
    bad.iter()
        .map(|v| format!("`{}`: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The bad items of a batch the gateway refused before asking the service: every one of
/// them, by index, in the same shape as the service's refusals (nothing is written).
fn batch_error(bad: Vec<(usize, Vec<FieldViolation>)>, list: &str) -> ApiError {
    let mut item_errors = Vec::new();
    let mut field_violations = Vec::new();
    for (index, violations) in bad {
        for v in violations {
            field_violations.push(FieldViolation {
                field: format!("{list}[{index}].{}", v.field),
                description: v.description.clone(),
            });
            item_errors.push(ItemError {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                id: String::new(),
                reason: reason_for(&v.field),
                field: v.field,
                message: v.description,
            });
        }
    }
    let mut e = ApiError::bad_request(items_message(&item_errors)).with_reason(BATCH_REASON);
    e.body.field_violations = field_violations;
    e.body.item_errors = item_errors;
    e
}

/// The reason of a refused batch (the entitlement service's too).
const BATCH_REASON: &str = "INVALID_BATCH_ITEMS";

fn items_message(items: &[ItemError]) -> String {
    format!(
        "{} invalid item(s); nothing was written: {}",
        items.len(),
        items
            .iter()
            .map(|e| format!("[{}] {}: {}", e.index, e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// `expirationDate` → `INVALID_EXPIRATION_DATE`.
fn reason_for(field: &str) -> String {
    let mut out = String::from("INVALID_");
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// The REST name of a field the entitlement service names after the proto: the `grant.` /
/// `patch.` wrapper of single writes is not in the REST body, and `expiresAt` is
/// `expirationDate` here.
fn rest_field(field: &str) -> String {
    let field = field
        .strip_prefix("grant.")
        .or_else(|| field.strip_prefix("patch."))
        .unwrap_or(field);
    field
        .split('.')
        .map(|segment| match segment {
            "expiresAt" => "expirationDate",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A service refusal of a grant write, with the fields in their REST names.
fn grant_error(status: tonic::Status) -> ApiError {
    let mut e = ApiError::from(status);
    let renamed = |reason: &str| {
        reason
            .replace("INVALID_GRANT_", "INVALID_")
            .replace("INVALID_PATCH_", "INVALID_")
            .replace("EXPIRES_AT", "EXPIRATION_DATE")
    };
    e.body.reason = e.body.reason.as_deref().map(renamed);
    for v in &mut e.body.field_violations {
        v.field = rest_field(&v.field);
    }
    for item in &mut e.body.item_errors {
        item.field = rest_field(&item.field);
        item.reason = renamed(&item.reason);
    }
    if !e.body.item_errors.is_empty() {
        e.body.message = items_message(&e.body.item_errors);
    } else if !e.body.field_violations.is_empty() {
        e.body.message = describe(&e.body.field_violations);
    }
    e
}

/// A change to one entitlement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntitlementPatch {
    /// `null` removes the expiry. After the start (`startsAt` given, else the stored one); a
    /// past one alone ends the grant.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expiration_date: Option<Option<String>>,
    /// `null` means now.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    pub external_id: Option<String>,
}

/// A change to one entitlement of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchPatchItem {
    #[schema(format = Uuid)]
    pub id: String,
    /// As in the single update: after the start, or in the past to end the grant.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expiration_date: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Json_>,
    pub external_id: Option<String>,
}

fn nullable_time(
    value: Option<Option<String>>,
    field: &str,
    bad: &mut Vec<FieldViolation>,
) -> Option<NullableTimestamp> {
    match value? {
        None => Some(NullableTimestamp { value: None }),
        Some(t) => {
            time_field(Some(t), field, bad).map(|value| NullableTimestamp { value: Some(value) })
        }
    }
}

/// The gRPC form of a change, or every field the gateway itself finds invalid.
fn patch_to_pb(id: String, p: EntitlementPatch) -> Result<GrantPatch, Vec<FieldViolation>> {
    let mut bad = Vec::new();
    let expires_at = nullable_time(p.expiration_date, "expirationDate", &mut bad);
    let starts_at = nullable_time(p.starts_at, "startsAt", &mut bad);
    let metadata = metadata_to_struct(p.metadata, "metadata").unwrap_or_else(|e| {
        bad.extend(e.body.field_violations);
        None
    });
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(GrantPatch {
        id,
        expires_at,
        starts_at,
        metadata,
        external_id: p.external_id,
    })
}

/// Seed batch create body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateBody {
    #[schema(min_items = 1, max_items = 1000)]
    pub entitlements: Vec<NewEntitlement>,
}

/// Seed batch create answer: IDs in request order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementIds {
    pub entitlement_ids: Vec<String>,
}

/// Seed batch update body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchUpdateBody {
    #[schema(min_items = 1, max_items = 1000)]
    pub entitlements: Vec<BatchPatchItem>,
}

/// Seed batch delete query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchDeleteQuery {
    /// Comma-separated or repeated entitlement IDs.
    #[param(
        required = true,
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub ids: Option<String>,
}

/// What a batch delete removed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchDeleted {
    pub deleted_count: u64,
}

/// Body of the revocation route.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Stored as `revokeReason` (default `revoked`).
    pub reason: Option<String>,
}

/// Query of the entitlement list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct GrantQuery {
    pub offset: Option<u32>,
    pub limit: Option<u32>,
    pub plan_id: Option<String>,
    /// Comma-separated.
    #[param(
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*)?$"
    )]
    pub plan_ids: Option<String>,
    /// `USER` or `TENANT`.
    #[param(pattern = "^(USER|TENANT)?$")]
    pub assign_level: Option<String>,
    /// Comma-separated.
    pub user_ids: Option<String>,
    /// Comma-separated.
    pub tenant_ids: Option<String>,
    pub with_relations: Option<bool>,
    /// `expirationDate` or `createdAt`.
    #[param(pattern = "^(createdAt|expirationDate)?$")]
    pub order_by: Option<String>,
    #[param(pattern = "^([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc])?$")]
    pub sort_type: Option<String>,
    /// Comma-separated among scheduled, active, expired, revoked.
    #[param(
        pattern = "^((scheduled|active|expired|revoked)(,(scheduled|active|expired|revoked))*)?$"
    )]
    pub statuses: Option<String>,
    /// Comma-separated.
    pub sources: Option<String>,
    pub external_id: Option<String>,
}

/// Query of single reads.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct RelationsQuery {
    pub with_relations: Option<bool>,
}

fn check_batch_size(len: usize, field: &str) -> Result<(), ApiError> {
    if len == 0 || len > MAX_BATCH {
        Err(ApiError::invalid_field(
            field,
            format!("must hold 1 to {MAX_BATCH} items (got {len})"),
        )
        .with_reason("BATCH_SIZE"))
    } else {
        Ok(())
    }
}

/// List entitlements (`{"items", "hasNext"}`).
#[utoipa::path(get, path = "/entitlements/resources/entitlements/v2", tag = "Entitlements",
    params(GrantQuery),
    responses((status = 200, body = ItemsPage<Entitlement>), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_grants(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<GrantQuery>,
) -> Result<Json<ItemsPage<Entitlement>>, ApiError> {
    let mut plan_ids = split_list(q.plan_ids.as_deref());
    plan_ids.extend(q.plan_id);
    let assign_level = match q.assign_level.as_deref() {
        None | Some("") => AssignLevel::Unspecified,
        Some("USER") => AssignLevel::User,
        Some("TENANT") => AssignLevel::Tenant,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "assignLevel",
                "must be USER or TENANT",
            ));
        }
    };
    let sort_by = sort_field(
        q.order_by.as_deref(),
        "orderBy",
        GrantSortField::Unspecified,
        &[
            ("createdAt", GrantSortField::CreatedAt),
            ("expirationDate", GrantSortField::ExpiresAt),
        ],
    )?;
    let statuses = split_list(q.statuses.as_deref())
        .iter()
        .map(|s| match s.as_str() {
            "scheduled" => Ok(GrantStatus::Scheduled.into()),
            "active" => Ok(GrantStatus::Active.into()),
            "expired" => Ok(GrantStatus::Expired.into()),
            "revoked" => Ok(GrantStatus::Revoked.into()),
            _ => Err(ApiError::invalid_field(
                "statuses",
                "must list scheduled, active, expired or revoked",
            )),
        })
        .collect::<Result<Vec<i32>, _>>()?;
    let request = ListGrantsRequest {
        page: page(q.limit, q.offset),
        tenant_ids: split_list(q.tenant_ids.as_deref()),
        user_ids: split_list(q.user_ids.as_deref()),
        plan_ids,
        statuses,
        sources: split_list(q.sources.as_deref()),
        assign_level: assign_level.into(),
        with_relations: q.with_relations.unwrap_or(false),
        sort_by: sort_by.into(),
        order: sort_order(q.sort_type.as_deref(), "sortType")?.into(),
        at: None,
        external_id: q.external_id,
    };
    let out = state
        .grants()
        .list_grants(grpc(&p, request))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(Json(ItemsPage::new(
        out.grants
            .into_iter()
            .map(|g| Entitlement::new(g, &state.vendor_id))
            .collect(),
        out.page,
    )))
}

/// Create one entitlement (`Idempotency-Key` makes retries safe).
#[utoipa::path(post, path = "/entitlements/resources/entitlements/v2", tag = "Entitlements",
    params(IdempotencyKey),
    request_body = NewEntitlement,
    responses((status = 201, body = Entitlement), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_grant(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<NewEntitlement>,
) -> Result<Response, ApiError> {
    let request = CreateGrantRequest {
        grant: Some(b.into_pb().map_err(single_error)?),
        idempotency_key,
    };
    let out = state
        .grants()
        .create_grant(grpc(&p, request))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(with_revision(
        (
            StatusCode::CREATED,
            Json(entitlement(out.grant, &state.vendor_id)?),
        ),
        out.revision,
    ))
}

/// Create entitlements in one all-or-nothing batch (up to 1,000); IDs in request order.
#[utoipa::path(post, path = "/entitlements/resources/entitlements/v2/batch", tag = "Entitlements",
    params(IdempotencyKey),
    request_body = BatchCreateBody,
    responses((status = 201, body = EntitlementIds), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn batch_create(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<BatchCreateBody>,
) -> Result<Response, ApiError> {
    check_batch_size(b.entitlements.len(), "entitlements")?;
    let mut grants = Vec::with_capacity(b.entitlements.len());
    let mut bad = Vec::new();
    for (i, e) in b.entitlements.into_iter().enumerate() {
        match e.into_pb() {
            Ok(g) => grants.push(g),
            Err(violations) => bad.push((i, violations)),
        }
    }
    if !bad.is_empty() {
        return Err(batch_error(bad, "entitlements"));
    }
    let out = state
        .grants()
        .batch_create_grants(grpc(
            &p,
            BatchCreateGrantsRequest {
                grants,
                idempotency_key,
            },
        ))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(with_revision(
        (
            StatusCode::CREATED,
            Json(EntitlementIds {
                entitlement_ids: out.grant_ids,
            }),
        ),
        out.revision,
    ))
}

/// Change entitlements in one all-or-nothing batch (expiry, start, metadata).
#[utoipa::path(patch, path = "/entitlements/resources/entitlements/v2/batch", tag = "Entitlements",
    params(IdempotencyKey),
    request_body = BatchUpdateBody,
    responses((status = 200, body = EntitlementIds), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn batch_update(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<BatchUpdateBody>,
) -> Result<Response, ApiError> {
    check_batch_size(b.entitlements.len(), "entitlements")?;
    let mut patches = Vec::with_capacity(b.entitlements.len());
    let mut bad = Vec::new();
    for (i, e) in b.entitlements.into_iter().enumerate() {
        let patch = EntitlementPatch {
            expiration_date: e.expiration_date,
            starts_at: e.starts_at,
            metadata: e.metadata,
            external_id: e.external_id,
        };
        match patch_to_pb(e.id, patch) {
            Ok(p) => patches.push(p),
            Err(violations) => bad.push((i, violations)),
        }
    }
    if !bad.is_empty() {
        return Err(batch_error(bad, "entitlements"));
    }
    let out = state
        .grants()
        .batch_update_grants(grpc(
            &p,
            BatchUpdateGrantsRequest {
                patches,
                idempotency_key,
            },
        ))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(with_revision(
        Json(EntitlementIds {
            entitlement_ids: out.grant_ids,
        }),
        out.revision,
    ))
}

/// Delete entitlements by `?ids=` in one all-or-nothing batch.
#[utoipa::path(delete, path = "/entitlements/resources/entitlements/v2/batch", tag = "Entitlements",
    params(BatchDeleteQuery, IdempotencyKey),
    responses((status = 200, body = BatchDeleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn batch_delete(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiQuery(q): ApiQuery<BatchDeleteQuery>,
) -> Result<Response, ApiError> {
    let ids = split_list(q.ids.as_deref());
    check_batch_size(ids.len(), "ids")?;
    let out = state
        .grants()
        .batch_delete_grants(grpc(
            &p,
            BatchDeleteGrantsRequest {
                ids,
                idempotency_key,
            },
        ))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(with_revision(
        Json(BatchDeleted {
            deleted_count: out.deleted_count,
        }),
        out.revision,
    ))
}

/// Get one entitlement.
#[utoipa::path(get, path = "/entitlements/resources/entitlements/v2/{id}", tag = "Entitlements",
    params(("id" = String, Path), RelationsQuery),
    responses((status = 200, body = Entitlement), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_grant(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RelationsQuery>,
) -> Result<Json<Entitlement>, ApiError> {
    let out = state
        .grants()
        .get_grant(grpc(
            &p,
            GetGrantRequest {
                id,
                with_relations: q.with_relations.unwrap_or(false),
            },
        ))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(Json(entitlement(out.grant, &state.vendor_id)?))
}

/// Change one entitlement.
#[utoipa::path(patch, path = "/entitlements/resources/entitlements/v2/{id}", tag = "Entitlements",
    params(("id" = String, Path)), request_body = EntitlementPatch,
    responses((status = 200, body = Entitlement), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_grant(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<EntitlementPatch>,
) -> Result<Response, ApiError> {
    let request = UpdateGrantRequest {
        patch: Some(patch_to_pb(id, b).map_err(single_error)?),
    };
    let out = state
        .grants()
        .update_grant(grpc(&p, request))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(with_revision(
        Json(entitlement(out.grant, &state.vendor_id)?),
        out.revision,
    ))
}

/// Delete one entitlement (the row is removed; revoke keeps history).
#[utoipa::path(delete, path = "/entitlements/resources/entitlements/v2/{id}", tag = "Entitlements",
    params(("id" = String, Path)),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_grant(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let out = state
        .grants()
        .delete_grant(grpc(&p, DeleteGrantRequest { id }))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(with_revision(Json(Deleted { deleted: true }), out.revision))
}

/// Revoke one entitlement, keeping it with `revokedAt`, `revokedBy` and `revokeReason`.
#[utoipa::path(post, path = "/entitlements/resources/entitlements/v2/{id}/revoke", tag = "Entitlements",
    params(("id" = String, Path)), request_body = RevokeBody,
    responses((status = 200, body = Entitlement), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn revoke_grant(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<RevokeBody>,
) -> Result<Response, ApiError> {
    let out = state
        .grants()
        .revoke_grant(grpc(
            &p,
            RevokeGrantRequest {
                id,
                reason: b.reason,
            },
        ))
        .await
        .map_err(grant_error)?
        .into_inner();
    Ok(with_revision(
        Json(entitlement(out.grant, &state.vendor_id)?),
        out.revision,
    ))
}
