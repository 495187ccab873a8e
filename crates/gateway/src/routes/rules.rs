//! JSON shapes shared by plans, flags and checks: Frontegg's targeting rules and treatments,
//! and the seed-004 typed allocation `{"type", "value"}`.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use tenantry_proto::entitlement::v1::{
    Allocation, AllocationType, AttributeType, BoolAllocation, Condition as PbCondition,
    ConditionLogic, ConditionOp, MaxCountAllocation, MergePolicy, TargetingRule, Treatment,
    allocation::Kind,
};
use utoipa::ToSchema;

use crate::{
    convert::{object_to_struct, opt_struct_to_json},
    error::ApiError,
};

/// A targeting rule: the first rule whose conditions all hold gives its treatment.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub description: String,
    /// Only `and`.
    #[serde(default = "and")]
    #[schema(pattern = "^and$")]
    pub condition_logic: String,
    pub conditions: Vec<Condition>,
    /// `"true"` or `"false"`.
    #[schema(pattern = "^(true|false)$")]
    pub treatment: String,
}

fn and() -> String {
    "and".to_owned()
}

/// One condition of a rule.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    pub attribute: String,
    /// `custom` (default) or `frontegg`.
    #[serde(default = "custom")]
    #[schema(pattern = "^(custom|frontegg)$")]
    pub attribute_type: String,
    #[serde(default)]
    pub negate: bool,
    /// in_list, starts_with, ends_with, contains, matches, equal, greater_than,
    /// greater_than_equal, lower_than, lower_than_equal, between_numeric, is, on, between_date,
    /// on_or_after, on_or_before.
    #[schema(
        pattern = "^(in_list|starts_with|ends_with|contains|matches|equal|greater_than|greater_than_equal|lower_than|lower_than_equal|between_numeric|is|on|between_date|on_or_after|on_or_before)$"
    )]
    pub op: String,
    /// Operand shaped per operator, e.g. `{"list": ["a"]}`, `{"number": 3}`; a `matches`
    /// regex must compile (Rust `regex` syntax), a `between_*` start not be after its end.
    #[schema(value_type = Object)]
    pub value: Json_,
}

fn custom() -> String {
    "custom".to_owned()
}

const OPS: &[(&str, ConditionOp)] = &[
    ("in_list", ConditionOp::InList),
    ("starts_with", ConditionOp::StartsWith),
    ("ends_with", ConditionOp::EndsWith),
    ("contains", ConditionOp::Contains),
    ("matches", ConditionOp::Matches),
    ("equal", ConditionOp::Equal),
    ("greater_than", ConditionOp::GreaterThan),
    ("greater_than_equal", ConditionOp::GreaterThanEqual),
    ("lower_than", ConditionOp::LowerThan),
    ("lower_than_equal", ConditionOp::LowerThanEqual),
    ("between_numeric", ConditionOp::BetweenNumeric),
    ("is", ConditionOp::Is),
    ("on", ConditionOp::On),
    ("between_date", ConditionOp::BetweenDate),
    ("on_or_after", ConditionOp::OnOrAfter),
    ("on_or_before", ConditionOp::OnOrBefore),
];

pub fn treatment(value: &str, field: &str) -> Result<Treatment, ApiError> {
    match value {
        "true" => Ok(Treatment::True),
        "false" => Ok(Treatment::False),
        _ => Err(ApiError::invalid_field(
            field,
            "must be \"true\" or \"false\"",
        )),
    }
}

/// `UNSPECIFIED` reads as `"false"`, as the entitlement service evaluates it (a plan whose
/// default treatment was never set gives itself to nobody).
pub fn treatment_name(t: Treatment) -> &'static str {
    match t {
        Treatment::True => "true",
        Treatment::False | Treatment::Unspecified => "false",
    }
}

pub fn rules_to_pb(rules: Vec<Rule>, field: &str) -> Result<Vec<TargetingRule>, ApiError> {
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| rule_to_pb(r, &format!("{field}[{i}]")))
        .collect()
}

fn rule_to_pb(r: Rule, field: &str) -> Result<TargetingRule, ApiError> {
    if r.condition_logic != "and" {
        return Err(ApiError::invalid_field(
            &format!("{field}.conditionLogic"),
            "must be \"and\"",
        ));
    }
    let conditions = r
        .conditions
        .into_iter()
        .enumerate()
        .map(|(j, c)| {
            let field = format!("{field}.conditions[{j}]");
            let op = OPS
                .iter()
                .find(|(name, _)| *name == c.op)
                .map(|(_, op)| *op)
                .ok_or_else(|| {
                    ApiError::invalid_field(&format!("{field}.op"), "is not a known operator")
                })?;
            let attribute_type = match c.attribute_type.as_str() {
                "custom" => AttributeType::Custom,
                "frontegg" => AttributeType::Frontegg,
                _ => {
                    return Err(ApiError::invalid_field(
                        &format!("{field}.attributeType"),
                        "must be custom or frontegg",
                    ));
                }
            };
            Ok(PbCondition {
                attribute: c.attribute,
                attribute_type: attribute_type.into(),
                negate: c.negate,
                op: op.into(),
                value: Some(object_to_struct(c.value, &format!("{field}.value"))?),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TargetingRule {
        description: r.description,
        condition_logic: ConditionLogic::And.into(),
        conditions,
        treatment: treatment(&r.treatment, &format!("{field}.treatment"))?.into(),
    })
}

pub fn rule_from_pb(r: TargetingRule) -> Rule {
    let treatment = treatment_name(r.treatment()).to_owned();
    Rule {
        description: r.description,
        condition_logic: and(),
        conditions: r
            .conditions
            .into_iter()
            .map(|c| Condition {
                attribute_type: match c.attribute_type() {
                    AttributeType::Frontegg => "frontegg",
                    AttributeType::Custom | AttributeType::Unspecified => "custom",
                }
                .to_owned(),
                negate: c.negate,
                op: OPS
                    .iter()
                    .find(|(_, op)| *op == c.op())
                    .map_or("", |(name, _)| name)
                    .to_owned(),
                value: opt_struct_to_json(c.value),
                attribute: c.attribute,
            })
            .collect(),
        treatment,
    }
}

/// A typed allocation: `{"type": "bool", "value": true}`, `{"type": "max_count", "value": 5}`
/// (`null` = unlimited), or `{"type": "", "value": null}` for none.
#[derive(Debug, Deserialize, Serialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllocationJson {
    #[serde(rename = "type")]
    pub kind: String,
    /// `true`/`false` for `bool`; a count, or `null` for unlimited, for `max_count`.
    #[serde(default)]
    #[schema(schema_with = allocation_value)]
    pub value: Json_,
}

fn allocation_value() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type, schema::SchemaType};
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![
            Type::Boolean,
            Type::Integer,
            Type::Null,
        ]))
        .minimum(Some(0.0))
        .build()
}

