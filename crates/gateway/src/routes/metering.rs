//! Metered features, tag "Metering" (environment token): usage events (our JSON and
//! CloudEvents batches), check-and-consume, credit grants and meters — the entitlement
//! service's `MeteringService`.

use axum::{Json, extract::State, response::Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use tenantry_proto::entitlement::v1::{
    self as pb, BalancePointKind, ConsumeUsageRequest, CreateCreditGrantRequest,
    GetMeterBalanceRequest, GetMeterRequest, GetUsageHistoryRequest, ListCreditGrantsRequest,
    ListMeterPeriodsRequest, RecordUsageRequest, ResetMeterRequest, UsageOutcome,
    VoidCreditGrantRequest,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::checks::{MeterJson, allow_reason_name, justification_name, meter_json};
use super::features::aggregation_name;
use super::rules::{AllocationJson, allocation_json};
use super::with_revision;
use crate::{
    auth::Management,
    convert::{metadata_to_struct, opt_struct_to_json, opt_timestamp, parse_time_field},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiJsonArray, ApiPath, ApiQuery},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_usage))
        .routes(routes!(record_cloud_events))
        .routes(routes!(consume_usage))
        .routes(routes!(list_credit_grants, create_credit_grant))
        .routes(routes!(void_credit_grant))
        .routes(routes!(get_meter))
        .routes(routes!(usage_history))
        .routes(routes!(reset_meter))
        .routes(routes!(meter_periods))
        .routes(routes!(meter_balance))
}

/// One usage event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageEventBody {
    /// Idempotency key, unique per account (a CloudEvents `id` works).
    #[schema(min_length = 1, max_length = 255)]
    pub id: String,
    #[schema(min_length = 1, max_length = 255)]
    pub tenant_id: String,
    #[schema(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    pub feature_key: String,
    /// SUM and MAX: the amount; COUNT and UNIQUE_COUNT ignore it. 0 to 10^15; default 1.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(default, deserialize_with = "whole")]
    pub amount: Option<i64>,
    /// RFC 3339; default: when received. At most 5 minutes ahead.
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// The value UNIQUE_COUNT counts distinct occurrences of.
    #[schema(min_length = 1, max_length = 255)]
    pub unique: Option<String>,
}

/// Body of `POST /entitlements/api/v1/usage`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatchBody {
    /// 1 to 1,000 events.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<UsageEventBody>,
}

/// What became of each event.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRecorded {
    /// Per event, in order: RECORDED, DUPLICATE (its id was seen: nothing counted again) or
    /// LATE (counted in the closed period it belongs to; the open balance is unchanged).
    pub outcomes: Vec<String>,
    /// The revision including the events (0 when nothing changed a meter).
    pub revision: u64,
}

fn event(index: usize, e: UsageEventBody) -> Result<pb::UsageEvent, ApiError> {
    let timestamp = e
        .timestamp
        .map(|t| parse_time_field(&t, &format!("events[{index}].timestamp")))
        .transpose()?;
    Ok(pb::UsageEvent {
        id: e.id,
        tenant_id: e.tenant_id,
        user_id: e.user_id,
        feature_key: e.feature_key,
        amount: e.amount.unwrap_or(1),
        timestamp,
        unique: e.unique,
    })
}

async fn record(
    state: &AppState,
    p: &crate::auth::Principal,
    events: Vec<pb::UsageEvent>,
) -> Result<Response, ApiError> {
    let out = state
        .metering()
        .record_usage(grpc(p, RecordUsageRequest { events }))
        .await?
        .into_inner();
    let outcomes = out
        .outcomes()
        .map(|o| match o {
            UsageOutcome::Duplicate => "DUPLICATE",
            UsageOutcome::Late => "LATE",
            UsageOutcome::Recorded | UsageOutcome::Unspecified => "RECORDED",
        })
        .map(str::to_owned)
        .collect();
    Ok(with_revision(
        Json(UsageRecorded {
            outcomes,
            revision: out.revision,
        }),
        out.revision,
    ))
}

