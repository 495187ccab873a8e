//! Entitlement checks: our `/entitlements/api/v1/is-entitled-to` (+ `/batch`) with provenance,
//! and Frontegg's agent endpoints (`/v1/data/e10s/...`) in their own shapes.
//!
//! With a user token the subject is the token's: its user, its permissions, its `frontegg`
//! targeting attributes ([`TOKEN_ATTRIBUTES`]), and its account
//! or a reachable sub-account; naming another user is 403. Environment tokens check anyone.

use std::future::Future;

use axum::{Json, Router, extract::State, routing::post};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json_};
use tenantry_proto::entitlement::v1::{
    self as pb, AllowReason, BatchIsEntitledToRequest, BatchIsEntitledToResponse, EntitlementQuery,
    GrantLevel, IsEntitledToResponse, Justification, RouteTarget, entitlement_query::Target,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::rules::{AllocationJson, allocation_json};
use crate::{
    auth::{Caller, Principal, scope},
    convert::{attributes_to_struct, opt_timestamp, parse_time_field},
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    routes::grants::MAX_BATCH,
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(is_entitled_to))
        .routes(routes!(is_entitled_to_batch))
        .routes(routes!(agent_feature))
        .routes(routes!(agent_permission))
        .routes(routes!(agent_route))
}

/// Where check decisions come from: the entitlement service over gRPC (the gateway, checks
/// coalesced) or an index in the caller's own process (the agent). The check routes decode,
/// authorise and encode the same way whichever answers.
pub trait Decide: Clone + Send + Sync + 'static {
    fn check(
        &self,
        principal: &Principal,
        query: EntitlementQuery,
        min_revision: u64,
    ) -> impl Future<Output = Result<IsEntitledToResponse, tonic::Status>> + Send;

    fn check_batch(
        &self,
        principal: &Principal,
        request: BatchIsEntitledToRequest,
    ) -> impl Future<Output = Result<BatchIsEntitledToResponse, tonic::Status>> + Send;
}

impl Decide for AppState {
    async fn check(
        &self,
        principal: &Principal,
        query: EntitlementQuery,
        min_revision: u64,
    ) -> Result<IsEntitledToResponse, tonic::Status> {
        self.checker.check(principal, query, min_revision).await
    }

    async fn check_batch(
        &self,
        principal: &Principal,
        request: BatchIsEntitledToRequest,
    ) -> Result<BatchIsEntitledToResponse, tonic::Status> {
        Ok(self
            .checks()
            .batch_is_entitled_to(grpc(principal, request))
            .await?
            .into_inner())
    }
}

/// The check routes without authentication, answered by `decide`: our
/// `/entitlements/api/v1/is-entitled-to` (+ `/batch`) and Frontegg's agent paths
/// (`/v1/data/e10s/...`), every subject allowed — for a listener only the caller's own pod
/// reaches (the agent).
pub fn unauthenticated_router<D: Decide>(decide: D) -> Router {
    Router::new()
        .route("/entitlements/api/v1/is-entitled-to", post(open_check::<D>))
        .route(
            "/entitlements/api/v1/is-entitled-to/batch",
            post(open_batch::<D>),
        )
        .route(
            "/v1/data/e10s/features/is_entitled_to_input_feature",
            post(open_agent_feature::<D>),
        )
        .route(
            "/v1/data/e10s/permissions/is_entitled_to_input_permission",
            post(open_agent_permission::<D>),
        )
        .route(
            "/v1/data/e10s/routes/is_entitled_to_input_route",
            post(open_agent_route::<D>),
        )
        .with_state(decide)
}

/// Who asks on an unauthenticated listener: anyone may check any subject, as with an
/// environment token.
fn open_principal() -> Principal {
    Principal::Environment {
        client_id: "local".to_owned(),
    }
}

async fn open_check<D: Decide>(
    State(decide): State<D>,
    ApiJson(b): ApiJson<CheckBody>,
) -> Result<Json<CheckResponse>, ApiError> {
    let t = target(b.feature, b.permission, b.route, "feature")?;
    check_one(
        &decide,
        &open_principal(),
        t,
        b.subject,
        b.at,
        b.requested_amount,
        b.min_revision,
    )
    .await
}

async fn open_batch<D: Decide>(
    State(decide): State<D>,
    ApiJson(b): ApiJson<BatchCheckBody>,
) -> Result<Json<BatchCheckResponse>, ApiError> {
    batch_size(&b)?;
    check_many(&decide, &open_principal(), b).await
}