pub fn allocation_to_pb(a: AllocationJson, field: &str) -> Result<Allocation, ApiError> {
    let kind = match (a.kind.as_str(), &a.value) {
        ("bool", Json_::Bool(b)) => Kind::BoolAllocation(BoolAllocation { value: *b }),
        ("max_count", Json_::Null) => Kind::MaxCountAllocation(MaxCountAllocation {
            value: 0,
            unlimited: true,
        }),
        ("max_count", Json_::Number(n)) if n.as_u64().is_some() => {
            Kind::MaxCountAllocation(MaxCountAllocation {
                value: n.as_u64().unwrap_or_default(),
                unlimited: false,
            })
        }
        _ => {
            return Err(ApiError::invalid_field(
                field,
                "must be {\"type\": \"bool\", \"value\": true|false} or {\"type\": \"max_count\", \"value\": n|null}",
            ));
        }
    };
    Ok(Allocation { kind: Some(kind) })
}

pub fn allocation_json(a: Option<Allocation>) -> AllocationJson {
    match a.and_then(|a| a.kind) {
        Some(Kind::BoolAllocation(b)) => AllocationJson {
            kind: "bool".to_owned(),
            value: Json_::Bool(b.value),
        },
        Some(Kind::MaxCountAllocation(m)) => AllocationJson {
            kind: "max_count".to_owned(),
            value: if m.unlimited {
                Json_::Null
            } else {
                Json_::from(m.value)
            },
        },
        None => AllocationJson {
            kind: String::new(),
            value: Json_::Null,
        },
    }
}

pub fn allocation_type(value: &str, field: &str) -> Result<AllocationType, ApiError> {
    match value {
        "bool" => Ok(AllocationType::Bool),
        "max_count" => Ok(AllocationType::MaxCount),
        "metered" => Ok(AllocationType::Metered),
        _ => Err(ApiError::invalid_field(
            field,
            "must be bool, max_count or metered",
        )),
    }
}

pub fn allocation_type_name(t: AllocationType) -> &'static str {
    match t {
        AllocationType::MaxCount => "max_count",
        AllocationType::Metered => "metered",
        AllocationType::Bool | AllocationType::Unspecified => "bool",
    }
}

pub fn merge_policy(value: &str, field: &str) -> Result<MergePolicy, ApiError> {
    match value {
        "max" => Ok(MergePolicy::Max),
        "sum" => Ok(MergePolicy::Sum),
        _ => Err(ApiError::invalid_field(field, "must be max or sum")),
    }
}

pub fn merge_policy_name(p: MergePolicy) -> Option<&'static str> {
    match p {
        MergePolicy::Max => Some("max"),
        MergePolicy::Sum => Some("sum"),
        MergePolicy::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_round_trip() {
        for json in [
            serde_json::json!({"type": "bool", "value": true}),
            serde_json::json!({"type": "max_count", "value": 5}),
            serde_json::json!({"type": "max_count", "value": null}),
        ] {
            let a: AllocationJson = serde_json::from_value(json.clone()).unwrap();
            let back = allocation_json(Some(allocation_to_pb(a, "a").unwrap()));
            assert_eq!(serde_json::to_value(back).unwrap(), json);
        }
        let bad: AllocationJson =
            serde_json::from_value(serde_json::json!({"type": "max_count", "value": -1})).unwrap();
        assert!(allocation_to_pb(bad, "a").is_err());
    }

    #[test]
    fn rules_round_trip() {
        let json = serde_json::json!([{
            "description": "beta users",
            "conditionLogic": "and",
            "conditions": [{"attribute": "email", "attributeType": "frontegg", "negate": false,
                            "op": "ends_with", "value": {"list": ["@example.com"]}}],
            "treatment": "true"
        }]);
        let rules: Vec<Rule> = serde_json::from_value(json.clone()).unwrap();
        let pb = rules_to_pb(rules, "rules").unwrap();
        let back: Vec<Rule> = pb.into_iter().map(rule_from_pb).collect();
        assert_eq!(serde_json::to_value(back).unwrap(), json);
    }
}
