//! Targeting rules compiled for evaluation: values are parsed (numbers, dates, regexes) once,
//! when the index is built, so evaluating a rule over a subject never allocates.
//!
//! Attribute semantics (documented choices):
//! - strings: `in_list` is exact membership (of any element, for an array attribute);
//!   `starts_with`/`ends_with`/`contains` hold when any listed value does; `matches` is an
//!   unanchored regex search (anchor with `^…$` if needed).
//! - numbers: a JSON number or a numeric string; `between_numeric` is inclusive.
//! - `is`: a JSON boolean or the strings `"true"`/`"false"`.
//! - dates: RFC 3339 strings or `YYYY-MM-DD` (midnight UTC); compared as instants, inclusive;
//!   `on` means the same UTC calendar day.
//! - a missing or mistyped attribute makes the condition false, even when negated: nothing is
//!   targeted on data the caller did not send.

use chrono::{DateTime, NaiveDate};
use regex::Regex;
use serde_json::{Map, Value};

use super::model::{Condition, ConditionOp, Rule};

const DAY_MICROS: i64 = 86_400_000_000;

#[derive(Debug, Clone)]
enum Test {
    InList(Box<[Box<str>]>),
    StartsWith(Box<[Box<str>]>),
    EndsWith(Box<[Box<str>]>),
    Contains(Box<[Box<str>]>),
    Matches(Regex),
    Equal(f64),
    GreaterThan(f64),
    GreaterThanEqual(f64),
    LowerThan(f64),
    LowerThanEqual(f64),
    BetweenNumeric(f64, f64),
    Is(bool),
    OnDay(i64),
    BetweenDate(i64, i64),
    OnOrAfter(i64),
    OnOrBefore(i64),
}

#[derive(Debug, Clone)]
pub struct CompiledCondition {
    attribute: Box<str>,
    negate: bool,
    test: Test,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    conditions: Box<[CompiledCondition]>,
    /// A rule with a condition that failed to compile never matches (validation refuses such
    /// rules on write; this only keeps index builds total).
    broken: bool,
    treatment: bool,
}

/// Rules plus the treatment when none matches: the shape shared by flags and plan targeting.
#[derive(Debug, Clone)]
pub(crate) struct CompiledTargeting {
    rules: Box<[CompiledRule]>,
    default: bool,
}

impl CompiledTargeting {
    pub(crate) fn new(rules: &[Rule], default: bool) -> Self {
        Self {
            rules: rules.iter().map(CompiledRule::compile).collect(),
            default,
        }
    }

    /// First rule whose conditions all hold decides; otherwise the default.
    pub(crate) fn evaluate(&self, attributes: Option<&Map<String, Value>>) -> bool {
        for rule in self.rules.iter() {
            if !rule.broken && rule.conditions.iter().all(|c| c.holds(attributes)) {
                return rule.treatment;
            }
        }
        self.default
    }
}

impl CompiledRule {
    fn compile(rule: &Rule) -> Self {
        let mut broken = false;
        let conditions = rule
            .conditions
            .iter()
            .filter_map(|c| match compile(c) {
                Ok(c) => Some(c),
                Err(_) => {
                    broken = true;
                    None
                }
            })
            .collect();
        Self {
            conditions,
            broken,
            treatment: rule.treatment.is_true(),
        }
    }
}

fn string_list(value: &Value) -> Result<Box<[Box<str>]>, String> {
    let list = value
        .get("list")
        .and_then(Value::as_array)
        .ok_or("expected {\"list\": [strings]}")?;
    list.iter()
        .map(|v| {
            v.as_str()
                .map(Box::from)
                .ok_or_else(|| "list items must be strings".to_owned())
        })
        .collect()
}

fn number(value: &Value, field: &str) -> Result<f64, String> {
    value
        .get(field)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("expected a number in \"{field}\""))
}

fn date(value: &Value, field: &str) -> Result<i64, String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .and_then(parse_date_micros)
        .ok_or_else(|| format!("expected an RFC 3339 date or YYYY-MM-DD in \"{field}\""))
}