async fn open_agent_feature<D: Decide>(
    State(decide): State<D>,
    ApiJson(b): ApiJson<AgentBody<FeatureTarget>>,
) -> Result<Json<AgentResponse>, ApiError> {
    let t = Target::FeatureKey(b.input.request_context.feature_key);
    agent_answer(&decide, &open_principal(), b.input.subject_context, t).await
}

async fn open_agent_permission<D: Decide>(
    State(decide): State<D>,
    ApiJson(b): ApiJson<AgentBody<PermissionTarget>>,
) -> Result<Json<AgentResponse>, ApiError> {
    let t = Target::PermissionKey(b.input.request_context.permission_key);
    agent_answer(&decide, &open_principal(), b.input.subject_context, t).await
}

async fn open_agent_route<D: Decide>(
    State(decide): State<D>,
    ApiJson(b): ApiJson<AgentBody<RouteTargetBody>>,
) -> Result<Json<AgentResponse>, ApiError> {
    let r = b.input.request_context;
    let t = Target::Route(RouteTarget {
        method: r.method,
        path: r.path,
    });
    agent_answer(&decide, &open_principal(), b.input.subject_context, t).await
}

/// Who is asking.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectBody {
    pub tenant_id: String,
    pub user_id: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Targeting attributes. With a user token, `email`, `emailVerified`, `tenantId` and
    /// `userId` (Frontegg's `frontegg` attributes) are taken from the token's `email`,
    /// `email_verified`, `tenantId` and `sub` claims; body values under these names are ignored.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Json_>,
}

/// `{"featureKey"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureTarget {
    pub feature_key: String,
}

/// `{"permissionKey"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionTarget {
    pub permission_key: String,
}

/// `{"method", "path"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTargetBody {
    /// An HTTP method, at most 16 characters.
    #[schema(max_length = 16)]
    pub method: String,
    pub path: String,
}

/// One check: a subject and exactly one of `feature`, `permission`, `route`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckBody {
    pub subject: SubjectBody,
    pub feature: Option<FeatureTarget>,
    pub permission: Option<PermissionTarget>,
    pub route: Option<RouteTargetBody>,
    /// Evaluation time (RFC 3339); default now.
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// For `max_count` features: entitled only with at least this much.
    pub requested_amount: Option<u64>,
    /// Answer from an index at least this fresh (the `x-tenantry-revision` of a write).
    pub min_revision: Option<u64>,
}

/// Many checks, answered in order from one index revision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchCheckBody {
    #[schema(min_items = 1, max_items = 1000)]
    pub checks: Vec<BatchCheckItem>,
    pub min_revision: Option<u64>,
}

/// One check of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchCheckItem {
    pub subject: SubjectBody,
    pub feature: Option<FeatureTarget>,
    pub permission: Option<PermissionTarget>,
    pub route: Option<RouteTargetBody>,
    #[schema(format = DateTime)]
    pub at: Option<String>,
    pub requested_amount: Option<u64>,
}

/// Where the deciding grant applies: to the subject's `user`, its `account`, an `ancestor`
/// whose plan inherits to sub-accounts, or `targeting` (no grant: the plan's targeting rules
/// select the subject, and `grantId` is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProvenanceLevel {
    User,
    Account,
    Ancestor,
    Targeting,
}

/// Which grant and plan decided.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// Empty for `targeting`.
    pub grant_id: String,
    pub plan_id: String,
    pub plan_key: String,
    pub level: Option<ProvenanceLevel>,
    pub granted_tenant_id: String,
    pub feature_key: String,
    pub route_id: String,
}

/// A check's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub result: bool,
    /// Why not: MISSING_FEATURE, MISSING_PERMISSION, PLAN_EXPIRED, PLAN_REVOKED, NOT_STARTED,
    /// FEATURE_FLAG_OFF, LIMIT_EXCEEDED, MISSING_ROUTE, ROUTE_DENIED, TENANT_NOT_FOUND,
    /// USAGE_LIMIT_REACHED, INSUFFICIENT_BALANCE, METER_HISTORY_UNKNOWN (a metered feature
    /// asked at a past `at` whose meter then is not known).
    pub justification: Option<String>,
    /// Why: GRANT, UNGATED_PERMISSION, ROUTE_ALLOW, ROUTE_REQUIREMENTS_MET, SOFT_LIMIT_OVERAGE,
    /// CREDITS.
    pub allow_reason: Option<String>,
    pub allocation: AllocationJson,
    pub provenance: Option<Provenance>,
    /// When the answer would next change by time alone.
    pub next_change_at: Option<String>,
    /// A metered feature's meter (`allocation` is then the amount issued each period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter: Option<MeterJson>,
}

