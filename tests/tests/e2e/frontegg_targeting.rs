//! A differential test of flag and plan targeting: Frontegg's own evaluation library
//! (`@frontegg/entitlements-javascript-commons`, pinned in `tests/frontegg/`, run once in Node
//! over every case) against Tenantry's (`flag_allows` / `plan_targets`, what checks use), over
//! thousands of generated (rules, attributes) cases covering all 16 operators. Every case must
//! agree, except where an attribute falls under one of the deliberate differences the README
//! names (`Difference`); a case showing any other disagreement fails the test.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use chrono::DateTime;
use serde_json::{Map, Value, json};
use tenantry_entitlement::domain::{
    AttributeType, Condition, ConditionOp, FeatureFlag, Plan, Rule, Treatment, flag_allows,
    plan_targets, validate_rules,
};
use tenantry_tests::frontegg;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const CASES: usize = 6_000;
const SEED: u64 = 0x5eed_f00d_0016_0001;

/// The deliberate differences (README, "Targeting rules compared with Frontegg's").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    /// An attribute of the wrong type (a number for a string operator, `null`, an object...):
    /// Tenantry's condition is false even when negated; commons coerces JavaScript-style or
    /// throws.
    MistypedAttribute,
    /// A numeric string for a numeric operator: Tenantry reads it as the number; commons
    /// compares loosely (`>`) or strictly (`equal`).
    NumericString,
    /// `"true"` / `"false"` for `is`: Tenantry reads the boolean; commons compares strictly.
    BooleanString,
    /// `on`: Tenantry matches the same UTC calendar day; commons the exact instant.
    OnMeansSameDay,
}

/// xorshift64*: a fixed seed gives the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Text,
    Number,
    Boolean,
    Date,
}

fn family(op: ConditionOp) -> Family {
    use ConditionOp::*;
    match op {
        InList | StartsWith | EndsWith | Contains | Matches => Family::Text,
        Equal | GreaterThan | GreaterThanEqual | LowerThan | LowerThanEqual | BetweenNumeric => {
            Family::Number
        }
        Is => Family::Boolean,
        On | BetweenDate | OnOrAfter | OnOrBefore => Family::Date,
    }
}

fn attributes_of(f: Family) -> &'static [&'static str] {
    match f {
        Family::Text => &["email", "company"],
        Family::Number => &["seats", "score"],
        Family::Boolean => &["beta"],
        Family::Date => &["signup", "renewal"],
    }
}

const DATE_ATTRIBUTES: [&str; 2] = ["signup", "renewal"];
const STRINGS: [&str; 10] = [
    "ann@acme.io",
    "bob@globex.com",
    "acme",
    "ACME",
    "",
    "a.c",
    "abc",
    "x",
    "12",
    "ann",
];
/// Patterns that mean the same in JavaScript's and Rust's regex dialects on these strings.
const PATTERNS: [&str; 9] = [
    "^ann",
    "io$",
    "a.c",
    "^[a-c]+$",
    "acme|globex",
    "\\d{2}",
    "",
    "^$",
    "@.*\\.com$",
];
const CONDITION_NUMBERS: [f64; 6] = [0.0, 5.0, 10.0, 20.0, -3.0, 2.5];
const ATTRIBUTE_NUMBERS: [f64; 9] = [-3.0, 0.0, 2.5, 5.0, 9.99, 10.0, 10.5, 20.0, 100.0];
const DATES: [&str; 8] = [
    "2024-03-05",
    "2024-03-05T00:00:00Z",
    "2024-03-05T10:00:00Z",
    "2024-03-05T23:59:59Z",
    "2024-03-06T00:00:00Z",
    "2024-03-04T23:00:00-02:00",
    "2024-01-01T00:00:00Z",
    "2025-06-30T12:30:00.250Z",
];

