//! The entitlement stream's messages (`index_stream.proto`) to and from `tenantry-index`'s
//! types, so the service encodes and every follower (agent, SDK, tests) decodes the same way.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tenantry_index as ix;
use uuid::Uuid;

use crate::entitlement::v1 as pb;
use pb::index_change::Change;
use pb::watch_index_response::Event;

/// A stream message that does not decode to an index change or event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {field}: {message}")]
pub struct DecodeError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> DecodeError {
    DecodeError {
        field,
        message: message.into(),
    }
}

/// A time as a protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn time(field: &'static str, t: Option<Timestamp>) -> Result<Option<DateTime<Utc>>, DecodeError> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| bad(field, "timestamp out of range"))
    })
    .transpose()
}

fn uuid(field: &'static str, s: &str) -> Result<Uuid, DecodeError> {
    Uuid::parse_str(s).map_err(|e| bad(field, e.to_string()))
}

fn json(field: &'static str, s: &str) -> Result<serde_json::Value, DecodeError> {
    if s.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(s).map_err(|e| bad(field, e.to_string()))
}

fn json_text(v: &serde_json::Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        v.to_string()
    }
}

fn enum_value<E: TryFrom<i32>>(field: &'static str, v: i32) -> Result<E, DecodeError> {
    E::try_from(v).map_err(|_| bad(field, format!("unknown value {v}")))
}

// --- enums ---------------------------------------------------------------------------------

/// The index's allocation type on the wire.
pub fn allocation_type(t: ix::AllocationType) -> pb::AllocationType {
    match t {
        ix::AllocationType::Bool => pb::AllocationType::Bool,
        ix::AllocationType::MaxCount => pb::AllocationType::MaxCount,
        ix::AllocationType::Metered => pb::AllocationType::Metered,
    }
}

/// A metered feature's metering on the wire.
pub fn metering(m: &ix::Metering) -> pb::Metering {
    pb::Metering {
        unit: m.unit.clone(),
        aggregation: aggregation(m.aggregation).into(),
        recurrence: m.period.recurrence.to_string(),
        anchor: Some(timestamp(m.period.anchor)),
        soft_limit: m.soft_limit,
        carry_overage: m.carry_overage,
    }
}

/// A metering from the wire (UNSPECIFIED aggregation is SUM).
pub fn decode_metering(m: pb::Metering) -> Result<ix::Metering, DecodeError> {
    let recurrence = m
        .recurrence
        .parse()
        .map_err(|e: tenantry_index::metering::PeriodError| {
            bad("metering.recurrence", e.to_string())
        })?;
    let anchor =
        time("metering.anchor", m.anchor)?.ok_or_else(|| bad("metering.anchor", "missing"))?;
    Ok(ix::Metering {
        unit: m.unit,
        aggregation: match enum_value("metering.aggregation", m.aggregation)? {
            pb::Aggregation::Unspecified | pb::Aggregation::Sum => ix::Aggregation::Sum,
            pb::Aggregation::Count => ix::Aggregation::Count,
            pb::Aggregation::Max => ix::Aggregation::Max,
            pb::Aggregation::UniqueCount => ix::Aggregation::UniqueCount,
        },
        period: tenantry_index::metering::UsagePeriod::new(recurrence, anchor),
        soft_limit: m.soft_limit,
        carry_overage: m.carry_overage,
    })
}

/// The index's aggregation on the wire.
pub fn aggregation(a: ix::Aggregation) -> pb::Aggregation {
    match a {
        ix::Aggregation::Sum => pb::Aggregation::Sum,
        ix::Aggregation::Count => pb::Aggregation::Count,
        ix::Aggregation::Max => pb::Aggregation::Max,
        ix::Aggregation::UniqueCount => pb::Aggregation::UniqueCount,
    }
}

fn decode_allocation_type(v: i32) -> Result<ix::AllocationType, DecodeError> {
    match enum_value("allocation_type", v)? {
        pb::AllocationType::Bool => Ok(ix::AllocationType::Bool),
        pb::AllocationType::MaxCount => Ok(ix::AllocationType::MaxCount),
        pb::AllocationType::Metered => Ok(ix::AllocationType::Metered),
        pb::AllocationType::Unspecified => Err(bad("allocation_type", "unspecified")),
    }
}