/// A metered feature's meter at the check's instant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterJson {
    /// What can still be drawn this period; null when the plan allowance is unlimited.
    pub balance: Option<i64>,
    /// Usage this period.
    pub usage: i64,
    /// Usage no credit covered this period (soft limits), including overage carried in.
    pub overage: i64,
    /// Held by live reservations (already deducted from the balance).
    pub held: i64,
    pub period_start: Option<String>,
    /// The next reset.
    pub period_end: Option<String>,
    /// Set when this is the pool the subject draws on, not its own meter: the ancestor
    /// account whose meter it is (and which counts the subject's usage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_tenant_id: Option<String>,
    /// Set when this is the subject's user's own meter (the user's own grants allocate the
    /// feature; its usage is counted there): that user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Set when asked at a past `at`: the meter then, from history (the balance burn-down's
    /// latest point at or before `at`, taken forward to it; holds left out) — this is `at`.
    /// Absent for the index's meter (now, or projected to a later `at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

/// Answer of `is-entitled-to`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse {
    #[serde(flatten)]
    pub decision: Decision,
    pub revision: u64,
}

/// Answer of `is-entitled-to/batch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCheckResponse {
    pub results: Vec<Decision>,
    pub revision: u64,
}

pub fn justification_name(j: Justification) -> Option<&'static str> {
    Some(match j {
        Justification::Unspecified => return None,
        Justification::MissingFeature => "MISSING_FEATURE",
        Justification::MissingPermission => "MISSING_PERMISSION",
        Justification::PlanExpired => "PLAN_EXPIRED",
        Justification::PlanRevoked => "PLAN_REVOKED",
        Justification::NotStarted => "NOT_STARTED",
        Justification::FeatureFlagOff => "FEATURE_FLAG_OFF",
        Justification::LimitExceeded => "LIMIT_EXCEEDED",
        Justification::MissingRoute => "MISSING_ROUTE",
        Justification::RouteDenied => "ROUTE_DENIED",
        Justification::TenantNotFound => "TENANT_NOT_FOUND",
        Justification::UsageLimitReached => "USAGE_LIMIT_REACHED",
        Justification::InsufficientBalance => "INSUFFICIENT_BALANCE",
        Justification::MeterHistoryUnknown => "METER_HISTORY_UNKNOWN",
    })
}

pub fn allow_reason_name(r: AllowReason) -> Option<&'static str> {
    Some(match r {
        AllowReason::Unspecified => return None,
        AllowReason::Grant => "GRANT",
        AllowReason::UngatedPermission => "UNGATED_PERMISSION",
        AllowReason::RouteAllow => "ROUTE_ALLOW",
        AllowReason::RouteRequirementsMet => "ROUTE_REQUIREMENTS_MET",
        AllowReason::SoftLimitOverage => "SOFT_LIMIT_OVERAGE",
        AllowReason::Credits => "CREDITS",
    })
}

pub fn level(l: GrantLevel) -> Option<ProvenanceLevel> {
    match l {
        GrantLevel::Unspecified => None,
        GrantLevel::User => Some(ProvenanceLevel::User),
        GrantLevel::Account => Some(ProvenanceLevel::Account),
        GrantLevel::Ancestor => Some(ProvenanceLevel::Ancestor),
        GrantLevel::Targeting => Some(ProvenanceLevel::Targeting),
    }
}

pub fn provenance(p: pb::Provenance) -> Provenance {
    Provenance {
        level: level(p.level()),
        grant_id: p.grant_id,
        plan_id: p.plan_id,
        plan_key: p.plan_key,
        granted_tenant_id: p.granted_tenant_id,
        feature_key: p.feature_key,
        route_id: p.route_id,
    }
}

fn decision(d: pb::EntitlementDecision) -> Decision {
    Decision {
        result: d.result,
        justification: justification_name(d.justification()).map(str::to_owned),
        allow_reason: allow_reason_name(d.allow_reason()).map(str::to_owned),
        allocation: allocation_json(d.allocation),
        provenance: d.provenance.map(provenance),
        next_change_at: opt_timestamp(d.next_change_at),
        meter: d.meter.map(meter_json),
    }
}

