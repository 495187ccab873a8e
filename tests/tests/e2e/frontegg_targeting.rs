//! A differential test of flag and plan targeting: Frontegg's own evaluation library
//! (`@frontegg/entitlements-javascript-commons`, pinned in `tests/frontegg/`, run once in Node
//! over every case) against Tenantry's (`flag_allows` / `plan_targets`, what checks use), over
//! thousands of generated (rules, attributes) cases covering all 16 operators. Both libraries
//! also answer every condition on its own, so a disagreement is attributed to the condition that
//! decides it: each condition the two answer differently must fall under one of the deliberate
//! differences the README names (`Difference`), and a case's different answer must be the one
//! that putting commons' answers for those conditions into Tenantry's gives. A real mismatch can
//! then not hide behind a named difference of an unrelated condition of the same case.

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

impl Case {
    fn rules(&self) -> &[Rule] {
        match (&self.flag, &self.plan) {
            (Some(f), _) => &f.rules,
            (None, Some(p)) => &p.rules,
            (None, None) => unreachable!("a case is a flag or a plan"),
        }
    }

    fn shape(&self) -> Shape {
        let (on, off, default) = match (&self.flag, &self.plan) {
            (Some(f), _) => (f.on, f.off_treatment, f.default_treatment),
            (None, Some(p)) => (true, Treatment::False, p.default_treatment),
            (None, None) => unreachable!("a case is a flag or a plan"),
        };
        Shape {
            on,
            off: off.is_true(),
            default: default.is_true(),
            rules: self.rules().iter().map(|r| r.treatment.is_true()).collect(),
        }
    }
}

fn tenantry(c: &Case) -> bool {
    match (&c.flag, &c.plan) {
        (Some(f), _) => flag_allows(f, Some(&c.attributes)),
        (None, Some(p)) => plan_targets(p, Some(&c.attributes)),
        (None, None) => unreachable!("a case is a flag or a plan"),
    }
}

/// Tenantry's answer for one condition alone: a plan whose one rule holds only it.
fn tenantry_condition(condition: &Condition, attributes: &Map<String, Value>) -> bool {
    let plan = Plan {
        id: uuid::Uuid::nil(),
        key: "c".into(),
        name: "c".into(),
        description: None,
        metadata: Value::Null,
        features: vec![],
        default_time_limitation_days: None,
        assign_on_signup: false,
        rules: vec![Rule {
            description: None,
            conditions: vec![condition.clone()],
            treatment: Treatment::True,
        }],
        default_treatment: Treatment::False,
        inherit_to_sub_accounts: false,
    };
    plan_targets(&plan, Some(attributes))
}

/// An answer: a treatment, or the exception commons threw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    True,
    False,
    Throws(String),
}

impl Outcome {
    fn of(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }

    fn parse(s: &str) -> Self {
        match s {
            "true" => Self::True,
            "false" => Self::False,
            other => Self::Throws(other.to_owned()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::True => f.write_str("true"),
            Self::False => f.write_str("false"),
            Self::Throws(e) => f.write_str(e),
        }
    }
}

/// What a case answers apart from its conditions.
struct Shape {
    on: bool,
    off: bool,
    default: bool,
    /// Each rule's treatment.
    rules: Vec<bool>,
}

/// How both libraries combine their conditions' answers (commons' `evaluateFeatureFlag` /
/// `evaluatePlan`): a flag that is off answers its off treatment; otherwise the first rule whose
/// conditions all hold answers its treatment, conditions checked in order up to the first that
/// does not hold; else the default. A condition that throws when it is reached is the answer.
/// The test checks this against both libraries' whole answers on every case.
fn compose(shape: &Shape, conditions: &[Vec<Outcome>]) -> Outcome {
    if !shape.on {
        return Outcome::of(shape.off);
    }
    for (&treatment, rule) in shape.rules.iter().zip(conditions) {
        let mut holds = true;
        for c in rule {
            match c {
                Outcome::True => {}
                Outcome::False => {
                    holds = false;
                    break;
                }
                Outcome::Throws(_) => return c.clone(),
            }
        }
        if holds {
            return Outcome::of(treatment);
        }
    }
    Outcome::of(shape.default)
}

/// Both answers for one case: the whole case and each condition alone, and the named
/// difference each condition's attribute value falls under.
struct Answers<'a> {
    shape: &'a Shape,
    ours: Outcome,
    theirs: Outcome,
    ours_by_condition: Vec<Vec<Outcome>>,
    theirs_by_condition: Vec<Vec<Outcome>>,
    differences: Vec<Vec<Option<Difference>>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Agree,
    /// Commons' answers for the conditions under this difference, put into Tenantry's, give
    /// commons' answer (the first such difference, in `Difference` order; `also` counts others
    /// that would on their own).
    Decided {
        by: Difference,
        also: usize,
    },
    /// Only these differences together turn Tenantry's answer into commons'.
    Together(Vec<Difference>),
    Unexplained(String),
}