/// Record usage: 1 to 1,000 events, durable when answered, each idempotent on (account, id).
#[utoipa::path(post, path = "/entitlements/api/v1/usage", tag = "Metering",
    request_body = UsageBatchBody,
    responses((status = 200, body = UsageRecorded), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn record_usage(
    State(state): State<AppState>,
    Management(p): Management,
    ApiJson(b): ApiJson<UsageBatchBody>,
) -> Result<Response, ApiError> {
    let events = b
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| event(i, e))
        .collect::<Result<Vec<_>, _>>()?;
    record(&state, &p, events).await
}

/// A usage event as a CloudEvent 1.0 (JSON).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageCloudEvent {
    /// `1.0`.
    #[schema(pattern = "^1\\.0$")]
    pub specversion: String,
    /// The idempotency key.
    #[schema(min_length = 1, max_length = 255)]
    pub id: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub source: String,
    /// The metered feature's key, unless `data.featureKey` names it.
    #[serde(rename = "type")]
    #[schema(max_length = 255)]
    pub kind: String,
    /// The account.
    #[schema(min_length = 1, max_length = 255)]
    pub subject: String,
    /// RFC 3339; default: when received.
    #[schema(format = DateTime)]
    pub time: Option<String>,
    /// `data` is JSON.
    #[schema(max_length = 255, pattern = "^application/json")]
    pub datacontenttype: Option<String>,
    /// `{"featureKey"?, "amount"?, "userId"?, "unique"?}`.
    #[serde(default)]
    pub data: UsageCloudEventData,
}

/// A usage CloudEvent's `data`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageCloudEventData {
    #[schema(min_length = 1, max_length = 64)]
    pub feature_key: Option<String>,
    /// Default 1.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(default, deserialize_with = "whole")]
    pub amount: Option<i64>,
    #[schema(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub unique: Option<String>,
}

/// Record usage as a CloudEvents JSON batch (`application/cloudevents-batch+json` or JSON):
/// `subject` is the account, `data.featureKey` (else `type`) the feature, `id` the idempotency
/// key.
#[utoipa::path(post, path = "/entitlements/api/v1/usage/cloudevents", tag = "Metering",
    request_body(content = Vec<UsageCloudEvent>,
        content_type = "application/cloudevents-batch+json"),
    responses((status = 200, body = UsageRecorded), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn record_cloud_events(
    State(state): State<AppState>,
    Management(p): Management,
    ApiJsonArray(batch): ApiJsonArray<UsageCloudEvent>,
) -> Result<Response, ApiError> {
    let mut events = Vec::with_capacity(batch.len());
    for (i, e) in batch.into_iter().enumerate() {
        if e.specversion != "1.0" {
            return Err(ApiError::invalid_field(
                &format!("[{i}].specversion"),
                "must be 1.0",
            ));
        }
        // CloudEvents requires a source; `data` is read as JSON, so it must be JSON.
        if e.source.is_empty() {
            return Err(ApiError::invalid_field(
                &format!("[{i}].source"),
                "is required",
            ));
        }
        if e.datacontenttype
            .as_deref()
            .is_some_and(|t| !t.starts_with("application/json"))
        {
            return Err(ApiError::invalid_field(
                &format!("[{i}].datacontenttype"),
                "must be application/json",
            ));
        }
        let timestamp = e
            .time
            .map(|t| parse_time_field(&t, &format!("[{i}].time")))
            .transpose()?;
        events.push(pb::UsageEvent {
            id: e.id,
            tenant_id: e.subject,
            user_id: e.data.user_id,
            feature_key: e.data.feature_key.unwrap_or(e.kind),
            amount: e.data.amount.unwrap_or(1),
            timestamp,
            unique: e.data.unique,
        });
    }
    record(&state, &p, events).await
}

/// Body of `POST /entitlements/api/v1/usage/consume`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumeBody {
    /// Idempotency key, unique per account (shared with usage event ids).
    #[schema(min_length = 1, max_length = 255)]
    pub id: String,
    #[schema(min_length = 1, max_length = 255)]
    pub tenant_id: String,
    #[schema(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    pub feature_key: String,
    /// 1 to 10^15; default 1.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    #[serde(default, deserialize_with = "whole")]
    pub amount: Option<i64>,
}