pub fn meter_json(m: pb::MeterReading) -> MeterJson {
    MeterJson {
        balance: m.balance,
        usage: m.usage,
        overage: m.overage,
        held: m.held,
        period_start: opt_timestamp(m.period_start),
        period_end: opt_timestamp(m.period_end),
        owner_tenant_id: m.owner_tenant_id,
        user_id: m.user_id,
        as_of: opt_timestamp(m.as_of),
    }
}

/// Frontegg's `frontegg` targeting attributes. With a user token they are the token's
/// (`email`, `email_verified`, `tenantId`, `sub` claims), whatever the body says: a body
/// value under one of these names is dropped, and a claim the token lacks stays absent.
pub const TOKEN_ATTRIBUTES: [&str; 4] = ["email", "emailVerified", "tenantId", "userId"];

/// The subject as the principal may ask about it (see the module comment); the caller has
/// already checked the principal's scope over `s.tenant_id`.
pub fn subject(principal: &Principal, s: SubjectBody) -> Result<pb::Subject, ApiError> {
    let (user_id, permissions, attributes) = match principal {
        Principal::Environment { .. } => (s.user_id, s.permissions, s.attributes),
        Principal::User {
            user_id,
            tenant_id,
            permissions,
            email,
            email_verified,
        } => {
            if s.user_id.as_ref().is_some_and(|u| u != user_id) {
                return Err(ApiError::forbidden());
            }
            let mut attributes = s.attributes;
            for name in TOKEN_ATTRIBUTES {
                attributes.remove(name);
            }
            let from_token = [
                ("email", email.clone().map(Json_::from)),
                ("emailVerified", email_verified.map(Json_::from)),
                ("tenantId", Some(Json_::from(tenant_id.clone()))),
                ("userId", Some(Json_::from(user_id.clone()))),
            ];
            for (name, value) in from_token {
                if let Some(value) = value {
                    attributes.insert(name.to_owned(), value);
                }
            }
            // A user's permissions come from its token, never from the body.
            (Some(user_id.clone()), permissions.clone(), attributes)
        }
    };
    Ok(pb::Subject {
        tenant_id: s.tenant_id,
        user_id,
        permissions,
        attributes: Some(attributes_to_struct(attributes, "subject.attributes")?),
    })
}

fn target(
    feature: Option<FeatureTarget>,
    permission: Option<PermissionTarget>,
    route: Option<RouteTargetBody>,
    field: &str,
) -> Result<Target, ApiError> {
    match (feature, permission, route) {
        (Some(f), None, None) => Ok(Target::FeatureKey(f.feature_key)),
        (None, Some(p), None) => Ok(Target::PermissionKey(p.permission_key)),
        (None, None, Some(r)) => Ok(Target::Route(RouteTarget {
            method: r.method,
            path: r.path,
        })),
        _ => Err(ApiError::invalid_field(
            field,
            "give exactly one of feature, permission and route",
        )),
    }
}

/// One query; the caller has checked the principal's scope over the subject's account.
fn query(
    principal: &Principal,
    subject_body: SubjectBody,
    target: Target,
    at: Option<String>,
    requested_amount: Option<u64>,
    field: &str,
) -> Result<EntitlementQuery, ApiError> {
    Ok(EntitlementQuery {
        subject: Some(subject(principal, subject_body)?),
        target: Some(target),
        at: at
            .map(|t| parse_time_field(&t, &format!("{field}at")))
            .transpose()?,
        requested_amount,
    })
}