fn merge_policy(p: ix::MergePolicy) -> pb::MergePolicy {
    match p {
        ix::MergePolicy::Max => pb::MergePolicy::Max,
        ix::MergePolicy::Sum => pb::MergePolicy::Sum,
    }
}

fn decode_merge_policy(v: i32) -> Result<ix::MergePolicy, DecodeError> {
    match enum_value("merge_policy", v)? {
        pb::MergePolicy::Max => Ok(ix::MergePolicy::Max),
        pb::MergePolicy::Sum => Ok(ix::MergePolicy::Sum),
        pb::MergePolicy::Unspecified => Err(bad("merge_policy", "unspecified")),
    }
}

fn treatment(t: ix::Treatment) -> i32 {
    match t {
        ix::Treatment::True => pb::Treatment::True,
        ix::Treatment::False => pb::Treatment::False,
    }
    .into()
}

fn decode_treatment(field: &'static str, v: i32) -> Result<ix::Treatment, DecodeError> {
    match enum_value(field, v)? {
        pb::Treatment::True => Ok(ix::Treatment::True),
        pb::Treatment::False => Ok(ix::Treatment::False),
        pb::Treatment::Unspecified => Err(bad(field, "unspecified")),
    }
}

fn attribute_type(t: ix::AttributeType) -> pb::AttributeType {
    match t {
        ix::AttributeType::Custom => pb::AttributeType::Custom,
        ix::AttributeType::Frontegg => pb::AttributeType::Frontegg,
    }
}

fn decode_attribute_type(v: i32) -> Result<ix::AttributeType, DecodeError> {
    match enum_value("attribute_type", v)? {
        pb::AttributeType::Custom => Ok(ix::AttributeType::Custom),
        pb::AttributeType::Frontegg => Ok(ix::AttributeType::Frontegg),
        pb::AttributeType::Unspecified => Err(bad("attribute_type", "unspecified")),
    }
}

fn condition_op(op: ix::ConditionOp) -> pb::ConditionOp {
    use ix::ConditionOp as C;
    match op {
        C::InList => pb::ConditionOp::InList,
        C::StartsWith => pb::ConditionOp::StartsWith,
        C::EndsWith => pb::ConditionOp::EndsWith,
        C::Contains => pb::ConditionOp::Contains,
        C::Matches => pb::ConditionOp::Matches,
        C::Equal => pb::ConditionOp::Equal,
        C::GreaterThan => pb::ConditionOp::GreaterThan,
        C::GreaterThanEqual => pb::ConditionOp::GreaterThanEqual,
        C::LowerThan => pb::ConditionOp::LowerThan,
        C::LowerThanEqual => pb::ConditionOp::LowerThanEqual,
        C::BetweenNumeric => pb::ConditionOp::BetweenNumeric,
        C::Is => pb::ConditionOp::Is,
        C::On => pb::ConditionOp::On,
        C::BetweenDate => pb::ConditionOp::BetweenDate,
        C::OnOrAfter => pb::ConditionOp::OnOrAfter,
        C::OnOrBefore => pb::ConditionOp::OnOrBefore,
    }
}

fn decode_condition_op(v: i32) -> Result<ix::ConditionOp, DecodeError> {
    use ix::ConditionOp as C;
    Ok(match enum_value("op", v)? {
        pb::ConditionOp::InList => C::InList,
        pb::ConditionOp::StartsWith => C::StartsWith,
        pb::ConditionOp::EndsWith => C::EndsWith,
        pb::ConditionOp::Contains => C::Contains,
        pb::ConditionOp::Matches => C::Matches,
        pb::ConditionOp::Equal => C::Equal,
        pb::ConditionOp::GreaterThan => C::GreaterThan,
        pb::ConditionOp::GreaterThanEqual => C::GreaterThanEqual,
        pb::ConditionOp::LowerThan => C::LowerThan,
        pb::ConditionOp::LowerThanEqual => C::LowerThanEqual,
        pb::ConditionOp::BetweenNumeric => C::BetweenNumeric,
        pb::ConditionOp::Is => C::Is,
        pb::ConditionOp::On => C::On,
        pb::ConditionOp::BetweenDate => C::BetweenDate,
        pb::ConditionOp::OnOrAfter => C::OnOrAfter,
        pb::ConditionOp::OnOrBefore => C::OnOrBefore,
        pb::ConditionOp::Unspecified => return Err(bad("op", "unspecified")),
    })
}