/// A consumption's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consumed {
    pub consumed: bool,
    /// USAGE_LIMIT_REACHED, INSUFFICIENT_BALANCE, MISSING_FEATURE, ... when not consumed.
    pub justification: Option<String>,
    /// GRANT, CREDITS or SOFT_LIMIT_OVERAGE when consumed.
    pub allow_reason: Option<String>,
    pub meter: Option<MeterJson>,
    /// The stored answer of an earlier call with this id (nothing consumed again).
    pub replayed: bool,
    pub revision: u64,
}

/// Check and consume, atomically: consumed only if allowed; a retry with the same id returns
/// the first answer and consumes nothing more.
#[utoipa::path(post, path = "/entitlements/api/v1/usage/consume", tag = "Metering",
    request_body = ConsumeBody,
    responses((status = 200, body = Consumed), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn consume_usage(
    State(state): State<AppState>,
    Management(p): Management,
    ApiJson(b): ApiJson<ConsumeBody>,
) -> Result<Response, ApiError> {
    let out = state
        .metering()
        .consume_usage(grpc(
            &p,
            ConsumeUsageRequest {
                id: b.id,
                tenant_id: b.tenant_id,
                user_id: b.user_id,
                feature_key: b.feature_key,
                amount: b.amount.unwrap_or(1),
            },
        ))
        .await?
        .into_inner();
    let revision = out.revision;
    let consumed = Consumed {
        consumed: out.consumed,
        justification: justification_name(out.justification()).map(str::to_owned),
        allow_reason: allow_reason_name(out.allow_reason()).map(str::to_owned),
        meter: out.meter.map(meter_json),
        replayed: out.replayed,
        revision,
    };
    Ok(with_revision(Json(consumed), revision))
}

/// What carries at each reset: `min(max, max(remaining, min))`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloverJson {
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(deserialize_with = "whole_required")]
    pub min: i64,
    /// At least `min`.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(deserialize_with = "whole_required")]
    pub max: i64,
}

/// An integer, also when sent as a number with a zero fraction (`108.0`): JSON does not tell
/// them apart, and neither does the document's `integer`.
fn whole_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, found {n}")))
}

pub(super) fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Value>::deserialize(d)?
        .map(|v| whole_required(v).map_err(serde::de::Error::custom))
        .transpose()
}

/// A credit grant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditGrantJson {
    pub id: String,
    pub tenant_id: String,
    pub feature_key: String,
    pub amount: i64,
    /// Lower first; the plan allowance has 10.
    pub priority: u32,
    pub effective_at: Option<String>,
    pub expires_at: Option<String>,
    pub rollover: Option<RolloverJson>,
    pub metadata: Json_,
    pub voided_at: Option<String>,
    pub created_at: Option<String>,
    /// Set when it credits this user's own meter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl From<pb::CreditGrant> for CreditGrantJson {
    fn from(g: pb::CreditGrant) -> Self {
        Self {
            id: g.id,
            tenant_id: g.tenant_id,
            feature_key: g.feature_key,
            amount: g.amount,
            priority: g.priority,
            effective_at: opt_timestamp(g.effective_at),
            expires_at: opt_timestamp(g.expires_at),
            rollover: g.rollover.map(|r| RolloverJson {
                min: r.min,
                max: r.max,
            }),
            metadata: opt_struct_to_json(g.metadata),
            voided_at: opt_timestamp(g.voided_at),
            created_at: opt_timestamp(g.created_at),
            user_id: g.user_id,
        }
    }
}

fn credit_grant(g: Option<pb::CreditGrant>) -> Result<CreditGrantJson, ApiError> {
    g.map(CreditGrantJson::from).ok_or_else(ApiError::internal)
}

/// Body of `POST /entitlements/api/v1/credit-grants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCreditGrantBody {
    #[schema(min_length = 1, max_length = 255)]
    pub tenant_id: String,
    #[schema(min_length = 1, max_length = 64)]
    pub feature_key: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    #[serde(deserialize_with = "whole_required")]
    pub amount: i64,
    /// Default 10 (the plan allowance's: at equal priority the allowance goes first).
    #[schema(minimum = 0, maximum = 1000)]
    pub priority: Option<u32>,
    /// RFC 3339; default now.
    #[schema(format = DateTime)]
    pub effective_at: Option<String>,
    /// RFC 3339 (after `effectiveAt`); default never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Default: everything remaining carries (`{"min": 0, "max": amount}`).
    pub rollover: Option<RolloverJson>,
    /// A JSON object (up to 16 KiB).
    pub metadata: Option<Json_>,
    /// Credits this user's own meter. 409 `NO_USER_METER` when the user's own grants do not
    /// allocate the feature: the user draws on the account's meter (credit the account).
    #[schema(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
}