/// Is the subject entitled to a feature, a permission or a route? With provenance.
#[utoipa::path(post, path = "/entitlements/api/v1/is-entitled-to", tag = "Checks",
    params(("frontegg-tenant-id" = Option<String>, Header, description = "With a user token: must name an account the token reaches (else 403)")), request_body = CheckBody,
    responses((status = 200, body = CheckResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn is_entitled_to(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(b): ApiJson<CheckBody>,
) -> Result<Json<CheckResponse>, ApiError> {
    scope::header_account(&state, &p, &headers).await?;
    let t = target(b.feature, b.permission, b.route, "feature")?;
    scope::ensure_account(&state, &p, &b.subject.tenant_id).await?;
    check_one(
        &state,
        &p,
        t,
        b.subject,
        b.at,
        b.requested_amount,
        b.min_revision,
    )
    .await
}

/// One check whose subject the caller may ask about.
async fn check_one<D: Decide>(
    decide: &D,
    p: &Principal,
    t: Target,
    subject: SubjectBody,
    at: Option<String>,
    requested_amount: Option<u64>,
    min_revision: Option<u64>,
) -> Result<Json<CheckResponse>, ApiError> {
    let q = query(p, subject, t, at, requested_amount, "")?;
    let out = decide.check(p, q, min_revision.unwrap_or_default()).await?;
    Ok(Json(CheckResponse {
        decision: decision(out.decision.unwrap_or_default()),
        revision: out.revision,
    }))
}

fn batch_size(b: &BatchCheckBody) -> Result<(), ApiError> {
    if b.checks.is_empty() || b.checks.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "checks",
            format!("must hold 1 to {MAX_BATCH} checks (got {})", b.checks.len()),
        ));
    }
    Ok(())
}

/// A batch of checks whose subjects the caller may ask about.
async fn check_many<D: Decide>(
    decide: &D,
    p: &Principal,
    b: BatchCheckBody,
) -> Result<Json<BatchCheckResponse>, ApiError> {
    let mut queries = Vec::with_capacity(b.checks.len());
    for (i, c) in b.checks.into_iter().enumerate() {
        let field = format!("checks[{i}].");
        let t = target(c.feature, c.permission, c.route, &format!("{field}feature"))?;
        queries.push(query(p, c.subject, t, c.at, c.requested_amount, &field)?);
    }
    let out = decide
        .check_batch(
            p,
            BatchIsEntitledToRequest {
                queries,
                min_revision: b.min_revision.unwrap_or_default(),
            },
        )
        .await?;
    Ok(Json(BatchCheckResponse {
        results: out.decisions.into_iter().map(decision).collect(),
        revision: out.revision,
    }))
}

/// Many checks in one call (up to 1,000), answers in request order.
#[utoipa::path(post, path = "/entitlements/api/v1/is-entitled-to/batch", tag = "Checks",
    params(("frontegg-tenant-id" = Option<String>, Header, description = "With a user token: must name an account the token reaches (else 403)")), request_body = BatchCheckBody,
    responses((status = 200, body = BatchCheckResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn is_entitled_to_batch(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(b): ApiJson<BatchCheckBody>,
) -> Result<Json<BatchCheckResponse>, ApiError> {
    scope::header_account(&state, &p, &headers).await?;
    batch_size(&b)?;
    // The scope rule once for the batch's distinct accounts, not once per item.
    scope::ensure_accounts(
        &state,
        &p,
        b.checks.iter().map(|c| c.subject.tenant_id.as_str()),
    )
    .await?;
    check_many(&state, &p, b).await
}

// ---------------------------------------------------------------------------------------------
// Frontegg's agent endpoints

/// `{"input": {"subjectContext", "requestContext"}}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBody<R> {
    pub input: AgentInput<R>,
}

/// The agent's input.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentInput<R> {
    pub subject_context: SubjectBody,
    pub request_context: R,
}

/// The agent's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentResponse {
    pub decision_id: String,
    #[schema(value_type = Object)]
    pub metrics: Map<String, Json_>,
    pub result: AgentResult,
}

/// `{"result", "justification", "monitoring"}`, plus Tenantry's finer `reason`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentResult {
    pub result: bool,
    /// Only the justifications Frontegg documents for its agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(MISSING_FEATURE|MISSING_PERMISSION|PLAN_EXPIRED|MISSING_ROUTE|ROUTE_DENIED)$")]
    pub justification: Option<String>,
    pub monitoring: bool,
    /// Tenantry's own reason when it is finer than `justification` (`PLAN_REVOKED`,
    /// `NOT_STARTED`, `FEATURE_FLAG_OFF`, `LIMIT_EXCEEDED`, `TENANT_NOT_FOUND`); a strict
    /// Frontegg client ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The justification Frontegg's agent documents for a denial: ours where it is one of
