//! OFREP, the OpenFeature Remote Evaluation Protocol (`open-feature/protocol`,
//! `service/openapi.yaml`): `POST /ofrep/v1/evaluate/flags/{key}`, the bulk
//! `POST /ofrep/v1/evaluate/flags` (ETag, `If-None-Match` → 304) and
//! `GET /ofrep/v1/configuration`, over any [`Evaluator`]: the gateway's asks the entitlement
//! service ([`gateway::GatewayEvaluator`]), the agent's its in-memory index. The handlers only
//! decode the request, call the evaluator, and encode OFREP's shapes; the key scheme, the
//! context → subject rule and the reason mapping live here, once.
//!
//! Key scheme (README "OpenFeature"): `{featureKey}` (or `feature:{featureKey}`) is a boolean,
//! is-entitled-to; `allocation:{featureKey}` an object, the effective allocation
//! `{"type", "value"}`; `limit:{featureKey}` an integer, a `max_count` feature's effective
//! count or a metered feature's balance; `perm:{permissionKey}` a boolean permission check. A
//! metered feature's flags carry its meter in their metadata (`balance`, `usage`, `overage`,
//! `held`, `periodStart`, `periodEnd`).

pub mod gateway;

use std::{borrow::Cow, future::Future};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequestParts, Path, State, rejection::BytesRejection},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value as Json_};
use sha2::{Digest, Sha256};
use tenantry_common::limits;
use tenantry_proto::entitlement::v1::{
    self as pb, AllocationType, GrantLevel, Justification, allocation::Kind,
    entitlement_query::Target,
};
use utoipa::ToSchema;

use crate::{
    convert::{attributes_to_struct, opt_timestamp},
    error::ApiError,
    routes::{
        checks::{justification_name, level},
        rules::allocation_json,
    },
};

/// Most features one bulk evaluation answers for (three flags each at most).
pub const MAX_BULK_FEATURES: usize = 5_000;
/// The largest integer every JSON client reads exactly (2^53 − 1): an unlimited `limit:` flag.
pub const UNLIMITED: u64 = (1 << 53) - 1;

/// The prefixes of the key scheme.
const FEATURE_PREFIX: &str = "feature:";
const PERMISSION_PREFIX: &str = "perm:";
const ALLOCATION_PREFIX: &str = "allocation:";
const LIMIT_PREFIX: &str = "limit:";

/// A feature of the catalog, as OFREP needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogFeature {
    pub key: String,
    pub allocation_type: AllocationType,
    /// Its flag's on/off switch; `None` without a flag.
    pub flag_on: Option<bool>,
}

impl CatalogFeature {
    pub fn from_proto(f: &pb::Feature) -> Self {
        Self {
            key: f.key.clone(),
            allocation_type: f.allocation_type(),
            flag_on: f.feature_flag.as_ref().map(|flag| flag.on),
        }
    }
}

/// The evaluation context, decoded: OpenFeature's `targetingKey`, our `tenantId` and
/// `permissions`, and every other attribute (`tenantId` included) for targeting rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    pub targeting_key: Option<String>,
    pub tenant_id: Option<String>,
    pub permissions: Vec<String>,
    pub attributes: Map<String, Json_>,
}

impl Context {
    /// The subject when the caller may ask about anyone (an environment token; the agent on its
    /// loopback): the account is `tenantId`, and `targetingKey` names its user; without
    /// `tenantId`, `targetingKey` names the account (an account-level evaluation). Neither is
    /// TARGETING_KEY_MISSING.
    pub fn subject(self) -> Result<pb::Subject, OfrepError> {
        let (tenant_id, user_id) = match (self.tenant_id, self.targeting_key) {
            (Some(tenant), user) => (tenant, user.filter(|u| !u.is_empty())),
            (None, Some(account)) if !account.is_empty() => (account, None),
            (None, Some(_) | None) => {
                return Err(OfrepError::targeting_key_missing());
            }
        };
        Ok(pb::Subject {
            tenant_id,
            user_id,
            permissions: self.permissions,
            attributes: Some(attributes_to_struct(self.attributes, "context")?),
        })
    }
}