fn reset_reason(r: ix::ResetReason) -> pb::ResetReason {
    match r {
        ix::ResetReason::RevisionTooOld => pb::ResetReason::RevisionTooOld,
        ix::ResetReason::RevisionUnknown => pb::ResetReason::RevisionUnknown,
        ix::ResetReason::Lagging => pb::ResetReason::Lagging,
        ix::ResetReason::ScopeChanged => pb::ResetReason::ScopeChanged,
        ix::ResetReason::IndexReloaded => pb::ResetReason::IndexReloaded,
        ix::ResetReason::Other => pb::ResetReason::Unspecified,
    }
}

fn decode_reset_reason(v: i32) -> ix::ResetReason {
    // A reason from a newer service is still a reset.
    match pb::ResetReason::try_from(v) {
        Ok(pb::ResetReason::RevisionTooOld) => ix::ResetReason::RevisionTooOld,
        Ok(pb::ResetReason::RevisionUnknown) => ix::ResetReason::RevisionUnknown,
        Ok(pb::ResetReason::Lagging) => ix::ResetReason::Lagging,
        Ok(pb::ResetReason::ScopeChanged) => ix::ResetReason::ScopeChanged,
        Ok(pb::ResetReason::IndexReloaded) => ix::ResetReason::IndexReloaded,
        Ok(pb::ResetReason::Unspecified) | Err(_) => ix::ResetReason::Other,
    }
}

// --- values --------------------------------------------------------------------------------

fn allocation(a: ix::Allocation) -> pb::Allocation {
    let kind = match a {
        ix::Allocation::Bool(value) => {
            pb::allocation::Kind::BoolAllocation(pb::BoolAllocation { value })
        }
        ix::Allocation::MaxCount(ix::Limit::Finite(value)) => {
            pb::allocation::Kind::MaxCountAllocation(pb::MaxCountAllocation {
                value,
                unlimited: false,
            })
        }
        ix::Allocation::MaxCount(ix::Limit::Unlimited) => {
            pb::allocation::Kind::MaxCountAllocation(pb::MaxCountAllocation {
                value: 0,
                unlimited: true,
            })
        }
    };
    pb::Allocation { kind: Some(kind) }
}

fn decode_allocation(a: pb::Allocation) -> Result<ix::Allocation, DecodeError> {
    match a.kind {
        Some(pb::allocation::Kind::BoolAllocation(b)) => Ok(ix::Allocation::Bool(b.value)),
        Some(pb::allocation::Kind::MaxCountAllocation(m)) if m.unlimited => {
            Ok(ix::Allocation::MaxCount(ix::Limit::Unlimited))
        }
        Some(pb::allocation::Kind::MaxCountAllocation(m)) => {
            Ok(ix::Allocation::MaxCount(ix::Limit::Finite(m.value)))
        }
        None => Err(bad("allocation", "no kind")),
    }
}

fn rules(rules: &[ix::Rule]) -> Vec<pb::IndexRule> {
    rules
        .iter()
        .map(|r| pb::IndexRule {
            description: r.description.clone(),
            conditions: r
                .conditions
                .iter()
                .map(|c| pb::IndexCondition {
                    attribute: c.attribute.clone(),
                    attribute_type: attribute_type(c.attribute_type).into(),
                    negate: c.negate,
                    op: condition_op(c.op).into(),
                    value_json: c.value.to_string(),
                })
                .collect(),
            treatment: treatment(r.treatment),
        })
        .collect()
}