/// Query of the credit-grant list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct CreditGrantQuery {
    /// The account (required).
    pub tenant_id: String,
    /// Only this feature's.
    pub feature_key: Option<String>,
}

/// An account's credit grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditGrantList {
    /// Oldest first.
    pub items: Vec<CreditGrantJson>,
}

/// Grant credits (a top-up, promotion or compensation) on an account for a metered feature.
#[utoipa::path(post, path = "/entitlements/api/v1/credit-grants", tag = "Metering",
    request_body = CreateCreditGrantBody,
    responses((status = 201, body = CreditGrantJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_credit_grant(
    State(state): State<AppState>,
    Management(p): Management,
    ApiJson(b): ApiJson<CreateCreditGrantBody>,
) -> Result<Response, ApiError> {
    let request = CreateCreditGrantRequest {
        tenant_id: b.tenant_id,
        feature_key: b.feature_key,
        amount: b.amount,
        priority: b.priority,
        effective_at: b
            .effective_at
            .map(|t| parse_time_field(&t, "effectiveAt"))
            .transpose()?,
        expires_at: b
            .expires_at
            .map(|t| parse_time_field(&t, "expiresAt"))
            .transpose()?,
        rollover: b.rollover.map(|r| pb::Rollover {
            min: r.min,
            max: r.max,
        }),
        metadata: metadata_to_struct(b.metadata, "metadata")?,
        user_id: b.user_id,
    };
    let out = state
        .metering()
        .create_credit_grant(grpc(&p, request))
        .await?
        .into_inner();
    Ok(with_revision(
        (StatusCode::CREATED, Json(credit_grant(out.credit_grant)?)),
        out.revision,
    ))
}

/// An account's credit grants, oldest first.
#[utoipa::path(get, path = "/entitlements/api/v1/credit-grants", tag = "Metering",
    params(CreditGrantQuery),
    responses((status = 200, body = CreditGrantList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_credit_grants(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<CreditGrantQuery>,
) -> Result<Json<CreditGrantList>, ApiError> {
    let out = state
        .metering()
        .list_credit_grants(grpc(
            &p,
            ListCreditGrantsRequest {
                tenant_id: q.tenant_id,
                feature_key: q.feature_key,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(CreditGrantList {
        items: out
            .credit_grants
            .into_iter()
            .map(CreditGrantJson::from)
            .collect(),
    }))
}

/// Void a credit grant from now on (what was drawn from it stays drawn).
#[utoipa::path(post, path = "/entitlements/api/v1/credit-grants/{creditGrantId}/void",
    tag = "Metering", params(("creditGrantId" = String, Path)),
    responses((status = 200, body = CreditGrantJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn void_credit_grant(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let out = state
        .metering()
        .void_credit_grant(grpc(&p, VoidCreditGrantRequest { id }))
        .await?
        .into_inner();
    Ok(with_revision(
        Json(credit_grant(out.credit_grant)?),
        out.revision,
    ))
}

/// Query of a meter read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct MeterQuery {
    /// Answer from an index including at least this revision.
    pub min_revision: Option<u64>,
    /// A user's own meter (its own grants allocate the feature, or its meter was written);
    /// 404 `user meter` when the user has none. Without it: the meter the account draws on.
    #[param(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
}

/// Query of a manual reset.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterUserQuery {
    /// A user's own meter (its own grants allocate the feature, or its meter was written);
    /// 404 `user meter` when the user has none. Without it: the meter the account draws on.
    #[param(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
}

/// What remains of one credit this period.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditRemainingJson {
    /// The credit grant's ID; the nil UUID for the plan allowance.
    pub id: String,
    /// Null for an unlimited plan allowance.
    pub remaining: Option<i64>,
}

/// A meter now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterView {
    pub meter: Option<MeterJson>,
    /// The plan allowance issued each period (`max_count`).
    pub allowance: AllocationJson,
    /// Usable credits in burn-down order.
    pub credits: Vec<CreditRemainingJson>,
    pub revision: u64,
}

/// An account's meter of a metered feature: balance, usage, overage, period and what remains
/// of each credit.
#[utoipa::path(get, path = "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}",
    tag = "Metering",
    params(("tenantId" = String, Path), ("featureKey" = String, Path), MeterQuery),
    responses((status = 200, body = MeterView), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_meter(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((tenant_id, feature_key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MeterQuery>,
) -> Result<Json<MeterView>, ApiError> {
    let out = state
        .metering()
        .get_meter(grpc(
            &p,
            GetMeterRequest {
                tenant_id,
                feature_key,
                min_revision: q.min_revision.unwrap_or(0),
                user_id: q.user_id,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(MeterView {
        meter: out.meter.map(meter_json),
        allowance: allocation_json(out.allowance),
        credits: out
            .credits
            .into_iter()
            .map(|c| CreditRemainingJson {
                id: c.id,
                remaining: c.remaining,
            })
            .collect(),
        revision: out.revision,
    }))
}

/// A usage history's window size, named as the query's `window`.
fn window_size(name: &str) -> Result<pb::UsageWindowSize, ApiError> {
    Ok(match name {
        "HOUR" => pb::UsageWindowSize::Hour,
        "DAY" => pb::UsageWindowSize::Day,
        "WEEK" => pb::UsageWindowSize::Week,
        "MONTH" => pb::UsageWindowSize::Month,
        "PERIOD" => pb::UsageWindowSize::Period,
        _ => {
            return Err(ApiError::invalid_field(
                "window",
                "must be HOUR, DAY, WEEK, MONTH or PERIOD",
            ));
        }
    })
}

/// Query of a usage history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageHistoryQuery {
    /// Start of the range, inclusive (RFC 3339).
    #[param(format = DateTime)]
    pub from: String,
    /// End of the range, exclusive (RFC 3339): after `from`.
    #[param(format = DateTime)]
    pub to: String,
    /// `HOUR`, `DAY` (from midnight), `WEEK` (from Monday), `MONTH` (from the 1st), all in UTC,
    /// or `PERIOD` (the feature's usage periods for the account; a manual reset starts one).
    /// The range may hold at most 1,000 windows.
    #[param(pattern = "^(HOUR|DAY|WEEK|MONTH|PERIOD)$")]
    pub window: String,
    /// Only this user's usage.
    #[param(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
}

/// One window's usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageWindowJson {
    pub start: Option<String>,
    pub end: Option<String>,
    /// SUM and COUNT: what the window's events counted; MAX: the largest amount reported in
    /// it; UNIQUE_COUNT: the distinct values reported in it. 0 without events.
    pub usage: i64,
}

/// A metered feature's usage per window.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageHistoryJson {
    /// `SUM`, `COUNT`, `MAX` or `UNIQUE_COUNT`: how each window's usage is aggregated.
    pub aggregation: String,
    /// Every window of the range in order, empty ones included; the first and last are cut to
    /// the range.
    pub windows: Vec<UsageWindowJson>,
}

/// An account's usage of a metered feature per window over `[from, to)`, aggregated from the
/// recorded events: a late event counts in the window it happened in, a refused consumption
/// not at all.
#[utoipa::path(get,
    path = "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/usage",
    tag = "Metering",
    params(("tenantId" = String, Path), ("featureKey" = String, Path), UsageHistoryQuery),
    responses((status = 200, body = UsageHistoryJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn usage_history(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((tenant_id, feature_key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<UsageHistoryQuery>,
) -> Result<Json<UsageHistoryJson>, ApiError> {
    let request = GetUsageHistoryRequest {
        tenant_id,
        feature_key,
        from: Some(parse_time_field(&q.from, "from")?),
        to: Some(parse_time_field(&q.to, "to")?),
        window: window_size(&q.window)?.into(),
        user_id: q.user_id,
    };
    let out = state
        .metering()
        .get_usage_history(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(UsageHistoryJson {
        aggregation: aggregation_name(out.aggregation()).to_owned(),
        windows: out
            .windows
            .into_iter()
            .map(|w| UsageWindowJson {
                start: opt_timestamp(w.start),
                end: opt_timestamp(w.end),
                usage: w.usage,
            })
            .collect(),
    }))
}

/// A credit at a period's close.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditCloseJson {
    /// The credit grant's ID.
    pub id: String,
    pub remaining: i64,
    /// Rolled over into the next period (0: it ended there).
    pub carried: i64,
}

/// A closed usage period, as recorded when it closed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterPeriodJson {
    pub start: Option<String>,
    pub end: Option<String>,
    /// Closed by a manual reset (else by the schedule).
    pub manual: bool,
    pub usage: i64,
    /// Usage no credit covered, including overage carried in.
    pub overage: i64,
    /// The plan allowance issued for the period as of its close; null when unlimited.
    pub allowance: Option<i64>,
    pub allowance_used: i64,
    /// Each credit usable until the close.
    pub credits: Vec<CreditCloseJson>,
    /// Overage carried into the next period.
    pub carried_overage: i64,
}

pub(crate) fn meter_period_json(p: pb::MeterPeriod) -> MeterPeriodJson {
    MeterPeriodJson {
        start: opt_timestamp(p.start),
        end: opt_timestamp(p.end),
        manual: p.manual,
        usage: p.usage,
        overage: p.overage,
        allowance: p.allowance,
        allowance_used: p.allowance_used,
        credits: p
            .credits
            .into_iter()
            .map(|c| CreditCloseJson {
                id: c.id,
                remaining: c.remaining,
                carried: c.carried,
            })
            .collect(),
        carried_overage: p.carried_overage,
    }
}

/// What a manual reset did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterResetJson {
    /// The period the reset closed.
    pub closed_period: Option<MeterPeriodJson>,
    /// The meter after the reset.
    pub meter: Option<MeterJson>,
    pub revision: u64,
}

/// Start a new period of an account's meter now (a manual reset): the open period closes as at
/// a scheduled reset — each credit rolls over, the plan allowance is issued afresh, overage
/// carries when the feature says so — and the new period ends at the next scheduled reset (the
/// anchor is kept). Usage reported afterwards for a time before the reset is late. Not
/// idempotent: each call resets. Audited (`meter.reset`).
#[utoipa::path(post,
    path = "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/reset",
    tag = "Metering",
    params(("tenantId" = String, Path), ("featureKey" = String, Path), MeterUserQuery),
    responses((status = 200, body = MeterResetJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn reset_meter(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((tenant_id, feature_key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MeterUserQuery>,
) -> Result<Response, ApiError> {
    let out = state
        .metering()
        .reset_meter(grpc(
            &p,
            ResetMeterRequest {
                tenant_id,
                feature_key,
                user_id: q.user_id,
            },
        ))
        .await?
        .into_inner();
    let revision = out.revision;
    Ok(with_revision(
        Json(MeterResetJson {
            closed_period: out.closed_period.map(meter_period_json),
            meter: out.meter.map(meter_json),
            revision,
        }),
        revision,
    ))
}

/// Query of a meter's closed periods.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterPeriodsQuery {
    /// Start of the range, inclusive (RFC 3339).
    #[param(format = DateTime)]
    pub from: String,
    /// End of the range, exclusive (RFC 3339): after `from`. At most 1,000 periods.
    #[param(format = DateTime)]
    pub to: String,
    /// A user's own meter (its own grants allocate the feature, or its meter was written);
    /// 404 `user meter` when the user has none. Without it: the meter the account draws on.
    #[param(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
}

/// An account's meter's closed periods.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeterPeriodList {
    /// Oldest first.
    pub items: Vec<MeterPeriodJson>,
}

/// The closed periods of an account's meter overlapping `[from, to)`, oldest first, each with
/// its summary as recorded when it closed — usage, overage, the plan allowance issued and
/// drawn, what remained of each credit and what rolled over, the overage carried; a period the
/// clock has closed since the meter's last write is computed as that write will record it.
#[utoipa::path(get,
    path = "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/periods",
    tag = "Metering",
    params(("tenantId" = String, Path), ("featureKey" = String, Path), MeterPeriodsQuery),
    responses((status = 200, body = MeterPeriodList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn meter_periods(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((tenant_id, feature_key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MeterPeriodsQuery>,
) -> Result<Json<MeterPeriodList>, ApiError> {
    let request = ListMeterPeriodsRequest {
        tenant_id,
        feature_key,
        from: Some(parse_time_field(&q.from, "from")?),
        to: Some(parse_time_field(&q.to, "to")?),
        user_id: q.user_id,
    };
    let out = state
        .metering()
        .list_meter_periods(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(MeterPeriodList {
        items: out.periods.into_iter().map(meter_period_json).collect(),
    }))
}

/// Query of a meter's balance burn-down.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterBalanceQuery {
    /// Start of the range, inclusive (RFC 3339).
    #[param(format = DateTime)]
    pub from: String,
    /// End of the range, exclusive (RFC 3339): after `from`; points after now are not
    /// answered. At most 1,000 points.
    #[param(format = DateTime)]
    pub to: String,
    /// A user's own meter (its own grants allocate the feature, or its meter was written);
    /// 404 `user meter` when the user has none. Without it: the meter the account draws on.
    #[param(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
}

/// One point where a meter's balance changed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalancePointJson {
    pub at: Option<String>,
    /// USAGE, CONSUMPTION, RESERVATION_COMMIT, CREDIT_EFFECTIVE, CREDIT_VOIDED,
    /// CREDIT_EXPIRED, RESET or MANUAL_RESET.
    pub kind: String,
    /// The usage event, consumption, reservation or credit grant; null for resets.
    pub id: Option<String>,
    /// The meter after the point (holds left out: a hold is not a draw); null when unknown —
    /// the draw was stored before draws kept their meter, and so are the points after it
    /// until the next kept draw.
    pub meter: Option<MeterJson>,
}

/// An account's meter's balance burn-down.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeterBalanceList {
    /// Oldest first.
    pub items: Vec<BalancePointJson>,
}

fn balance_point_kind(k: BalancePointKind) -> &'static str {
    match k {
        BalancePointKind::Unspecified => "",
        BalancePointKind::Usage => "USAGE",
        BalancePointKind::Consumption => "CONSUMPTION",
        BalancePointKind::ReservationCommit => "RESERVATION_COMMIT",
        BalancePointKind::CreditEffective => "CREDIT_EFFECTIVE",
        BalancePointKind::CreditVoided => "CREDIT_VOIDED",
        BalancePointKind::CreditExpired => "CREDIT_EXPIRED",
        BalancePointKind::Reset => "RESET",
        BalancePointKind::ManualReset => "MANUAL_RESET",
    }
}

/// The balance burn-down of an account's meter over `[from, to)`: every point where its
/// balance changed — each draw (usage event, consumption, reservation commit), each credit grant
/// taking effect, voided or expiring, each reset (scheduled or manual, with rollover) — with the
/// balance, usage and overage after it, oldest first. At most 1,000 points: a range holding
/// more is a 400 naming `to`.
#[utoipa::path(get,
    path = "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/balance",
    tag = "Metering",
    params(("tenantId" = String, Path), ("featureKey" = String, Path), MeterBalanceQuery),
    responses((status = 200, body = MeterBalanceList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn meter_balance(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((tenant_id, feature_key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MeterBalanceQuery>,
) -> Result<Json<MeterBalanceList>, ApiError> {
    let request = GetMeterBalanceRequest {
        tenant_id,
        feature_key,
        from: Some(parse_time_field(&q.from, "from")?),
        to: Some(parse_time_field(&q.to, "to")?),
        user_id: q.user_id,
    };
    let out = state
        .metering()
        .get_meter_balance(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(MeterBalanceList {
        items: out
            .points
            .into_iter()
            .map(|point| BalancePointJson {
                at: opt_timestamp(point.at),
                kind: balance_point_kind(point.kind()).to_owned(),
                id: Some(point.id).filter(|id| !id.is_empty()),
                meter: point.meter.map(meter_json),
            })
            .collect(),
    }))
}