/// Parses an RFC 3339 instant or a plain date; allocation-free, so usable at check time.
pub(crate) fn parse_date_micros(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    let d: NaiveDate = s.parse().ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// Parses and checks a condition's value for its operation.
pub fn compile(c: &Condition) -> Result<CompiledCondition, String> {
    if c.attribute.is_empty() {
        return Err("attribute must not be empty".into());
    }
    let v = &c.value;
    let test = match c.op {
        ConditionOp::InList => Test::InList(string_list(v)?),
        ConditionOp::StartsWith => Test::StartsWith(string_list(v)?),
        ConditionOp::EndsWith => Test::EndsWith(string_list(v)?),
        ConditionOp::Contains => Test::Contains(string_list(v)?),
        ConditionOp::Matches => {
            let pattern = v
                .get("string")
                .and_then(Value::as_str)
                .ok_or("expected {\"string\": regex}")?;
            Test::Matches(Regex::new(pattern).map_err(|e| format!("invalid regex: {e}"))?)
        }
        ConditionOp::Equal => Test::Equal(number(v, "number")?),
        ConditionOp::GreaterThan => Test::GreaterThan(number(v, "number")?),
        ConditionOp::GreaterThanEqual => Test::GreaterThanEqual(number(v, "number")?),
        ConditionOp::LowerThan => Test::LowerThan(number(v, "number")?),
        ConditionOp::LowerThanEqual => Test::LowerThanEqual(number(v, "number")?),
        ConditionOp::BetweenNumeric => {
            let (start, end) = (number(v, "start")?, number(v, "end")?);
            if start > end {
                return Err("start must not exceed end".into());
            }
            Test::BetweenNumeric(start, end)
        }
        ConditionOp::Is => Test::Is(
            v.get("boolean")
                .and_then(Value::as_bool)
                .ok_or("expected {\"boolean\": bool}")?,
        ),
        ConditionOp::On => Test::OnDay(date(v, "date")?.div_euclid(DAY_MICROS)),
        ConditionOp::BetweenDate => {
            let (start, end) = (date(v, "start")?, date(v, "end")?);
            if start > end {
                return Err("start must not be after end".into());
            }
            Test::BetweenDate(start, end)
        }
        ConditionOp::OnOrAfter => Test::OnOrAfter(date(v, "date")?),
        ConditionOp::OnOrBefore => Test::OnOrBefore(date(v, "date")?),
    };
    Ok(CompiledCondition {
        attribute: c.attribute.as_str().into(),
        negate: c.negate,
        test,
    })
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        Value::Null | Value::Number(_) | Value::String(_) | Value::Array(_) | Value::Object(_) => {
            None
        }
    }
}

impl CompiledCondition {
    /// `None` when the attribute is missing or of the wrong type.
    fn test(&self, v: &Value) -> Option<bool> {
        let any = |list: &[Box<str>], f: &dyn Fn(&str, &str) -> bool| {
            v.as_str().map(|s| list.iter().any(|item| f(s, item)))
        };
        match &self.test {
            // A multi-valued attribute (e.g. roles) is in the list when any element is, as
            // Frontegg's commons decides it.
            Test::InList(list) => match v {
                Value::Array(items) => Some(items.iter().any(|item| {
                    item.as_str()
                        .is_some_and(|s| list.iter().any(|listed| &**listed == s))
                })),
                Value::Null
                | Value::Bool(_)
                | Value::Number(_)
                | Value::String(_)
                | Value::Object(_) => any(list, &|s, i| s == i),
            },
            Test::StartsWith(list) => any(list, &|s, i| s.starts_with(i)),
            Test::EndsWith(list) => any(list, &|s, i| s.ends_with(i)),
            Test::Contains(list) => any(list, &|s, i| s.contains(i)),
            Test::Matches(re) => v.as_str().map(|s| re.is_match(s)),
            Test::Equal(n) => as_number(v).map(|x| x == *n),
            Test::GreaterThan(n) => as_number(v).map(|x| x > *n),
            Test::GreaterThanEqual(n) => as_number(v).map(|x| x >= *n),
            Test::LowerThan(n) => as_number(v).map(|x| x < *n),
            Test::LowerThanEqual(n) => as_number(v).map(|x| x <= *n),
            Test::BetweenNumeric(a, b) => as_number(v).map(|x| *a <= x && x <= *b),
            Test::Is(b) => as_bool(v).map(|x| x == *b),
            Test::OnDay(day) => attr_date(v).map(|x| x.div_euclid(DAY_MICROS) == *day),
            Test::BetweenDate(a, b) => attr_date(v).map(|x| *a <= x && x <= *b),
            Test::OnOrAfter(d) => attr_date(v).map(|x| x >= *d),
            Test::OnOrBefore(d) => attr_date(v).map(|x| x <= *d),
        }
    }