/// Answers OFREP's evaluations: who asks ([`Evaluator::Caller`], from the request), whom they
/// may ask about, the catalog, and checks. Implemented by the gateway over gRPC and by the agent
/// over its index; mounted with [`router`].
pub trait Evaluator: Clone + Send + Sync + 'static {
    /// Who asks, taken from the request (e.g. the gateway's authenticated principal).
    type Caller: FromRequestParts<Self, Rejection: IntoResponse> + Send + Sync + 'static;

    /// The subject `caller` asks about for `context`: may override parts of it (a user token's
    /// own user and permissions) or refuse it (403 for an account the caller may not see).
    fn subject(
        &self,
        caller: &Self::Caller,
        context: Context,
    ) -> impl Future<Output = Result<pb::Subject, OfrepError>> + Send;

    /// One feature of the catalog by key; `None` when there is none.
    fn feature(
        &self,
        caller: &Self::Caller,
        key: &str,
    ) -> impl Future<Output = Result<Option<CatalogFeature>, OfrepError>> + Send;

    /// The catalog ordered by key, at most `limit` features (a caller sees `limit + 1` as "too
    /// many").
    fn features(
        &self,
        caller: &Self::Caller,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<CatalogFeature>, OfrepError>> + Send;

    /// Answers `queries` in order, with the index revision the answers include.
    fn check(
        &self,
        caller: &Self::Caller,
        queries: Vec<pb::EntitlementQuery>,
    ) -> impl Future<Output = Result<(Vec<pb::EntitlementDecision>, u64), OfrepError>> + Send;

    /// Metadata added to every answer's (e.g. an agent's staleness); none by default.
    fn metadata(&self) -> Map<String, Json_> {
        Map::new()
    }
}

/// The OFREP routes over `evaluator`, for any router state: the gateway merges them into its
/// API, the agent into its listener.
pub fn router<E: Evaluator, S: Clone + Send + Sync + 'static>(evaluator: E) -> Router<S> {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_flag::<E>))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_flags::<E>))
        .route("/ofrep/v1/configuration", get(configuration))
        .with_state(evaluator)
}

// ---------------------------------------------------------------------------------------------
// Wire shapes

/// OFREP's request body: `{"context": {...}}` (both optional).
#[derive(Debug, ToSchema)]
#[schema(as = OfrepEvaluationRequest)]
pub struct EvaluationRequest {
    /// The evaluation context: `targetingKey` (the user; the account when `tenantId` is
    /// absent), `tenantId` (the account), `permissions` (with an environment token), and any
    /// other attribute for targeting rules (at most 10 levels, 256 keys, 16 KiB).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Json_>>,
}

/// One flag's value.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OfrepEvaluation)]
pub struct Evaluation {
    pub key: String,
    /// A boolean (`{featureKey}`, `perm:`), an object (`allocation:`) or an integer (`limit:`).
    #[schema(value_type = Object)]
    pub value: Json_,
    /// `STATIC`, `TARGETING_MATCH`, `DISABLED` or `DEFAULT`.
    pub reason: Reason,
    /// `true`/`false` for booleans, the allocation's type for objects, the count (or
    /// `unlimited`) for integers.
    pub variant: String,
    /// Why, in OpenFeature's flat metadata: `revision`, `justification` or `allowReason`, and
    /// the deciding grant (`planKey`, `planId`, `grantId`, `level`, `grantedTenantId`,
    /// `featureKey`), `nextChangeAt`, `unlimited`; a metered feature's meter (`balance`,
    /// `usage`, `overage`, `held`, `periodStart`, `periodEnd`).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Json_>,
}

/// `{"flags": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OfrepBulkEvaluation)]
pub struct BulkEvaluation {
    pub flags: Vec<Evaluation>,
}

/// OpenFeature's resolution reasons we answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = OfrepReason)]
pub enum Reason {
    /// A grant assigns the feature to the subject (no rule was evaluated), or an ungated
    /// permission is held.
    Static,
    /// A rule chose: a plan's targeting selected the subject, or the feature's flag (on) was
    /// evaluated for it.
    TargetingMatch,
    /// The feature's flag is switched off.
    Disabled,
    /// Nothing grants it: the default (false, no allocation, 0).
    Default,
}

/// OFREP's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = OfrepErrorCode)]
pub enum ErrorCode {
    ParseError,
    TargetingKeyMissing,
    InvalidContext,
    FlagNotFound,
    General,
}

/// Every OFREP error: `{"key"?, "errorCode", "errorDetails"}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OfrepErrorBody)]
pub struct ErrorBody {
    /// The evaluated flag (single evaluations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub error_code: ErrorCode,
    pub error_details: String,
}

/// `GET /ofrep/v1/configuration`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OfrepConfiguration)]
pub struct Configuration {
    pub name: &'static str,
    #[schema(value_type = Object)]
    pub capabilities: Json_,
}

/// An evaluation refused: the HTTP status, OFREP's code and what went wrong.
#[derive(Clone, Debug)]
pub struct OfrepError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub details: String,
    /// Seconds for `retry-after` (429, 503).
    pub retry_after: Option<u64>,
}