fn attribute(a: &Answers<'_>) -> Verdict {
    let mut disagreeing: Vec<(usize, usize, Difference)> = Vec::new();
    for (r, rule) in a.ours_by_condition.iter().enumerate() {
        for (c, ours) in rule.iter().enumerate() {
            let theirs = &a.theirs_by_condition[r][c];
            if ours == theirs {
                continue;
            }
            match a.differences[r][c] {
                Some(d) => disagreeing.push((r, c, d)),
                None => {
                    return Verdict::Unexplained(format!(
                        "rule {r} condition {c} alone: tenantry {ours}, commons {theirs}, and \
                         its attribute falls under no named difference"
                    ));
                }
            }
        }
    }
    if a.ours == a.theirs {
        return Verdict::Agree;
    }
    let neutralised = |which: &dyn Fn(Difference) -> bool| {
        let mut conditions = a.ours_by_condition.clone();
        for &(r, c, d) in &disagreeing {
            if which(d) {
                conditions[r][c] = a.theirs_by_condition[r][c].clone();
            }
        }
        compose(a.shape, &conditions)
    };
    let mut classes: Vec<Difference> = disagreeing.iter().map(|&(_, _, d)| d).collect();
    classes.sort();
    classes.dedup();
    let deciding: Vec<Difference> = classes
        .iter()
        .copied()
        .filter(|&d| neutralised(&|x| x == d) == a.theirs)
        .collect();
    if let Some(&by) = deciding.first() {
        return Verdict::Decided {
            by,
            also: deciding.len() - 1,
        };
    }
    if !classes.is_empty() && neutralised(&|_| true) == a.theirs {
        return Verdict::Together(classes);
    }
    Verdict::Unexplained(format!(
        "tenantry {}, commons {}, and no named difference of its conditions decides it",
        a.ours, a.theirs
    ))
}