    fn holds(&self, attributes: Option<&Map<String, Value>>) -> bool {
        attributes
            .and_then(|a| a.get(&*self.attribute))
            .and_then(|v| self.test(v))
            .is_some_and(|r| r != self.negate)
    }
}

fn attr_date(v: &Value) -> Option<i64> {
    v.as_str().and_then(parse_date_micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttributeType, Treatment};
    use serde_json::json;

    fn cond(attribute: &str, op: ConditionOp, value: Value, negate: bool) -> Condition {
        Condition {
            attribute: attribute.into(),
            attribute_type: AttributeType::Custom,
            negate,
            op,
            value,
        }
    }

    fn holds(c: &Condition, attrs: &Value) -> bool {
        compile(c).unwrap().holds(attrs.as_object())
    }

    #[test]
    fn every_operator_matches_and_misses() {
        use ConditionOp::*;
        let attrs = json!({
            "email": "ann@acme.io", "seats": 10, "seats_s": "10", "beta": true,
            "signup": "2024-03-05T10:00:00Z", "day": "2024-03-05"
        });
        let cases: Vec<(Condition, bool)> = vec![
            (
                cond("email", InList, json!({"list": ["ann@acme.io"]}), false),
                true,
            ),
            (
                cond("email", InList, json!({"list": ["bob"]}), false),
                false,
            ),
            (
                cond("email", StartsWith, json!({"list": ["x", "ann"]}), false),
                true,
            ),
            (
                cond("email", EndsWith, json!({"list": [".io"]}), false),
                true,
            ),
            (
                cond("email", EndsWith, json!({"list": [".com"]}), false),
                false,
            ),
            (
                cond("email", Contains, json!({"list": ["@acme"]}), false),
                true,
            ),
            (
                cond(
                    "email",
                    Matches,
                    json!({"string": "^[a-z]+@acme\\.io$"}),
                    false,
                ),
                true,
            ),
            (
                cond("email", Matches, json!({"string": "^bob"}), false),
                false,
            ),
            (cond("seats", Equal, json!({"number": 10}), false), true),
            (cond("seats_s", Equal, json!({"number": 10}), false), true),
            (
                cond("seats", GreaterThan, json!({"number": 10}), false),
                false,
            ),
            (
                cond("seats", GreaterThanEqual, json!({"number": 10}), false),
                true,
            ),
            (cond("seats", LowerThan, json!({"number": 11}), false), true),
            (
                cond("seats", LowerThanEqual, json!({"number": 9}), false),
                false,
            ),
            (
                cond(
                    "seats",
                    BetweenNumeric,
                    json!({"start": 10, "end": 12}),
                    false,
                ),
                true,
            ),
            (
                cond(
                    "seats",
                    BetweenNumeric,
                    json!({"start": 11, "end": 12}),
                    false,
                ),
                false,
            ),
            (cond("beta", Is, json!({"boolean": true}), false), true),
            (cond("beta", Is, json!({"boolean": false}), false), false),
            (
                cond("signup", On, json!({"date": "2024-03-05"}), false),
                true,
            ),
            (
                cond("signup", On, json!({"date": "2024-03-06T00:00:00Z"}), false),
                false,
            ),
            (
                cond(
                    "day",
                    BetweenDate,
                    json!({"start": "2024-03-01", "end": "2024-03-05"}),
                    false,
                ),
                true,
            ),
            (
                cond(
                    "signup",
                    OnOrAfter,
                    json!({"date": "2024-03-05T10:00:00Z"}),
                    false,
                ),
                true,
            ),
            (
                cond(
                    "signup",
                    OnOrBefore,
                    json!({"date": "2024-03-05T09:59:59Z"}),
                    false,
                ),
                false,
            ),
            // negation flips a present, well-typed attribute...
            (cond("email", InList, json!({"list": ["bob"]}), true), true),
            // ...but never a missing or mistyped one
            (
                cond("missing", InList, json!({"list": ["bob"]}), true),
                false,
            ),
            (
                cond("seats", StartsWith, json!({"list": ["1"]}), true),
                false,
            ),
        ];
        for (c, expected) in &cases {
            assert_eq!(holds(c, &attrs), *expected, "{c:?}");
        }
        assert!(
            !compile(&cond("a", InList, json!({"list": ["x"]}), false))
                .unwrap()
                .holds(None)
        );
    }

    /// Frontegg's `in_list` on a multi-valued attribute (e.g. a user's roles) holds when any
    /// element is listed; other operators still need a string.
    #[test]
    fn in_list_takes_any_element_of_an_array_attribute() {
        use ConditionOp::*;
        let attrs = json!({"roles": ["viewer", "admin"], "none": [], "mixed": [1, "admin"]});
        let admins = json!({"list": ["admin"]});
        assert!(holds(&cond("roles", InList, admins.clone(), false), &attrs));
        assert!(!holds(&cond("roles", InList, admins.clone(), true), &attrs));
        assert!(!holds(
            &cond("roles", InList, json!({"list": ["owner"]}), false),
            &attrs
        ));
        assert!(!holds(&cond("none", InList, admins.clone(), false), &attrs));
        assert!(holds(&cond("none", InList, admins.clone(), true), &attrs));
        assert!(holds(&cond("mixed", InList, admins, false), &attrs));
        assert!(!holds(
            &cond("roles", StartsWith, json!({"list": ["adm"]}), false),
            &attrs
        ));
    }

    #[test]
    fn bad_values_are_refused_at_compile() {
        use ConditionOp::*;
        for (op, v) in [
            (InList, json!(["x"])),
            (InList, json!({"list": [1]})),
            (Matches, json!({"string": "("})),
            (Equal, json!({"number": "x"})),
            (BetweenNumeric, json!({"start": 5, "end": 1})),
            (Is, json!({"boolean": "yes"})),
            (On, json!({"date": "yesterday"})),
            (
                BetweenDate,
                json!({"start": "2024-02-01", "end": "2024-01-01"}),
            ),
        ] {
            assert!(
                compile(&cond("a", op, v.clone(), false)).is_err(),
                "{op:?} {v}"
            );
        }
        assert!(compile(&cond("", InList, json!({"list": []}), false)).is_err());
    }

    #[test]
    fn first_matching_rule_decides_else_default() {
        let rules = vec![
            Rule {
                description: None,
                conditions: vec![cond("tier", InList, json!({"list": ["gold"]}), false)],
                treatment: Treatment::True,
            },
            Rule {
                description: None,
                conditions: vec![
                    cond("tier", InList, json!({"list": ["silver"]}), false),
                    cond("seats", GreaterThan, json!({"number": 5}), false),
                ],
                treatment: Treatment::False,
            },
        ];
        use ConditionOp::*;
        let t = CompiledTargeting::new(&rules, true);
        assert!(t.evaluate(json!({"tier": "gold"}).as_object()));
        assert!(!t.evaluate(json!({"tier": "silver", "seats": 6}).as_object()));
        // the `and` fails, so the default applies
        assert!(t.evaluate(json!({"tier": "silver", "seats": 2}).as_object()));
        assert!(t.evaluate(None));
    }
}