fn micros(date: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(date) {
        return Some(t.timestamp_micros());
    }
    let day: chrono::NaiveDate = date.parse().ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// Values of the wrong type for some family (or of a type both read differently).
fn odd_value(rng: &mut Rng) -> Value {
    rng.pick(&[
        json!("10"),
        json!(" 7 "),
        json!("true"),
        json!("false"),
        json!(null),
        json!(["acme", "x"]),
        json!(["zzz"]),
        json!([]),
        json!(7),
        json!(true),
        json!("not a date"),
        json!({"a": 1}),
        json!("2024-03-05"),
        json!("ann@acme.io"),
    ])
}

fn value_for(rng: &mut Rng, f: Family) -> Value {
    match f {
        Family::Text => {
            if rng.chance(15) {
                // A multi-valued attribute (Frontegg's `in_list` takes any listed element).
                json!([rng.pick(&STRINGS), rng.pick(&STRINGS)])
            } else {
                json!(rng.pick(&STRINGS))
            }
        }
        Family::Number => json!(rng.pick(&ATTRIBUTE_NUMBERS)),
        Family::Boolean => json!(rng.chance(50)),
        Family::Date => json!(rng.pick(&DATES)),
    }
}

fn condition(rng: &mut Rng, op: ConditionOp) -> Condition {
    use ConditionOp::*;
    let list = |rng: &mut Rng| {
        let n = 1 + rng.below(3);
        json!({"list": (0..n).map(|_| rng.pick(&STRINGS)).collect::<Vec<_>>()})
    };
    let value = match op {
        InList | StartsWith | EndsWith | Contains => list(rng),
        Matches => json!({"string": rng.pick(&PATTERNS)}),
        Equal | GreaterThan | GreaterThanEqual | LowerThan | LowerThanEqual => {
            json!({"number": rng.pick(&CONDITION_NUMBERS)})
        }
        BetweenNumeric => {
            let (a, b) = (rng.pick(&CONDITION_NUMBERS), rng.pick(&CONDITION_NUMBERS));
            json!({"start": a.min(b), "end": a.max(b)})
        }
        Is => json!({"boolean": rng.chance(50)}),
        On | OnOrAfter | OnOrBefore => json!({"date": rng.pick(&DATES)}),
        BetweenDate => {
            let (a, b) = (rng.pick(&DATES), rng.pick(&DATES));
            let (a, b) = if micros(a) <= micros(b) {
                (a, b)
            } else {
                (b, a)
            };
            json!({"start": a, "end": b})
        }
    };
    Condition {
        attribute: rng.pick(attributes_of(family(op))).to_owned(),
        attribute_type: AttributeType::Custom,
        negate: rng.chance(25),
        op,
        value,
    }
}

/// The difference a condition's attribute value falls under, if any.
fn difference(c: &Condition, attribute: Option<&Value>) -> Option<Difference> {
    let v = attribute?;
    let mistyped = Some(Difference::MistypedAttribute);
    match family(c.op) {
        Family::Text => match v {
            Value::String(_) => None,
            Value::Array(items)
                if c.op == ConditionOp::InList && items.iter().all(Value::is_string) =>
            {
                None
            }
            Value::Null
            | Value::Bool(_)
            | Value::Number(_)
            | Value::Array(_)
            | Value::Object(_) => mistyped,
        },
        Family::Number => match v {
            Value::Number(_) => None,
            Value::String(s) if s.trim().parse::<f64>().is_ok() => Some(Difference::NumericString),
            Value::Null
            | Value::Bool(_)
            | Value::String(_)
            | Value::Array(_)
            | Value::Object(_) => mistyped,
        },
        Family::Boolean => match v {
            Value::Bool(_) => None,
            Value::String(s) if s == "true" || s == "false" => Some(Difference::BooleanString),
            Value::Null
            | Value::Number(_)
            | Value::String(_)
            | Value::Array(_)
            | Value::Object(_) => mistyped,
        },
        Family::Date => {
            let Some(at) = v.as_str().and_then(micros) else {
                return mistyped;
            };
            let wanted = c.value.get("date").and_then(Value::as_str).and_then(micros);
            match (c.op, wanted) {
                (ConditionOp::On, Some(day))
                    if at != day
                        && at.div_euclid(86_400_000_000) == day.div_euclid(86_400_000_000) =>
                {
                    Some(Difference::OnMeansSameDay)
                }
                _ => None,
            }
        }
    }
}

struct Case {
    flag: Option<FeatureFlag>,
    plan: Option<Plan>,
    attributes: Map<String, Value>,
    differences: Vec<Difference>,
}

fn treatment(rng: &mut Rng) -> Treatment {
    if rng.chance(50) {
        Treatment::True
    } else {
        Treatment::False
    }
}

fn generate(rng: &mut Rng, i: usize) -> Case {
    let mut rules = Vec::new();
    for r in 0..1 + rng.below(3) {
        let mut conditions = Vec::new();
        for c in 0..1 + rng.below(3) {
            // The first condition walks the operators in turn, so each gets its share.
            let op = if r == 0 && c == 0 {
                ConditionOp::ALL[i % ConditionOp::ALL.len()]
            } else {
                rng.pick(&ConditionOp::ALL)
            };
            conditions.push(condition(rng, op));
        }
        rules.push(Rule {
            description: None,
            conditions,
            treatment: treatment(rng),
        });
    }
    validate_rules("rules", &rules).expect("generated rules are valid");
    let mut attributes = Map::new();
    for f in [Family::Text, Family::Number, Family::Boolean, Family::Date] {
        for name in attributes_of(f) {
            let roll = rng.below(100);
            if roll < 15 {
                continue;
            }
            let value = if roll < 85 {
                value_for(rng, f)
            } else {
                odd_value(rng)
            };
            attributes.insert((*name).to_owned(), value);
        }
    }
    let differences = rules
        .iter()
        .flat_map(|r| &r.conditions)
        .filter_map(|c| difference(c, attributes.get(&c.attribute)))
        .collect();
    let default_treatment = treatment(rng);
    let (flag, plan) = if i.is_multiple_of(2) {
        let flag = FeatureFlag {
            id: uuid::Uuid::nil(),
            feature_key: "f".into(),
            name: "f".into(),
            description: None,
            on: rng.chance(85),
            off_treatment: treatment(rng),
            default_treatment,
            rules,
        };
        (Some(flag), None)
    } else {
        let plan = Plan {
            id: uuid::Uuid::nil(),
            key: "p".into(),
            name: "p".into(),
            description: None,
            metadata: Value::Null,
            features: vec![],
            default_time_limitation_days: None,
            assign_on_signup: false,
            rules,
            default_treatment,
            inherit_to_sub_accounts: false,
        };
        (None, Some(plan))
    };
    Case {
        flag,
        plan,
        attributes,
        differences,
    }
}

fn treatment_name(t: Treatment) -> &'static str {
    if t.is_true() { "true" } else { "false" }
}