impl OfrepError {
    pub fn new(status: StatusCode, code: ErrorCode, details: impl Into<String>) -> Self {
        Self {
            status,
            code,
            details: details.into(),
            retry_after: None,
        }
    }

    pub fn parse(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::ParseError, details)
    }

    pub fn invalid_context(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidContext, details)
    }

    pub fn targeting_key_missing() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::TargetingKeyMissing,
            "the context names no account: give `tenantId` (and `targetingKey` for a user), or \
             `targetingKey` alone for an account",
        )
    }

    pub fn flag_not_found(details: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::FlagNotFound, details)
    }

    fn with_key(self, key: Option<&str>) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                key: key.map(str::to_owned),
                error_code: self.code,
                error_details: self.details,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for OfrepError {
    fn into_response(self) -> Response {
        self.with_key(None)
    }
}

/// The gateway's errors (a token's scope, a service's refusal or outage) in OFREP's terms: a
/// bad request is about the context (the only input besides the key); anything else keeps its
/// status as GENERAL.
impl From<ApiError> for OfrepError {
    fn from(e: ApiError) -> Self {
        let code = if e.status == StatusCode::BAD_REQUEST {
            ErrorCode::InvalidContext
        } else {
            ErrorCode::General
        };
        Self {
            status: e.status,
            code,
            details: e.body.message,
            retry_after: e.retry_after,
        }
    }
}

/// A service's (or the agent's in-process check handlers') refusal, through the one gRPC →
/// HTTP table.
impl From<tonic::Status> for OfrepError {
    fn from(status: tonic::Status) -> Self {
        ApiError::from(status).into()
    }
}