/// Frontegg's, else the "missing" one of the check's kind (a revoked, not yet started or
/// flagged-off grant, a limit reached or an unknown account leave the subject without the
/// feature, or the permission).
fn agent_justification(j: Justification, permission_check: bool) -> Option<&'static str> {
    let missing = if permission_check {
        "MISSING_PERMISSION"
    } else {
        "MISSING_FEATURE"
    };
    Some(match j {
        Justification::Unspecified => return None,
        Justification::MissingFeature => "MISSING_FEATURE",
        Justification::MissingPermission => "MISSING_PERMISSION",
        Justification::PlanExpired => "PLAN_EXPIRED",
        Justification::MissingRoute => "MISSING_ROUTE",
        Justification::RouteDenied => "ROUTE_DENIED",
        Justification::PlanRevoked
        | Justification::NotStarted
        | Justification::FeatureFlagOff
        | Justification::LimitExceeded
        | Justification::UsageLimitReached
        | Justification::InsufficientBalance
        | Justification::MeterHistoryUnknown
        | Justification::TenantNotFound => missing,
    })
}

async fn agent(
    state: &AppState,
    p: &Principal,
    subject_body: SubjectBody,
    target: Target,
) -> Result<Json<AgentResponse>, ApiError> {
    scope::ensure_account(state, p, &subject_body.tenant_id).await?;
    agent_answer(state, p, subject_body, target).await
}

/// An agent check whose subject the caller may ask about.
async fn agent_answer<D: Decide>(
    decide: &D,
    p: &Principal,
    subject_body: SubjectBody,
    target: Target,
) -> Result<Json<AgentResponse>, ApiError> {
    let started = std::time::Instant::now();
    let permission_check = matches!(target, Target::PermissionKey(_));
    let q = query(p, subject_body, target, None, None, "input.")?;
    let out = decide.check(p, q, 0).await?;
    let d = out.decision.unwrap_or_default();
    let mut metrics = Map::new();
    metrics.insert(
        "timer_server_handler_ns".to_owned(),
        Json_::from(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
    );
    Ok(Json(AgentResponse {
        decision_id: uuid::Uuid::new_v4().to_string(),
        metrics,
        result: AgentResult {
            result: d.result,
            justification: agent_justification(d.justification(), permission_check)
                .map(str::to_owned),
            monitoring: false,
            reason: justification_name(d.justification())
                .filter(|fine| {
                    Some(*fine) != agent_justification(d.justification(), permission_check)
                })
                .map(str::to_owned),
        },
    }))
}

/// Frontegg agent: feature check.
#[utoipa::path(post, path = "/v1/data/e10s/features/is_entitled_to_input_feature", tag = "Checks",
    params(("frontegg-tenant-id" = Option<String>, Header, description = "With a user token: must name an account the token reaches (else 403)")), request_body = AgentBody<FeatureTarget>,
    responses((status = 200, body = AgentResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn agent_feature(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(b): ApiJson<AgentBody<FeatureTarget>>,
) -> Result<Json<AgentResponse>, ApiError> {
    scope::header_account(&state, &p, &headers).await?;
    let t = Target::FeatureKey(b.input.request_context.feature_key);
    agent(&state, &p, b.input.subject_context, t).await
}

/// Frontegg agent: permission check.
#[utoipa::path(post, path = "/v1/data/e10s/permissions/is_entitled_to_input_permission", tag = "Checks",
    params(("frontegg-tenant-id" = Option<String>, Header, description = "With a user token: must name an account the token reaches (else 403)")), request_body = AgentBody<PermissionTarget>,
    responses((status = 200, body = AgentResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn agent_permission(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(b): ApiJson<AgentBody<PermissionTarget>>,
) -> Result<Json<AgentResponse>, ApiError> {
    scope::header_account(&state, &p, &headers).await?;
    let t = Target::PermissionKey(b.input.request_context.permission_key);
    agent(&state, &p, b.input.subject_context, t).await
}

/// Frontegg agent: route check.
#[utoipa::path(post, path = "/v1/data/e10s/routes/is_entitled_to_input_route", tag = "Checks",
    params(("frontegg-tenant-id" = Option<String>, Header, description = "With a user token: must name an account the token reaches (else 403)")), request_body = AgentBody<RouteTargetBody>,
    responses((status = 200, body = AgentResponse), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn agent_route(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiJson(b): ApiJson<AgentBody<RouteTargetBody>>,
) -> Result<Json<AgentResponse>, ApiError> {
    scope::header_account(&state, &p, &headers).await?;
    let r = b.input.request_context;
    let t = Target::Route(RouteTarget {
        method: r.method,
        path: r.path,
    });
    agent(&state, &p, b.input.subject_context, t).await
}