fn decode_rules(rules: Vec<pb::IndexRule>) -> Result<Vec<ix::Rule>, DecodeError> {
    rules
        .into_iter()
        .map(|r| {
            Ok(ix::Rule {
                description: r.description,
                conditions: r
                    .conditions
                    .into_iter()
                    .map(|c| {
                        Ok(ix::Condition {
                            attribute: c.attribute,
                            attribute_type: decode_attribute_type(c.attribute_type)?,
                            negate: c.negate,
                            op: decode_condition_op(c.op)?,
                            value: json("value_json", &c.value_json)?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?,
                treatment: decode_treatment("treatment", r.treatment)?,
            })
        })
        .collect()
}

// --- items ---------------------------------------------------------------------------------

fn feature(f: &ix::Feature) -> pb::IndexFeature {
    pb::IndexFeature {
        id: f.id.to_string(),
        key: f.key.clone(),
        name: f.name.clone(),
        description: f.description.clone(),
        metadata_json: json_text(&f.metadata),
        permissions: f.permissions.clone(),
        allocation_type: allocation_type(f.allocation_type).into(),
        merge_policy: merge_policy(f.merge_policy).into(),
        metering: f.metering.as_ref().map(metering),
    }
}

fn decode_feature(f: pb::IndexFeature) -> Result<ix::Feature, DecodeError> {
    Ok(ix::Feature {
        id: uuid("feature.id", &f.id)?,
        key: f.key,
        name: f.name,
        description: f.description,
        metadata: json("metadata_json", &f.metadata_json)?,
        permissions: f.permissions,
        allocation_type: decode_allocation_type(f.allocation_type)?,
        merge_policy: decode_merge_policy(f.merge_policy)?,
        metering: f.metering.map(decode_metering).transpose()?,
    })
}

fn plan(p: &ix::Plan) -> pb::IndexPlan {
    pb::IndexPlan {
        id: p.id.to_string(),
        key: p.key.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        metadata_json: json_text(&p.metadata),
        features: p
            .features
            .iter()
            .map(|f| pb::IndexPlanFeature {
                feature_key: f.feature_key.clone(),
                allocation: f.allocation.map(allocation),
            })
            .collect(),
        default_time_limitation_days: p.default_time_limitation_days,
        assign_on_signup: p.assign_on_signup,
        rules: rules(&p.rules),
        default_treatment: treatment(p.default_treatment),
        inherit_to_sub_accounts: p.inherit_to_sub_accounts,
    }
}

fn decode_plan(p: pb::IndexPlan) -> Result<ix::Plan, DecodeError> {
    Ok(ix::Plan {
        id: uuid("plan.id", &p.id)?,
        key: p.key,
        name: p.name,
        description: p.description,
        metadata: json("metadata_json", &p.metadata_json)?,
        features: p
            .features
            .into_iter()
            .map(|f| {
                Ok(ix::PlanFeature {
                    feature_key: f.feature_key,
                    allocation: f.allocation.map(decode_allocation).transpose()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        default_time_limitation_days: p.default_time_limitation_days,
        assign_on_signup: p.assign_on_signup,
        rules: decode_rules(p.rules)?,
        default_treatment: decode_treatment("default_treatment", p.default_treatment)?,
        inherit_to_sub_accounts: p.inherit_to_sub_accounts,
    })
}

fn flag(f: &ix::FeatureFlag) -> pb::IndexFeatureFlag {
    pb::IndexFeatureFlag {
        id: f.id.to_string(),
        feature_key: f.feature_key.clone(),
        name: f.name.clone(),
        description: f.description.clone(),
        on: f.on,
        off_treatment: treatment(f.off_treatment),
        default_treatment: treatment(f.default_treatment),
        rules: rules(&f.rules),
    }
}

fn decode_flag(f: pb::IndexFeatureFlag) -> Result<ix::FeatureFlag, DecodeError> {
    Ok(ix::FeatureFlag {
        id: uuid("flag.id", &f.id)?,
        feature_key: f.feature_key,
        name: f.name,
        description: f.description,
        on: f.on,
        off_treatment: decode_treatment("off_treatment", f.off_treatment)?,
        default_treatment: decode_treatment("default_treatment", f.default_treatment)?,
        rules: decode_rules(f.rules)?,
    })
}

fn route(r: &ix::Route) -> pb::IndexRoute {
    let (policy, features, permissions) = match &r.policy {
        ix::RoutePolicy::Allow => (pb::RoutePolicy::Allow, Vec::new(), Vec::new()),
        ix::RoutePolicy::Deny => (pb::RoutePolicy::Deny, Vec::new(), Vec::new()),
        ix::RoutePolicy::Require {
            features,
            permissions,
        } => (
            pb::RoutePolicy::Require,
            features.clone(),
            permissions.clone(),
        ),
    };
    pb::IndexRoute {
        id: r.id.to_string(),
        method: r.method.clone(),
        path: r.path.clone(),
        policy: policy.into(),
        required_feature_keys: features,
        required_permission_keys: permissions,
        description: r.description.clone(),
    }
}

fn decode_route(r: pb::IndexRoute) -> Result<ix::Route, DecodeError> {
    let policy = match enum_value("policy", r.policy)? {
        pb::RoutePolicy::Allow => ix::RoutePolicy::Allow,
        pb::RoutePolicy::Deny => ix::RoutePolicy::Deny,
        pb::RoutePolicy::Require => ix::RoutePolicy::Require {
            features: r.required_feature_keys,
            permissions: r.required_permission_keys,
        },
        pb::RoutePolicy::Unspecified => return Err(bad("policy", "unspecified")),
    };
    Ok(ix::Route {
        id: uuid("route.id", &r.id)?,
        method: r.method,
        path: r.path,
        policy,
        description: r.description,
    })
}

fn grant(g: &ix::Grant) -> pb::IndexGrant {
    pb::IndexGrant {
        id: g.id.to_string(),
        plan_id: g.plan_id.to_string(),
        account_id: g.tenant_id.clone(),
        user_id: g.user_id.clone(),
        starts_at: Some(timestamp(g.starts_at)),
        expires_at: g.expires_at.map(timestamp),
        revoked_at: g.revoked_at.map(timestamp),
    }
}

/// A grant as the index needs it; the fields the stream does not carry take neutral values.
fn decode_grant(g: pb::IndexGrant) -> Result<ix::Grant, DecodeError> {
    let starts_at =
        time("grant.starts_at", g.starts_at)?.ok_or_else(|| bad("grant.starts_at", "missing"))?;
    Ok(ix::Grant {
        id: uuid("grant.id", &g.id)?,
        plan_id: uuid("grant.plan_id", &g.plan_id)?,
        tenant_id: g.account_id,
        user_id: g.user_id,
        starts_at,
        expires_at: time("grant.expires_at", g.expires_at)?,
        revoked_at: time("grant.revoked_at", g.revoked_at)?,
        revoked_by: None,
        revoke_reason: None,
        source: ix::GrantSource::Api,
        external_id: None,
        granted_by: None,
        metadata: serde_json::Value::Null,
        created_at: starts_at,
        updated_at: starts_at,
    })
}

// --- changes and events --------------------------------------------------------------------

impl From<&ix::IndexChange> for pb::IndexChange {
    fn from(change: &ix::IndexChange) -> Self {
        use ix::IndexChange as C;
        let change = match change {
            C::UpsertFeature(f) => Change::UpsertFeature(feature(f)),
            C::DeleteFeature { id } => Change::DeleteFeature(id.to_string()),
            C::UpsertPlan(p) => Change::UpsertPlan(plan(p)),
            C::DeletePlan { id } => Change::DeletePlan(id.to_string()),
            C::UpsertFlag(f) => Change::UpsertFlag(flag(f)),
            C::DeleteFlag { id } => Change::DeleteFlag(id.to_string()),
            C::UpsertRoute(r) => Change::UpsertRoute(route(r)),
            C::DeleteRoute { id } => Change::DeleteRoute(id.to_string()),
            C::UpsertGrant(g) => Change::UpsertGrant(grant(g)),
            C::DeleteGrant { id } => Change::DeleteGrant(id.to_string()),
            C::UpsertTenant { id, parent } => Change::UpsertAccount(pb::IndexAccount {
                id: id.clone(),
                parent_id: parent.clone(),
            }),
            C::RemoveTenant { id } => Change::RemoveAccount(id.clone()),
            C::UpsertMeter {
                tenant_id,
                user_id,
                feature_id,
                state,
            } => Change::UpsertMeter(pb::IndexMeter {
                account_id: tenant_id.clone(),
                feature_id: feature_id.to_string(),
                state_json: serde_json::to_string(state).unwrap_or_default(),
                user_id: user_id.clone(),
            }),
        };
        pb::IndexChange {
            change: Some(change),
        }
    }
}

impl TryFrom<pb::IndexChange> for ix::IndexChange {
    type Error = DecodeError;

    fn try_from(change: pb::IndexChange) -> Result<Self, DecodeError> {
        use ix::IndexChange as C;
        Ok(
            match change.change.ok_or_else(|| bad("change", "missing"))? {
                Change::UpsertFeature(f) => C::UpsertFeature(decode_feature(f)?),
                Change::DeleteFeature(id) => C::DeleteFeature {
                    id: uuid("delete_feature", &id)?,
                },
                Change::UpsertPlan(p) => C::UpsertPlan(decode_plan(p)?),
                Change::DeletePlan(id) => C::DeletePlan {
                    id: uuid("delete_plan", &id)?,
                },
                Change::UpsertFlag(f) => C::UpsertFlag(decode_flag(f)?),
                Change::DeleteFlag(id) => C::DeleteFlag {
                    id: uuid("delete_flag", &id)?,
                },
                Change::UpsertRoute(r) => C::UpsertRoute(decode_route(r)?),
                Change::DeleteRoute(id) => C::DeleteRoute {
                    id: uuid("delete_route", &id)?,
                },
                Change::UpsertGrant(g) => C::UpsertGrant(decode_grant(g)?),
                Change::DeleteGrant(id) => C::DeleteGrant {
                    id: uuid("delete_grant", &id)?,
                },
                Change::UpsertAccount(a) => C::UpsertTenant {
                    id: a.id,
                    parent: a.parent_id,
                },
                Change::RemoveAccount(id) => C::RemoveTenant { id },
                Change::UpsertMeter(m) => C::UpsertMeter {
                    tenant_id: m.account_id,
                    user_id: m.user_id.filter(|u| !u.is_empty()),
                    feature_id: uuid("upsert_meter.feature_id", &m.feature_id)?,
                    state: serde_json::from_str(&m.state_json)
                        .map_err(|e| bad("upsert_meter.state_json", e.to_string()))?,
                },
            },
        )
    }
}

/// Encodes a list of changes.
pub fn encode_changes<'a>(
    changes: impl IntoIterator<Item = &'a ix::IndexChange>,
) -> Vec<pb::IndexChange> {
    changes.into_iter().map(pb::IndexChange::from).collect()
}

fn decode_changes(changes: Vec<pb::IndexChange>) -> Result<Vec<ix::IndexChange>, DecodeError> {
    changes.into_iter().map(ix::IndexChange::try_from).collect()
}

impl From<ix::StreamEvent> for pb::WatchIndexResponse {
    fn from(event: ix::StreamEvent) -> Self {
        let event = match event {
            ix::StreamEvent::SnapshotBegin {
                revision,
                written_until,
            } => Event::SnapshotBegin(pb::SnapshotBegin {
                revision,
                written_until: written_until.map(timestamp),
            }),
            ix::StreamEvent::SnapshotChunk(changes) => Event::SnapshotChunk(pb::SnapshotChunk {
                changes: encode_changes(&changes),
            }),
            ix::StreamEvent::SnapshotEnd { revision } => {
                Event::SnapshotEnd(pb::SnapshotEnd { revision })
            }
            ix::StreamEvent::Delta {
                revision,
                written_at,
                changes,
            } => Event::Delta(pb::IndexDelta {
                revision,
                written_at: written_at.map(timestamp),
                changes: encode_changes(&changes),
            }),
            ix::StreamEvent::Heartbeat { revision } => Event::Heartbeat(pb::Heartbeat { revision }),
            ix::StreamEvent::Reset { reason, message } => Event::Reset(pb::StreamReset {
                reason: reset_reason(reason).into(),
                message,
            }),
        };
        pb::WatchIndexResponse { event: Some(event) }
    }
}

impl TryFrom<pb::WatchIndexResponse> for ix::StreamEvent {
    type Error = DecodeError;

    fn try_from(response: pb::WatchIndexResponse) -> Result<Self, DecodeError> {
        Ok(
            match response.event.ok_or_else(|| bad("event", "missing"))? {
                Event::SnapshotBegin(b) => ix::StreamEvent::SnapshotBegin {
                    revision: b.revision,
                    written_until: time("written_until", b.written_until)?,
                },
                Event::SnapshotChunk(c) => {
                    ix::StreamEvent::SnapshotChunk(decode_changes(c.changes)?)
                }
                Event::SnapshotEnd(e) => ix::StreamEvent::SnapshotEnd {
                    revision: e.revision,
                },
                Event::Delta(d) => ix::StreamEvent::Delta {
                    revision: d.revision,
                    written_at: time("written_at", d.written_at)?,
                    changes: decode_changes(d.changes)?,
                },
                Event::Heartbeat(h) => ix::StreamEvent::Heartbeat {
                    revision: h.revision,
                },
                Event::Reset(r) => ix::StreamEvent::Reset {
                    reason: decode_reset_reason(r.reason),
                    message: r.message,
                },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every change of the synthetic world (all item kinds, rules of every operator) and a
    /// delete of each kind survive encode → bytes → decode unchanged, but grants, which keep
    /// exactly the fields the index reads.
    #[test]
    fn changes_round_trip_through_the_wire() {
        let (snapshot, _) = ix::synthetic::world(20, 7);
        let mut changes: Vec<ix::IndexChange> = Vec::new();
        changes.extend(
            snapshot
                .features
                .into_iter()
                .map(ix::IndexChange::UpsertFeature),
        );
        changes.extend(snapshot.plans.into_iter().map(ix::IndexChange::UpsertPlan));
        changes.extend(snapshot.flags.into_iter().map(ix::IndexChange::UpsertFlag));
        changes.extend(
            snapshot
                .routes
                .into_iter()
                .map(ix::IndexChange::UpsertRoute),
        );
        changes.extend(
            snapshot
                .tenants
                .into_iter()
                .map(|(id, parent)| ix::IndexChange::UpsertTenant { id, parent }),
        );
        let id = Uuid::now_v7();
        changes.extend([
            ix::IndexChange::DeleteFeature { id },
            ix::IndexChange::DeletePlan { id },
            ix::IndexChange::DeleteFlag { id },
            ix::IndexChange::DeleteRoute { id },
            ix::IndexChange::DeleteGrant { id },
            ix::IndexChange::RemoveTenant { id: "gone".into() },
        ]);
        for change in &changes {
            let bytes = pb::IndexChange::from(change).encode_to_vec();
            let decoded = pb::IndexChange::decode(bytes.as_slice()).unwrap();
            assert_eq!(&ix::IndexChange::try_from(decoded).unwrap(), change);
        }
        for g in snapshot.grants {
            let decoded = ix::IndexChange::try_from(pb::IndexChange::from(
                &ix::IndexChange::UpsertGrant(g.clone()),
            ))
            .unwrap();
            let ix::IndexChange::UpsertGrant(d) = decoded else {
                panic!("not a grant: {decoded:?}")
            };
            assert_eq!(
                (d.id, d.plan_id, &d.tenant_id, &d.user_id),
                (g.id, g.plan_id, &g.tenant_id, &g.user_id)
            );
            assert_eq!(
                (d.starts_at, d.expires_at, d.revoked_at),
                (g.starts_at, g.expires_at, g.revoked_at)
            );
        }
    }

    #[test]
    fn a_change_without_content_is_refused() {
        let err = ix::IndexChange::try_from(pb::IndexChange { change: None }).unwrap_err();
        assert_eq!(err.field, "change");
        let err = ix::IndexChange::try_from(pb::IndexChange {
            change: Some(Change::DeleteGrant("not-a-uuid".into())),
        })
        .unwrap_err();
        assert_eq!(err.field, "delete_grant");
    }
}
