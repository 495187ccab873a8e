//! What-if, tag "Checks" (environment token): the features an account (or one of its users)
//! would gain, lose or see changed under hypothetical grants and revocations, metered features
//! with their meter and the decision for a requested amount before and after — the entitlement
//! service's `WhatIf`, which writes nothing (so no audit record).

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use tenantry_proto::entitlement::v1::{
    self as pb, HypotheticalChange, NewGrant, WhatIfRequest, hypothetical_change::Change, new_grant,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::checks::{MeterJson, allow_reason_name, justification_name, meter_json};
use super::metering::whole;
use super::rules::{AllocationJson, allocation_json};
use crate::{
    auth::Management,
    convert::parse_time_field,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath},
    state::{AppState, grpc},
};

/// Most changes one question applies (the service's `MAX_WHAT_IF_CHANGES`).
const MAX_CHANGES: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(what_if))
}

/// A plan granted hypothetically: by `planId` or `planKey` (exactly one).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhatIfGrant {
    #[schema(format = Uuid)]
    pub plan_id: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub plan_key: Option<String>,
    /// To the body's `userId` (required then) instead of the account.
    #[serde(default)]
    pub to_user: bool,
    /// RFC 3339; default the question's instant (`at`, else now).
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// RFC 3339, after the start; default never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// One hypothetical change: exactly one of `grant`, `revokePlan` (every grant of the plan,
/// by ID or key, held by the account or the user) and `revokeGrantId` (one such grant).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhatIfChangeBody {
    pub grant: Option<WhatIfGrant>,
    #[schema(min_length = 1, max_length = 255)]
    pub revoke_plan: Option<String>,
    #[schema(format = Uuid)]
    pub revoke_grant_id: Option<String>,
}

/// Body of `POST …/accounts/{tenantId}/what-if`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhatIfBody {
    /// Ask for this user of the account: its own grants count and it draws on its own meter
    /// where they allocate a metered feature. Default: the account.
    #[schema(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
    /// 1 to 100 changes, applied in order (a plan revoked after being granted here loses that
    /// grant too).
    #[schema(min_items = 1, max_items = 100)]
    pub changes: Vec<WhatIfChangeBody>,
    /// The instant asked about (RFC 3339); default now. Before now, metered features' meters
    /// are the ones then (as a check's `at`).
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// The amount each metered feature's `decisionBefore` and `decisionAfter` ask for, as a
    /// consumption would: 1 to 10^15; default one unit.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    #[serde(default, deserialize_with = "whole")]
    pub requested_amount: Option<i64>,
    /// Answer from an index at least this fresh (the `x-tenantry-revision` of a write).
    pub min_revision: Option<u64>,
}

/// Whether a check of a metered feature for the requested amount would allow it, and why.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmountDecisionJson {
    pub result: bool,
    /// Why not: USAGE_LIMIT_REACHED, INSUFFICIENT_BALANCE, MISSING_FEATURE, PLAN_EXPIRED,
    /// PLAN_REVOKED, NOT_STARTED, FEATURE_FLAG_OFF, METER_HISTORY_UNKNOWN (at a past `at`
    /// whose meter then is not known).
    pub justification: Option<String>,
    /// Why: GRANT, CREDITS, SOFT_LIMIT_OVERAGE.
    pub allow_reason: Option<String>,
}

/// How one feature would change.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureChangeJson {
    pub feature_key: String,
    /// The allocation now (`{"type": ""}`: not entitled, or a metered feature held by credit
    /// grants alone, whose decision says CREDITS); a metered feature's is the amount issued
    /// each period, also with its balance spent.
    pub before: AllocationJson,
    /// The allocation under the changes.
    pub after: AllocationJson,
    /// A metered feature's meter now, as a check answers it (`ownerTenantId`: a pool's owner;
    /// `userId`: the user's own meter). Absent for other features and when nothing entitles
    /// it (or its meter at a past `at` is not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter_before: Option<MeterJson>,
    /// The meter it would draw on under the changes: the usage already counted on it kept,
    /// the allowance the hypothetical grants', credits and holds kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter_after: Option<MeterJson>,
    /// A metered feature: what a check for `requestedAmount` answers now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_before: Option<AmountDecisionJson>,
    /// A metered feature: what it would answer under the changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_after: Option<AmountDecisionJson>,
}

