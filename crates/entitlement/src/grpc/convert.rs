//! Protobuf ⇄ domain conversions shared by the handlers.

use chrono::{DateTime, Utc};
use prost_types::{ListValue, Struct, Timestamp, value::Kind};
use serde_json::{Map, Value};
use tenantry_proto::entitlement::v1 as pb;
use uuid::Uuid;

use crate::app::features::FeatureView;
use crate::app::flags::FlagView;
use crate::app::plans::PlanView;
use crate::domain::catalog::{FeatureDoc, FlagDoc, Stored};
use crate::domain::{
    Allocation, AllocationType, AttributeType, Condition, ConditionOp, DomainError, Grant,
    GrantStatus, Limit, MergePolicy, Route, RoutePolicy, Rule, Treatment,
};

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

pub fn uuid(field: &str, value: &str) -> Result<Uuid> {
    Uuid::try_parse(value).map_err(|_| DomainError::invalid(field, "must be a UUID"))
}

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn time(field: &str, t: &Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| DomainError::invalid(field, "timestamp out of range"))
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn to_json(value: prost_types::Value) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            // Integral numbers stay integers so `{"number": 5}` round-trips as 5, not 5.0.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

pub fn struct_to_json(s: Struct) -> Value {
    Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

pub fn opt_struct(s: Option<Struct>) -> Value {
    s.map_or(Value::Null, struct_to_json)
}

pub fn attributes(s: Option<Struct>) -> Option<Map<String, Value>> {
    match s.map(struct_to_json) {
        Some(Value::Object(m)) => Some(m),
        Some(_) | None => None,
    }
}

pub fn from_json(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(from_json).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct_map(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn json_to_struct_map(o: &Map<String, Value>) -> Struct {
    Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
    }
}

/// Metadata is always returned as an object (possibly empty).
pub fn json_to_struct(value: &Value) -> Option<Struct> {
    match value {
        Value::Object(o) => Some(json_to_struct_map(o)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            Some(Struct::default())
        }
    }
}

/// An empty object clears metadata (stored as null).
pub fn metadata(s: Option<Struct>) -> Value {
    match opt_struct(s) {
        Value::Object(o) if o.is_empty() => Value::Null,
        other @ (Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::String(_)
        | Value::Array(_)
        | Value::Object(_)) => other,
    }
}

pub fn allocation(a: Option<Allocation>) -> pb::Allocation {
    use pb::allocation::Kind as K;
    pb::Allocation {
        kind: a.map(|a| match a {
            Allocation::Bool(value) => K::BoolAllocation(pb::BoolAllocation { value }),
            Allocation::MaxCount(Limit::Finite(value)) => {
                K::MaxCountAllocation(pb::MaxCountAllocation {
                    value,
                    unlimited: false,
                })
            }
            Allocation::MaxCount(Limit::Unlimited) => {
                K::MaxCountAllocation(pb::MaxCountAllocation {
                    value: 0,
                    unlimited: true,
                })
            }
        }),
    }
}

pub fn allocation_in(a: Option<pb::Allocation>) -> Option<Allocation> {
    use pb::allocation::Kind as K;
    a.and_then(|a| a.kind).map(|k| match k {
        K::BoolAllocation(b) => Allocation::Bool(b.value),
        K::MaxCountAllocation(m) if m.unlimited => Allocation::MaxCount(Limit::Unlimited),
        K::MaxCountAllocation(m) => Allocation::MaxCount(Limit::Finite(m.value)),
    })
}

pub fn allocation_type(t: AllocationType) -> pb::AllocationType {
    match t {
        AllocationType::Bool => pb::AllocationType::Bool,
        AllocationType::MaxCount => pb::AllocationType::MaxCount,
        AllocationType::Metered => pb::AllocationType::Metered,
    }
}

pub fn allocation_type_in(t: pb::AllocationType) -> AllocationType {
    match t {
        pb::AllocationType::MaxCount => AllocationType::MaxCount,
        pb::AllocationType::Metered => AllocationType::Metered,
        pb::AllocationType::Bool | pb::AllocationType::Unspecified => AllocationType::Bool,
    }
}

pub fn merge_policy_in(m: pb::MergePolicy) -> MergePolicy {
    match m {
        pb::MergePolicy::Sum => MergePolicy::Sum,
        pb::MergePolicy::Max | pb::MergePolicy::Unspecified => MergePolicy::Max,
    }
}

pub fn treatment(t: Treatment) -> pb::Treatment {
    match t {
        Treatment::True => pb::Treatment::True,
        Treatment::False => pb::Treatment::False,
    }
}

/// `UNSPECIFIED` takes `default`; where a treatment is required, the caller refuses it first.
pub fn treatment_in(t: pb::Treatment, default: Treatment) -> Treatment {
    match t {
        pb::Treatment::True => Treatment::True,
        pb::Treatment::False => Treatment::False,
        pb::Treatment::Unspecified => default,
    }
}

pub fn required_treatment(field: &str, t: i32) -> Result<Treatment> {
    match pb::Treatment::try_from(t) {
        Ok(pb::Treatment::True) => Ok(Treatment::True),
        Ok(pb::Treatment::False) => Ok(Treatment::False),
        Ok(pb::Treatment::Unspecified) | Err(_) => {
            Err(DomainError::invalid(field, "must be TRUE or FALSE"))
        }
    }
}

fn op_in(op: pb::ConditionOp) -> Option<ConditionOp> {
    use pb::ConditionOp as P;
    Some(match op {
        P::Unspecified => return None,
        P::InList => ConditionOp::InList,
        P::StartsWith => ConditionOp::StartsWith,
        P::EndsWith => ConditionOp::EndsWith,
        P::Contains => ConditionOp::Contains,
        P::Matches => ConditionOp::Matches,
        P::Equal => ConditionOp::Equal,
        P::GreaterThan => ConditionOp::GreaterThan,
        P::GreaterThanEqual => ConditionOp::GreaterThanEqual,
        P::LowerThan => ConditionOp::LowerThan,
        P::LowerThanEqual => ConditionOp::LowerThanEqual,
        P::BetweenNumeric => ConditionOp::BetweenNumeric,
        P::Is => ConditionOp::Is,
        P::On => ConditionOp::On,
        P::BetweenDate => ConditionOp::BetweenDate,
        P::OnOrAfter => ConditionOp::OnOrAfter,
        P::OnOrBefore => ConditionOp::OnOrBefore,
    })
}

fn op_out(op: ConditionOp) -> pb::ConditionOp {
    use pb::ConditionOp as P;
    match op {
        ConditionOp::InList => P::InList,
        ConditionOp::StartsWith => P::StartsWith,
        ConditionOp::EndsWith => P::EndsWith,
        ConditionOp::Contains => P::Contains,
        ConditionOp::Matches => P::Matches,
        ConditionOp::Equal => P::Equal,
        ConditionOp::GreaterThan => P::GreaterThan,
        ConditionOp::GreaterThanEqual => P::GreaterThanEqual,
        ConditionOp::LowerThan => P::LowerThan,
        ConditionOp::LowerThanEqual => P::LowerThanEqual,
        ConditionOp::BetweenNumeric => P::BetweenNumeric,
        ConditionOp::Is => P::Is,
        ConditionOp::On => P::On,
        ConditionOp::BetweenDate => P::BetweenDate,
        ConditionOp::OnOrAfter => P::OnOrAfter,
        ConditionOp::OnOrBefore => P::OnOrBefore,
    }
}

pub fn rules_in(field: &str, rules: Vec<pb::TargetingRule>) -> Result<Vec<Rule>> {
    rules
        .into_iter()
        .enumerate()
        .map(|(r, rule)| {
            let treatment = required_treatment(&format!("{field}[{r}].treatment"), rule.treatment)?;
            let conditions = rule
                .conditions
                .into_iter()
                .enumerate()
                .map(|(c, cond)| {
                    let op = pb::ConditionOp::try_from(cond.op)
                        .ok()
                        .and_then(op_in)
                        .ok_or_else(|| {
                            DomainError::invalid(
                                format!("{field}[{r}].conditions[{c}].op"),
                                "unknown operator",
                            )
                        })?;
                    Ok(Condition {
                        attribute: cond.attribute,
                        attribute_type: match pb::AttributeType::try_from(cond.attribute_type) {
                            Ok(pb::AttributeType::Frontegg) => AttributeType::Frontegg,
                            Ok(pb::AttributeType::Custom | pb::AttributeType::Unspecified)
                            | Err(_) => AttributeType::Custom,
                        },
                        negate: cond.negate,
                        op,
                        value: opt_struct(cond.value),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Rule {
                description: Some(rule.description).filter(|d| !d.is_empty()),
                conditions,
                treatment,
            })
        })
        .collect()
}

pub fn rules_out(rules: &[Rule]) -> Vec<pb::TargetingRule> {
    rules
        .iter()
        .map(|r| pb::TargetingRule {
            description: r.description.clone().unwrap_or_default(),
            condition_logic: pb::ConditionLogic::And as i32,
            conditions: r
                .conditions
                .iter()
                .map(|c| pb::Condition {
                    attribute: c.attribute.clone(),
                    attribute_type: match c.attribute_type {
                        AttributeType::Custom => pb::AttributeType::Custom,
                        AttributeType::Frontegg => pb::AttributeType::Frontegg,
                    } as i32,
                    negate: c.negate,
                    op: op_out(c.op) as i32,
                    value: json_to_struct(&c.value),
                })
                .collect(),
            treatment: treatment(r.treatment) as i32,
        })
        .collect()
}

pub fn feature(stored: &Stored<FeatureDoc>, flag: Option<&Stored<FlagDoc>>) -> pb::Feature {
    let f = &stored.value.feature;
    pb::Feature {
        id: f.id.to_string(),
        key: f.key.clone(),
        name: f.name.clone(),
        description: f.description.clone().unwrap_or_default(),
        metadata: json_to_struct(&f.metadata),
        permissions: f
            .permissions
            .iter()
            .map(|p| pb::FeaturePermission {
                permission_key: p.clone(),
                permission_id: stored.value.permission_ids.get(p).cloned(),
            })
            .collect(),
        allocation_type: allocation_type(f.allocation_type) as i32,
        merge_policy: match (f.allocation_type, f.merge_policy) {
            (AllocationType::Bool, _) => pb::MergePolicy::Unspecified,
            (_, MergePolicy::Max) => pb::MergePolicy::Max,
            (_, MergePolicy::Sum) => pb::MergePolicy::Sum,
        } as i32,
        metering: f
            .metering
            .as_ref()
            .map(tenantry_proto::index_stream::metering),
        feature_flag: flag.map(|fl| feature_flag(fl, f)),
        created_at: Some(timestamp(stored.created_at)),
        updated_at: Some(timestamp(stored.updated_at)),
    }
}

pub fn feature_flag(stored: &Stored<FlagDoc>, feature: &crate::domain::Feature) -> pb::FeatureFlag {
    let f = &stored.value.flag;
    pb::FeatureFlag {
        id: f.id.to_string(),
        name: f.name.clone(),
        on: f.on,
        off_treatment: treatment(f.off_treatment) as i32,
        default_treatment: treatment(f.default_treatment) as i32,
        description: f.description.clone().unwrap_or_default(),
        metadata: json_to_struct(&stored.value.metadata),
        rules: rules_out(&f.rules),
        feature_id: stored.value.feature_id.to_string(),
        feature_key: feature.key.clone(),
        feature_name: feature.name.clone(),
        created_at: Some(timestamp(stored.created_at)),
        updated_at: Some(timestamp(stored.updated_at)),
    }
}

pub fn feature_view(v: &FeatureView) -> pb::Feature {
    feature(&v.feature, v.flag.as_ref())
}

pub fn flag_view(v: &FlagView) -> pb::FeatureFlag {
    feature_flag(&v.flag, &v.feature)
}

pub fn plan(view: &PlanView) -> pb::Plan {
    let stored = &view.plan;
    let p = &stored.value;
    let mut features: Vec<pb::PlanFeature> = p
        .features
        .iter()
        .filter_map(|pf| {
            let f = view.feature(&pf.feature_key)?;
            Some(pb::PlanFeature {
                feature_id: f.id.to_string(),
                feature_key: f.key.clone(),
                feature_name: f.name.clone(),
                permission_keys: f.permissions.clone(),
                allocation: Some(allocation(Some(
                    pf.allocation
                        .unwrap_or(Allocation::full(f.allocation_type))
                        .coerce(f.allocation_type),
                ))),
            })
        })
        .collect();
    features.sort_by(|a, b| a.feature_key.cmp(&b.feature_key));
    pb::Plan {
        id: p.id.to_string(),
        key: p.key.clone(),
        name: p.name.clone(),
        description: p.description.clone().unwrap_or_default(),
        metadata: json_to_struct(&p.metadata),
        features,
        default_time_limitation_days: p.default_time_limitation_days,
        assign_on_signup: p.assign_on_signup,
        rules: rules_out(&p.rules),
        default_treatment: treatment(p.default_treatment) as i32,
        inherit_to_sub_accounts: p.inherit_to_sub_accounts,
        created_at: Some(timestamp(stored.created_at)),
        updated_at: Some(timestamp(stored.updated_at)),
    }
}

pub fn route(stored: &Stored<Route>) -> pb::Route {
    let r = &stored.value;
    let (policy, features, permissions) = match &r.policy {
        RoutePolicy::Allow => (pb::RoutePolicy::Allow, vec![], vec![]),
        RoutePolicy::Deny => (pb::RoutePolicy::Deny, vec![], vec![]),
        RoutePolicy::Require {
            features,
            permissions,
        } => (
            pb::RoutePolicy::Require,
            features.clone(),
            permissions.clone(),
        ),
    };
    pb::Route {
        id: r.id.to_string(),
        method: r.method.clone(),
        path_pattern: r.path.clone(),
        policy: policy as i32,
        required_feature_keys: features,
        required_permission_keys: permissions,
        description: r.description.clone().unwrap_or_default(),
        created_at: Some(timestamp(stored.created_at)),
        updated_at: Some(timestamp(stored.updated_at)),
    }
}

pub fn grant_status(s: GrantStatus) -> pb::GrantStatus {
    match s {
        GrantStatus::Scheduled => pb::GrantStatus::Scheduled,
        GrantStatus::Active => pb::GrantStatus::Active,
        GrantStatus::Expired => pb::GrantStatus::Expired,
        GrantStatus::Revoked => pb::GrantStatus::Revoked,
    }
}

pub fn grant(g: &Grant, plan_key: &str, at: DateTime<Utc>, plan: Option<pb::Plan>) -> pb::Grant {
    pb::Grant {
        id: g.id.to_string(),
        plan_id: g.plan_id.to_string(),
        plan_key: plan_key.to_owned(),
        tenant_id: g.tenant_id.clone(),
        user_id: g.user_id.clone(),
        starts_at: Some(timestamp(g.starts_at)),
        expires_at: g.expires_at.map(timestamp),
        status: grant_status(g.status_at(at)) as i32,
        revoked_at: g.revoked_at.map(timestamp),
        revoked_by: g.revoked_by.clone(),
        revoke_reason: g.revoke_reason.clone(),
        source: g.source.as_str().to_owned(),
        external_id: g.external_id.clone(),
        granted_by: g.granted_by.clone().unwrap_or_default(),
        metadata: json_to_struct(&g.metadata),
        created_at: Some(timestamp(g.created_at)),
        updated_at: Some(timestamp(g.updated_at)),
        plan,
    }
}