impl From<ApiError> for ErrorBody {
    fn from(e: ApiError) -> Self {
        let e = OfrepError::from(e);
        Self {
            key: None,
            error_code: e.code,
            error_details: e.details,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// What an OFREP key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKey<'a> {
    /// `{featureKey}`, `feature:{featureKey}`: is-entitled-to, a boolean.
    Feature(&'a str),
    /// `allocation:{featureKey}`: the effective allocation, an object.
    Allocation(&'a str),
    /// `limit:{featureKey}`: a `max_count` feature's effective count, a metered feature's
    /// balance, an integer.
    Limit(&'a str),
    /// `perm:{permissionKey}`: a permission check, a boolean.
    Permission(&'a str),
}

impl<'a> FlagKey<'a> {
    pub fn parse(key: &'a str) -> Self {
        if let Some(k) = key.strip_prefix(FEATURE_PREFIX) {
            Self::Feature(k)
        } else if let Some(k) = key.strip_prefix(ALLOCATION_PREFIX) {
            Self::Allocation(k)
        } else if let Some(k) = key.strip_prefix(LIMIT_PREFIX) {
            Self::Limit(k)
        } else if let Some(k) = key.strip_prefix(PERMISSION_PREFIX) {
            Self::Permission(k)
        } else {
            Self::Feature(key)
        }
    }
}

/// The boolean flag's key of a feature: the feature key itself, unless it starts like another
/// kind of key.
fn feature_flag_key(key: &str) -> Cow<'_, str> {
    if [
        FEATURE_PREFIX,
        ALLOCATION_PREFIX,
        LIMIT_PREFIX,
        PERMISSION_PREFIX,
    ]
    .iter()
    .any(|p| key.starts_with(p))
    {
        Cow::Owned(format!("{FEATURE_PREFIX}{key}"))
    } else {
        Cow::Borrowed(key)
    }
}

/// Whether a feature has a `limit:` flag: a `max_count` feature's count, a metered feature's
/// balance.
fn has_limit(feature: &CatalogFeature) -> bool {
    matches!(
        feature.allocation_type,
        AllocationType::MaxCount | AllocationType::Metered
    )
}

/// The request body's context. An empty body is no context; anything not a JSON object with an
/// optional object `context` is PARSE_ERROR; a context attribute of the wrong type is
/// INVALID_CONTEXT.
pub fn decode(body: &[u8]) -> Result<Context, OfrepError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Context::default());
    }
    if limits::json_deeper_than(body, limits::MAX_BODY_DEPTH) {
        return Err(OfrepError::parse(format!(
            "the JSON body is nested more than {} levels deep",
            limits::MAX_BODY_DEPTH
        )));
    }
    let value: Json_ = serde_json::from_slice(body)
        .map_err(|e| OfrepError::parse(format!("the body is not valid JSON: {e}")))?;
    let Json_::Object(mut request) = value else {
        return Err(OfrepError::parse("the body must be a JSON object"));
    };
    let mut attributes = match request.remove("context") {
        None | Some(Json_::Null) => return Ok(Context::default()),
        Some(Json_::Object(context)) => context,
        Some(_) => return Err(OfrepError::parse("`context` must be a JSON object")),
    };
    let text = |attributes: &mut Map<String, Json_>, name: &str, keep: bool| {
        let value = if keep {
            attributes.get(name).cloned()
        } else {
            attributes.remove(name)
        };
        match value {
            None | Some(Json_::Null) => Ok(None),
            Some(Json_::String(s)) => Ok(Some(s)),
            Some(_) => Err(OfrepError::invalid_context(format!(
                "`context.{name}` must be a string"
            ))),
        }
    };
    let targeting_key = text(&mut attributes, "targetingKey", false)?;
    // The account stays a targeting attribute as well (rules may name `tenantId`).
    let tenant_id = text(&mut attributes, "tenantId", true)?;
    let permissions = match attributes.remove("permissions") {
        None | Some(Json_::Null) => Vec::new(),
        Some(Json_::Array(items)) => items
            .into_iter()
            .map(|p| match p {
                Json_::String(s) => Ok(s),
                Json_::Null
                | Json_::Bool(_)
                | Json_::Number(_)
                | Json_::Array(_)
                | Json_::Object(_) => Err(OfrepError::invalid_context(
                    "`context.permissions` must be an array of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(OfrepError::invalid_context(
                "`context.permissions` must be an array of strings",
            ));
        }
    };
    Ok(Context {
        targeting_key,
        tenant_id,
        permissions,
        attributes,
    })
}

fn query(subject: &pb::Subject, target: Target) -> pb::EntitlementQuery {
    pb::EntitlementQuery {
        subject: Some(subject.clone()),
        target: Some(target),
        at: None,
        requested_amount: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// The OpenFeature reason of a decision (module comment of [`Reason`]'s variants); `feature`
/// is the checked feature when the flag names one.
fn reason(d: &pb::EntitlementDecision, feature: Option<&CatalogFeature>) -> Reason {
    let flag_on = feature.and_then(|f| f.flag_on);
    if d.result {
        let targeted = d
            .provenance
            .as_ref()
            .is_some_and(|p| p.level() == GrantLevel::Targeting);
        if targeted || flag_on == Some(true) {
            Reason::TargetingMatch
        } else {
            Reason::Static
        }
    } else if d.justification() == Justification::FeatureFlagOff {
        if flag_on == Some(true) {
            Reason::TargetingMatch
        } else {
            Reason::Disabled
        }
    } else {
        Reason::Default
    }
}

/// Our justification, allow reason and provenance as OpenFeature's flat metadata.
fn metadata(d: &pb::EntitlementDecision, revision: u64) -> Map<String, Json_> {
    let mut m = Map::new();
    m.insert("revision".to_owned(), Json_::from(revision));
    if let Some(j) = justification_name(d.justification()) {
        m.insert("justification".to_owned(), Json_::from(j));
    }
    if let Some(a) = crate::routes::checks::allow_reason_name(d.allow_reason()) {
        m.insert("allowReason".to_owned(), Json_::from(a));
    }
    if let Some(p) = &d.provenance {
        for (name, value) in [
            ("planKey", &p.plan_key),
            ("planId", &p.plan_id),
            ("grantId", &p.grant_id),
            ("grantedTenantId", &p.granted_tenant_id),
            ("featureKey", &p.feature_key),
        ] {
            if !value.is_empty() {
                m.insert(name.to_owned(), Json_::from(value.as_str()));
            }
        }
        if let Some(l) = level(p.level())
            && let Ok(Json_::String(l)) = serde_json::to_value(l)
        {
            m.insert("level".to_owned(), Json_::from(l));
        }
    }
    if let Some(at) = opt_timestamp(d.next_change_at) {
        m.insert("nextChangeAt".to_owned(), Json_::from(at));
    }
    if let Some(meter) = &d.meter {
        // Flat metadata holds no null: an unlimited balance is left out and said so.
        match meter.balance {
            Some(balance) => m.insert("balance".to_owned(), Json_::from(balance)),
            None => m.insert("unlimited".to_owned(), Json_::Bool(true)),
        };
        for (name, value) in [
            ("usage", meter.usage),
            ("overage", meter.overage),
            ("held", meter.held),
        ] {
            m.insert(name.to_owned(), Json_::from(value));
        }
        for (name, at) in [
            ("periodStart", meter.period_start),
            ("periodEnd", meter.period_end),
        ] {
            if let Some(at) = opt_timestamp(at) {
                m.insert(name.to_owned(), Json_::from(at));
            }
        }
    }
    m
}

/// A metered feature's `allocation:` type.
const METERED: &str = "metered";

/// The amount a metered feature's grants issue each period: `null` when unlimited, 0 when
/// credits alone entitle.
fn issued_per_period(d: &pb::EntitlementDecision) -> Json_ {
    match d.allocation.and_then(|a| a.kind) {
        Some(Kind::MaxCountAllocation(m)) if m.unlimited => Json_::Null,
        Some(Kind::MaxCountAllocation(m)) => Json_::from(m.value),
        Some(Kind::BoolAllocation(_)) | None => Json_::from(0),
    }
}

/// The flag `key` asks for, from its check's decision.
fn evaluation(
    key: String,
    kind: FlagKey<'_>,
    feature: Option<&CatalogFeature>,
    d: &pb::EntitlementDecision,
    revision: u64,
) -> Evaluation {
    let mut metadata = metadata(d, revision);
    let metered = feature.is_some_and(|f| f.allocation_type == AllocationType::Metered);
    let (value, variant) = match kind {
        FlagKey::Feature(_) | FlagKey::Permission(_) => {
            (Json_::Bool(d.result), d.result.to_string())
        }
        // A metered feature's allocation is the amount issued each period (shown while the
        // meter is, also when it is spent), its limit what remains of it now.
        FlagKey::Allocation(_) if metered => match d.meter {
            Some(_) => (
                serde_json::json!({"type": METERED, "value": issued_per_period(d)}),
                METERED.to_owned(),
            ),
            None => (
                serde_json::to_value(allocation_json(None)).unwrap_or_default(),
                "none".to_owned(),
            ),
        },
        FlagKey::Allocation(_) => {
            let a = allocation_json(if d.result { d.allocation } else { None });
            let variant = if a.kind.is_empty() {
                "none".to_owned()
            } else {
                a.kind.clone()
            };
            (serde_json::to_value(a).unwrap_or_default(), variant)
        }
        FlagKey::Limit(_) if metered => {
            let count = match d.meter.as_ref().map(|m| m.balance) {
                Some(None) => {
                    metadata.insert("unlimited".to_owned(), Json_::Bool(true));
                    UNLIMITED
                }
                Some(Some(balance)) => u64::try_from(balance).unwrap_or(0).min(UNLIMITED),
                None => 0,
            };
            let variant = if metadata.contains_key("unlimited") {
                "unlimited".to_owned()
            } else {
                count.to_string()
            };
            (Json_::from(count), variant)
        }
        FlagKey::Limit(_) => {
            let count = match d.allocation.and_then(|a| a.kind) {
                Some(Kind::MaxCountAllocation(m)) if d.result && m.unlimited => {
                    metadata.insert("unlimited".to_owned(), Json_::Bool(true));
                    UNLIMITED
                }
                Some(Kind::MaxCountAllocation(m)) if d.result => m.value.min(UNLIMITED),
                Some(Kind::MaxCountAllocation(_) | Kind::BoolAllocation(_)) | None => 0,
            };
            let variant = if metadata.contains_key("unlimited") {
                "unlimited".to_owned()
            } else {
                count.to_string()
            };
            (Json_::from(count), variant)
        }
    };
    Evaluation {
        key,
        value,
        reason: reason(d, feature),
        variant,
        metadata,
    }
}

/// The bulk answer's entity tag: the revision its answers include, and a digest of the subject
/// they were computed for and of the answers themselves (a grant expiring changes answers
/// without a new revision).
fn etag(revision: u64, subject: &pb::Subject, body: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(prost::Message::encode_to_vec(subject));
    digest.update(body);
    let hash = digest.finalize();
    let short: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{revision}-{short}\"")
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare by their value.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Evaluates one flag (OFREP single evaluation; the server SDKs' provider).
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "OpenFeature",
    params(("key" = String, Path, description = "`{featureKey}`, `feature:{featureKey}`, `allocation:{featureKey}`, `limit:{featureKey}` or `perm:{permissionKey}`")),
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = Evaluation),
        (status = 400, description = "PARSE_ERROR, TARGETING_KEY_MISSING or INVALID_CONTEXT", body = ErrorBody),
        (status = 404, description = "FLAG_NOT_FOUND", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn evaluate_flag<E: Evaluator>(
    State(evaluator): State<E>,
    caller: E::Caller,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable(&rejection).with_key(Some(&key)),
    };
    match evaluate_one(&evaluator, &caller, &key, &body).await {
        Ok(mut evaluation) => {
            evaluation.metadata.extend(evaluator.metadata());
            Json(evaluation).into_response()
        }
        Err(e) => e.with_key(Some(&key)),
    }
}

/// A body that could not be read (over the size limit, cut off): its status, GENERAL.
fn unreadable(rejection: &BytesRejection) -> OfrepError {
    let status = rejection.status();
    let details = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the request body is larger than the configured limit".to_owned()
    } else {
        "the request body could not be read".to_owned()
    };
    OfrepError::new(status, ErrorCode::General, details)
}

async fn evaluate_one<E: Evaluator>(
    evaluator: &E,
    caller: &E::Caller,
    key: &str,
    body: &[u8],
) -> Result<Evaluation, OfrepError> {
    let context = decode(body)?;
    let subject = evaluator.subject(caller, context).await?;
    let kind = FlagKey::parse(key);
    if let FlagKey::Feature("")
    | FlagKey::Allocation("")
    | FlagKey::Limit("")
    | FlagKey::Permission("") = kind
    {
        return Err(OfrepError::flag_not_found(format!("`{key}` names nothing")));
    }
    let (target, feature) = match kind {
        FlagKey::Permission(p) => (Target::PermissionKey(p.to_owned()), None),
        FlagKey::Feature(f) | FlagKey::Allocation(f) | FlagKey::Limit(f) => {
            let target = Target::FeatureKey(f.to_owned());
            // The catalog and the check together: an unknown key's check is only wasted.
            let (feature, checked) = futures::future::join(
                evaluator.feature(caller, f),
                evaluator.check(caller, vec![query(&subject, target)]),
            )
            .await;
            let feature =
                feature?.ok_or_else(|| OfrepError::flag_not_found(format!("no feature `{f}`")))?;
            if matches!(kind, FlagKey::Limit(_)) && !has_limit(&feature) {
                return Err(OfrepError::flag_not_found(format!(
                    "`{f}` is neither a max_count nor a metered feature: it has no `limit:` flag"
                )));
            }
            let (decisions, revision) = checked?;
            let d = decisions.into_iter().next().unwrap_or_default();
            return Ok(evaluation(
                key.to_owned(),
                kind,
                Some(&feature),
                &d,
                revision,
            ));
        }
    };
    let (decisions, revision) = evaluator
        .check(caller, vec![query(&subject, target)])
        .await?;
    let d = decisions.into_iter().next().unwrap_or_default();
    Ok(evaluation(key.to_owned(), kind, feature, &d, revision))
}

/// Evaluates every feature's flags for a context (OFREP bulk evaluation; the web SDKs'
/// provider): `{featureKey}`, `allocation:{featureKey}` and, for `max_count` and metered
/// features, `limit:{featureKey}`, ordered by feature key. `If-None-Match` with the `ETag` of an answer
/// that has not changed is 304.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "OpenFeature",
    params(("If-None-Match" = Option<String>, Header, description = "The `ETag` of an earlier answer: 304 while it still holds")),
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = BulkEvaluation, headers(("ETag" = String, description = "The answer's entity tag"))),
        (status = 304, description = "The answer named by `If-None-Match` still holds"),
        (status = 400, description = "PARSE_ERROR, TARGETING_KEY_MISSING or INVALID_CONTEXT", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn evaluate_flags<E: Evaluator>(
    State(evaluator): State<E>,
    caller: E::Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable(&rejection).into_response(),
    };
    match evaluate_all(&evaluator, &caller, &body).await {
        Ok((subject, mut bulk, revision)) => {
            let Ok(bytes) = serde_json::to_vec(&bulk) else {
                return OfrepError::from(ApiError::internal()).into_response();
            };
            let tag = etag(revision, &subject, &bytes);
            let etag_value = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static(""));
            if not_modified(&headers, &tag) {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
            }
            // The evaluator's own metadata (an agent's staleness, new every millisecond) is
            // left out of the tag: it would make every poll a 200. Its headers say it anyway.
            let extra = evaluator.metadata();
            let bytes = if extra.is_empty() {
                bytes
            } else {
                for flag in &mut bulk.flags {
                    flag.metadata.extend(extra.clone());
                }
                match serde_json::to_vec(&bulk) {
                    Ok(bytes) => bytes,
                    Err(_) => return OfrepError::from(ApiError::internal()).into_response(),
                }
            };
            (
                [
                    (header::ETAG, etag_value),
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn evaluate_all<E: Evaluator>(
    evaluator: &E,
    caller: &E::Caller,
    body: &[u8],
) -> Result<(pb::Subject, BulkEvaluation, u64), OfrepError> {
    let context = decode(body)?;
    let subject = evaluator.subject(caller, context).await?;
    let features = evaluator.features(caller, MAX_BULK_FEATURES).await?;
    if features.len() > MAX_BULK_FEATURES {
        return Err(OfrepError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::General,
            format!(
                "the catalog holds more than {MAX_BULK_FEATURES} features: evaluate flags one \
                 by one"
            ),
        ));
    }
    let queries = features
        .iter()
        .map(|f| query(&subject, Target::FeatureKey(f.key.clone())))
        .collect();
    let (decisions, revision) = evaluator.check(caller, queries).await?;
    let mut flags = Vec::with_capacity(features.len() * 3);
    for (f, d) in features.iter().zip(&decisions) {
        let key = &f.key;
        flags.push(evaluation(
            feature_flag_key(key).into_owned(),
            FlagKey::Feature(key),
            Some(f),
            d,
            revision,
        ));
        flags.push(evaluation(
            format!("{ALLOCATION_PREFIX}{key}"),
            FlagKey::Allocation(key),
            Some(f),
            d,
            revision,
        ));
        if has_limit(f) {
            flags.push(evaluation(
                format!("{LIMIT_PREFIX}{key}"),
                FlagKey::Limit(key),
                Some(f),
                d,
                revision,
            ));
        }
    }
    Ok((subject, BulkEvaluation { flags }, revision))
}

/// What this server supports (OFREP's provider configuration): the flag types of the key
/// scheme, and polling of the bulk evaluation (its ETag makes an unchanged poll a 304). Public:
/// it tells nothing about any account.
#[utoipa::path(get, path = "/ofrep/v1/configuration", tag = "OpenFeature",
    responses((status = 200, body = Configuration)),
    )]
pub async fn configuration() -> Json<Configuration> {
    Json(Configuration {
        name: "tenantry",
        capabilities: serde_json::json!({
            "cacheInvalidation": {"polling": {"enabled": true, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["boolean", "int", "object"]},
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_by_prefix_and_a_prefixed_feature_is_reachable() {
        assert_eq!(FlagKey::parse("sso"), FlagKey::Feature("sso"));
        assert_eq!(FlagKey::parse("limit:seats"), FlagKey::Limit("seats"));
        assert_eq!(
            FlagKey::parse("allocation:seats"),
            FlagKey::Allocation("seats")
        );
        assert_eq!(
            FlagKey::parse("perm:fe.read"),
            FlagKey::Permission("fe.read")
        );
        assert_eq!(
            FlagKey::parse("feature:limit:x"),
            FlagKey::Feature("limit:x")
        );
        assert_eq!(feature_flag_key("limit:x"), "feature:limit:x");
        assert_eq!(feature_flag_key("sso"), "sso");
    }

    #[test]
    fn the_context_names_the_account_and_user_or_is_refused() {
        let ctx =
            decode(br#"{"context": {"targetingKey": "u1", "tenantId": "acme", "plan": "x"}}"#)
                .unwrap();
        let s = ctx.subject().unwrap();
        assert_eq!(
            (s.tenant_id.as_str(), s.user_id.as_deref()),
            ("acme", Some("u1"))
        );
        let attributes = s.attributes.unwrap().fields;
        assert!(attributes.contains_key("plan") && attributes.contains_key("tenantId"));
        assert!(!attributes.contains_key("targetingKey"));
        let s = decode(br#"{"context": {"targetingKey": "acme"}}"#)
            .unwrap()
            .subject()
            .unwrap();
        assert_eq!((s.tenant_id.as_str(), s.user_id), ("acme", None));
        let e = decode(b"{}").unwrap().subject().unwrap_err();
        assert_eq!(e.code, ErrorCode::TargetingKeyMissing);
        assert_eq!(decode(b"nope").unwrap_err().code, ErrorCode::ParseError);
        assert_eq!(
            decode(br#"{"context": {"tenantId": 5}}"#).unwrap_err().code,
            ErrorCode::InvalidContext
        );
        assert_eq!(
            decode(br#"{"context": {"permissions": "x"}}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidContext
        );
        let deep = format!("{{\"context\": {}1{}}}", "[".repeat(40), "]".repeat(40));
        assert_eq!(
            decode(deep.as_bytes()).unwrap_err().code,
            ErrorCode::ParseError
        );
    }

    #[test]
    fn reasons_follow_what_decided() {
        let granted = pb::EntitlementDecision {
            result: true,
            provenance: Some(pb::Provenance {
                level: GrantLevel::Account.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plain = CatalogFeature {
            key: "sso".into(),
            allocation_type: AllocationType::Bool,
            flag_on: None,
        };
        let flagged = CatalogFeature {
            flag_on: Some(true),
            ..plain.clone()
        };
        let switched_off = CatalogFeature {
            flag_on: Some(false),
            ..plain.clone()
        };
        assert_eq!(reason(&granted, Some(&plain)), Reason::Static);
        assert_eq!(reason(&granted, Some(&flagged)), Reason::TargetingMatch);
        let mut targeted = granted;
        targeted.provenance = Some(pb::Provenance {
            level: GrantLevel::Targeting.into(),
            ..Default::default()
        });
        assert_eq!(reason(&targeted, Some(&plain)), Reason::TargetingMatch);
        let flag_off = pb::EntitlementDecision {
            justification: Justification::FeatureFlagOff.into(),
            ..Default::default()
        };
        assert_eq!(reason(&flag_off, Some(&switched_off)), Reason::Disabled);
        assert_eq!(reason(&flag_off, Some(&flagged)), Reason::TargetingMatch);
        let missing = pb::EntitlementDecision {
            justification: Justification::MissingFeature.into(),
            ..Default::default()
        };
        assert_eq!(reason(&missing, Some(&plain)), Reason::Default);
    }

    #[test]
    fn a_metered_feature_answers_its_balance_its_per_period_amount_and_its_meter() {
        let calls = CatalogFeature {
            key: "calls".into(),
            allocation_type: AllocationType::Metered,
            flag_on: None,
        };
        let meter = |balance| pb::MeterReading {
            balance,
            usage: 70,
            overage: 0,
            period_start: Some(prost_types::Timestamp {
                seconds: 1_798_761_600,
                nanos: 0,
            }),
            period_end: Some(prost_types::Timestamp {
                seconds: 1_801_440_000,
                nanos: 0,
            }),
            held: 5,
            owner_tenant_id: None,
            user_id: None,
            as_of: None,
        };
        let issued = |value, unlimited| pb::Allocation {
            kind: Some(Kind::MaxCountAllocation(pb::MaxCountAllocation {
                value,
                unlimited,
            })),
        };
        let spent = pb::EntitlementDecision {
            result: false,
            justification: Justification::UsageLimitReached.into(),
            allocation: Some(issued(100, false)),
            meter: Some(meter(Some(0))),
            ..Default::default()
        };
        let flag =
            |kind, d: &pb::EntitlementDecision| evaluation("k".into(), kind, Some(&calls), d, 9);
        let limit = flag(FlagKey::Limit("calls"), &spent);
        assert_eq!(
            (limit.value.clone(), limit.variant.as_str()),
            (Json_::from(0), "0")
        );
        assert_eq!(limit.metadata["usage"], 70);
        assert_eq!(limit.metadata["held"], 5);
        assert_eq!(limit.metadata["balance"], 0);
        assert_eq!(limit.metadata["periodEnd"], "2027-02-01T00:00:00.000Z");
        // Spent is not unentitled: the plan still issues 100 a period.
        let allocation = flag(FlagKey::Allocation("calls"), &spent);
        assert_eq!(
            allocation.value,
            serde_json::json!({"type": "metered", "value": 100})
        );
        assert_eq!(flag(FlagKey::Feature("calls"), &spent).value, false);
        let left = pb::EntitlementDecision {
            result: true,
            meter: Some(meter(Some(25))),
            ..spent
        };
        assert_eq!(flag(FlagKey::Limit("calls"), &left).value, 25);
        let unlimited = pb::EntitlementDecision {
            allocation: Some(issued(0, true)),
            meter: Some(meter(None)),
            ..left
        };
        let limit = flag(FlagKey::Limit("calls"), &unlimited);
        assert_eq!(
            (limit.value, limit.variant.as_str()),
            (Json_::from(UNLIMITED), "unlimited")
        );
        assert_eq!(limit.metadata["unlimited"], true);
        assert!(!limit.metadata.contains_key("balance"));
        assert_eq!(
            flag(FlagKey::Allocation("calls"), &unlimited).value,
            serde_json::json!({"type": "metered", "value": null})
        );
        // Not entitled at all: no meter, nothing issued, nothing left.
        let none = pb::EntitlementDecision {
            justification: Justification::MissingFeature.into(),
            ..Default::default()
        };
        assert_eq!(flag(FlagKey::Limit("calls"), &none).value, 0);
        assert_eq!(
            flag(FlagKey::Allocation("calls"), &none).value,
            serde_json::json!({"type": "", "value": null})
        );
        assert!(has_limit(&calls));
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"1-a\", W/\"7-b\""),
        );
        assert!(not_modified(&h, "\"7-b\""));
        assert!(!not_modified(&h, "\"7-c\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&h, "\"7-c\""));
        assert!(!not_modified(&HeaderMap::new(), "\"7-c\""));
    }
}