/// Answer of a what-if.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhatIfAnswer {
    /// Features not held now that would be.
    pub gained: Vec<FeatureChangeJson>,
    /// Features held now that would not be.
    pub lost: Vec<FeatureChangeJson>,
    /// Held before and after with a different allocation; metered ones also with a different
    /// meter (another owner: its own, a pool, the user's) or decision.
    pub changed: Vec<FeatureChangeJson>,
    /// The index revision used.
    pub revision: u64,
}

fn change(
    i: usize,
    c: WhatIfChangeBody,
    user_id: Option<&String>,
) -> Result<HypotheticalChange, ApiError> {
    let field = format!("changes[{i}]");
    let change = match (c.grant, c.revoke_plan, c.revoke_grant_id) {
        (Some(g), None, None) => {
            let plan = match (g.plan_id, g.plan_key) {
                (Some(id), None) => {
                    if Uuid::try_parse(&id).is_err() {
                        return Err(ApiError::invalid_field(
                            &format!("{field}.grant.planId"),
                            "must be a UUID",
                        ));
                    }
                    new_grant::Plan::PlanId(id)
                }
                (None, Some(key)) => new_grant::Plan::PlanKey(key),
                _ => {
                    return Err(ApiError::invalid_field(
                        &format!("{field}.grant"),
                        "give exactly one of planId and planKey",
                    ));
                }
            };
            if g.to_user && user_id.is_none() {
                return Err(ApiError::invalid_field(
                    &format!("{field}.grant.toUser"),
                    "needs the body's userId",
                ));
            }
            let time = |t: Option<String>, name: &str| {
                t.map(|t| parse_time_field(&t, &format!("{field}.grant.{name}")))
                    .transpose()
            };
            Change::Grant(NewGrant {
                plan: Some(plan),
                user_id: user_id.filter(|_| g.to_user).cloned(),
                starts_at: time(g.starts_at, "startsAt")?,
                expires_at: time(g.expires_at, "expiresAt")?,
                ..NewGrant::default()
            })
        }
        (None, Some(plan), None) => Change::RevokePlan(plan),
        (None, None, Some(id)) => Change::RevokeGrantId(id),
        _ => {
            return Err(ApiError::invalid_field(
                &field,
                "give exactly one of grant, revokePlan and revokeGrantId",
            ));
        }
    };
    Ok(HypotheticalChange {
        change: Some(change),
    })
}

fn decision_json(d: pb::AmountDecision) -> AmountDecisionJson {
    AmountDecisionJson {
        result: d.result,
        justification: justification_name(d.justification()).map(str::to_owned),
        allow_reason: allow_reason_name(d.allow_reason()).map(str::to_owned),
    }
}

fn change_json(c: pb::FeatureChange) -> FeatureChangeJson {
    FeatureChangeJson {
        feature_key: c.feature_key,
        before: allocation_json(c.before),
        after: allocation_json(c.after),
        meter_before: c.meter_before.map(meter_json),
        meter_after: c.meter_after.map(meter_json),
        decision_before: c.decision_before.map(decision_json),
        decision_after: c.decision_after.map(decision_json),
    }
}

/// What if these grants and revocations were made? The features the account (or its user)
/// would gain, lose or see changed, each metered one with the meter it would draw on before
/// and after and whether `requestedAmount` would be allowed. Writes nothing.
#[utoipa::path(post, path = "/entitlements/api/v1/accounts/{tenantId}/what-if", tag = "Checks",
    params(("tenantId" = String, Path)),
    request_body = WhatIfBody,
    responses((status = 200, body = WhatIfAnswer), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn what_if(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(b): ApiJson<WhatIfBody>,
) -> Result<Json<WhatIfAnswer>, ApiError> {
    if b.changes.is_empty() || b.changes.len() > MAX_CHANGES {
        return Err(ApiError::invalid_field(
            "changes",
            format!("give 1 to {MAX_CHANGES} changes"),
        ));
    }
    let changes = b
        .changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| change(i, c, b.user_id.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let at = b.at.map(|t| parse_time_field(&t, "at")).transpose()?;
    let out = state
        .checks()
        .what_if(grpc(
            &p,
            WhatIfRequest {
                tenant_id,
                user_id: b.user_id,
                changes,
                at,
                min_revision: b.min_revision.unwrap_or_default(),
                requested_amount: b.requested_amount,
            },
        ))
        .await?
        .into_inner();
    let list = |l: Vec<pb::FeatureChange>| l.into_iter().map(change_json).collect();
    Ok(Json(WhatIfAnswer {
        gained: list(out.gained),
        lost: list(out.lost),
        changed: list(out.changed),
        revision: out.revision,
    }))
}