/// A rule in Frontegg's JSON shape.
fn rule_json(r: &Rule) -> Value {
    json!({
        "conditionLogic": "and",
        "treatment": treatment_name(r.treatment),
        "conditions": r.conditions.iter().map(|c| json!({
            "attribute": c.attribute,
            "attributeType": "custom",
            "negate": c.negate,
            "op": serde_json::to_value(c.op).expect("op name"),
            "value": c.value,
        })).collect::<Vec<_>>(),
    })
}

fn case_json(c: &Case) -> Value {
    let (kind, on, off, default, rules) = match (&c.flag, &c.plan) {
        (Some(f), _) => ("flag", f.on, f.off_treatment, f.default_treatment, &f.rules),
        (None, Some(p)) => (
            "plan",
            true,
            Treatment::False,
            p.default_treatment,
            &p.rules,
        ),
        (None, None) => unreachable!("a case is a flag or a plan"),
    };
    json!({
        "kind": kind,
        "on": on,
        "offTreatment": treatment_name(off),
        "defaultTreatment": treatment_name(default),
        "rules": rules.iter().map(rule_json).collect::<Vec<_>>(),
        "attributes": c.attributes,
        "dates": DATE_ATTRIBUTES,
    })
}

fn tenantry(c: &Case) -> bool {
    match (&c.flag, &c.plan) {
        (Some(f), _) => flag_allows(f, Some(&c.attributes)),
        (None, Some(p)) => plan_targets(p, Some(&c.attributes)),
        (None, None) => unreachable!("a case is a flag or a plan"),
    }
}

async fn commons(cases: &[Case]) -> Vec<String> {
    let mut child = Command::new("node")
        .arg(frontegg::script("targeting.js"))
        .env("NODE_PATH", frontegg::node_modules())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start node (Node.js is needed for the targeting differential test)");
    let input = json!({"cases": cases.iter().map(case_json).collect::<Vec<_>>()}).to_string();
    let mut stdin = child.stdin.take().expect("node stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write the cases");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("commons evaluated every case within a minute")
        .expect("run node");
    assert!(out.status.success(), "node failed: {}", out.status);
    serde_json::from_slice(&out.stdout).expect("commons' answers are a JSON array of strings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeting_agrees_with_frontegg_commons_except_named_differences() {
    let mut rng = Rng(SEED);
    let cases: Vec<Case> = (0..CASES).map(|i| generate(&mut rng, i)).collect();
    let theirs = commons(&cases).await;
    assert_eq!(theirs.len(), cases.len());

    let mut unexplained = Vec::new();
    let mut explained: BTreeMap<Difference, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<(String, bool), usize> = BTreeMap::new();
    for (c, their) in cases.iter().zip(&theirs) {
        let ours = tenantry(c);
        let rules = c
            .flag
            .as_ref()
            .map_or_else(|| &c.plan.as_ref().expect("plan").rules, |f| &f.rules);
        if let Some(first) = rules.first().and_then(|r| r.conditions.first()) {
            let op = serde_json::to_value(first.op).expect("op").to_string();
            *outcomes.entry((op, ours)).or_default() += 1;
        }
        if their == if ours { "true" } else { "false" } {
            continue;
        }
        match c.differences.first() {
            Some(&d) => *explained.entry(d).or_default() += 1,
            None => unexplained.push(format!(
                "tenantry {ours}, commons {their}: {}",
                case_json(c)
            )),
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} of {CASES} cases disagree without a named difference:\n{}",
        unexplained.len(),
        unexplained[..unexplained.len().min(10)].join("\n")
    );
    // Every operator decided cases both ways, so the comparison exercised each of them.
    for op in ConditionOp::ALL {
        let name = serde_json::to_value(op).expect("op").to_string();
        for result in [true, false] {
            assert!(
                outcomes.get(&(name.clone(), result)).copied().unwrap_or(0) > 0,
                "no case led by {name} evaluated to {result}"
            );
        }
    }
    eprintln!("{CASES} cases; disagreements by named difference: {explained:?}");
}