async fn commons(cases: &[Case]) -> Vec<(Outcome, Vec<Vec<Outcome>>)> {
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
    let answers: Vec<Value> =
        serde_json::from_slice(&out.stdout).expect("commons' answers are a JSON array");
    let text = |v: &Value| Outcome::parse(v.as_str().expect("an answer is a string"));
    answers
        .iter()
        .map(|a| {
            let conditions = a["conditions"]
                .as_array()
                .expect("answers per rule")
                .iter()
                .map(|rule| {
                    rule.as_array()
                        .expect("answers per condition")
                        .iter()
                        .map(text)
                        .collect()
                })
                .collect();
            (text(&a["treatment"]), conditions)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeting_agrees_with_frontegg_commons_except_named_differences() {
    let mut rng = Rng(SEED);
    let cases: Vec<Case> = (0..CASES).map(|i| generate(&mut rng, i)).collect();
    let theirs = commons(&cases).await;
    assert_eq!(theirs.len(), cases.len());

    let mut unexplained = Vec::new();
    let mut decided: BTreeMap<Difference, usize> = BTreeMap::new();
    let mut together: BTreeMap<Vec<Difference>, usize> = BTreeMap::new();
    let mut several_could = 0;
    let mut conditions_disagreeing: BTreeMap<Difference, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<(String, bool), usize> = BTreeMap::new();
    for (c, (their, their_conditions)) in cases.iter().zip(theirs) {
        let ours = tenantry(c);
        let rules = c.rules();
        if let Some(first) = rules.first().and_then(|r| r.conditions.first()) {
            let op = serde_json::to_value(first.op).expect("op").to_string();
            *outcomes.entry((op, ours)).or_default() += 1;
        }
        let shape = c.shape();
        let ours_by_condition: Vec<Vec<Outcome>> = rules
            .iter()
            .map(|r| {
                r.conditions
                    .iter()
                    .map(|cond| Outcome::of(tenantry_condition(cond, &c.attributes)))
                    .collect()
            })
            .collect();
        let differences: Vec<Vec<Option<Difference>>> = rules
            .iter()
            .map(|r| {
                r.conditions
                    .iter()
                    .map(|cond| difference(cond, c.attributes.get(&cond.attribute)))
                    .collect()
            })
            .collect();
        // The composition the attribution relies on is each library's own.
        assert_eq!(
            compose(&shape, &ours_by_condition),
            Outcome::of(ours),
            "tenantry's answer is its conditions' answers combined: {}",
            case_json(c)
        );
        assert_eq!(
            compose(&shape, &their_conditions),
            their,
            "commons' answer is its conditions' answers combined: {}",
            case_json(c)
        );
        for (r, rule) in ours_by_condition.iter().enumerate() {
            for (i, answer) in rule.iter().enumerate() {
                if let Some(d) = differences[r][i]
                    && *answer != their_conditions[r][i]
                {
                    *conditions_disagreeing.entry(d).or_default() += 1;
                }
            }
        }
        let answers = Answers {
            shape: &shape,
            ours: Outcome::of(ours),
            theirs: their,
            ours_by_condition,
            theirs_by_condition: their_conditions,
            differences,
        };
        match attribute(&answers) {
            Verdict::Agree => {}
            Verdict::Decided { by, also } => {
                *decided.entry(by).or_default() += 1;
                several_could += usize::from(also > 0);
            }
            Verdict::Together(ds) => *together.entry(ds).or_default() += 1,
            Verdict::Unexplained(why) => unexplained.push(format!("{why}: {}", case_json(c))),
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} of {CASES} cases disagree where no named difference decides:\n{}",
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
    eprintln!(
        "{CASES} cases; disagreements by the named difference that decides them: {decided:?} \
         ({several_could} of them decided by another difference too), only by several \
         together: {together:?}; conditions answered differently alone, by difference: \
         {conditions_disagreeing:?}"
    );
}

/// The attribution itself, without Node: a condition that disagrees with no named difference is
/// a mismatch even when another condition of the case falls under one.
#[test]
fn a_mismatch_beside_an_unrelated_named_difference_is_unexplained() {
    use Outcome::{False, True};
    // Two rules with `true` treatments, default `false`. Rule 0's attribute falls under a
    // named difference (which would once have explained the case); rule 1's condition decides
    // the case and falls under none.
    let shape = Shape {
        on: true,
        off: false,
        default: false,
        rules: vec![true, true],
    };
    let unrelated = Answers {
        shape: &shape,
        ours: False,
        theirs: True,
        ours_by_condition: vec![vec![False], vec![False]],
        theirs_by_condition: vec![vec![False], vec![True]],
        differences: vec![vec![Some(Difference::NumericString)], vec![None]],
    };
    assert!(matches!(attribute(&unrelated), Verdict::Unexplained(_)));
    // The same disagreement under a named difference of its own is decided by it.
    let named = Answers {
        differences: vec![
            vec![Some(Difference::NumericString)],
            vec![Some(Difference::BooleanString)],
        ],
        ..unrelated
    };
    assert_eq!(
        attribute(&named),
        Verdict::Decided {
            by: Difference::BooleanString,
            also: 0
        }
    );
    // A named difference that disagrees where it cannot change the answer (rule 1 is never
    // reached, rule 0 holds for both) leaves the case in agreement.
    let shadowed = Answers {
        shape: &shape,
        ours: True,
        theirs: True,
        ours_by_condition: vec![vec![True], vec![False]],
        theirs_by_condition: vec![vec![True], vec![True]],
        differences: vec![vec![None], vec![Some(Difference::MistypedAttribute)]],
    };
    assert_eq!(attribute(&shadowed), Verdict::Agree);
}
