//! Feature flags with a rule builder: list, create, edit (on/off, treatments, targeting rules),
//! delete. Environment sessions only, as the REST routes.
//!
//! The builder needs no script: the flag's form carries every rule and condition as numbered
//! fields (`r0.treatment`, `r0.c1.op`, …), and its buttons say what to do with them — save, or
//! add or remove a rule or condition, which renders the form again one row longer or shorter
//! with nothing written. A condition's operand is typed as text and shaped for its operator
//! (a list, a number, a regex, a boolean, a date or a start and end); the shaped rules then go
//! through the REST body's conversion (`routes::rules`) and the service's checks, so a refusal
//! names the same field (`rules[0].conditions[1]`) with the same message as the API.

use askama::Template;
use axum::{
    Router,
    extract::{Path, RawForm, State},
    response::Response,
    routing::{get, post},
};
use http::StatusCode;
use serde_json::{Value as Json, json};
use tenantry_proto::entitlement::v1::{
    CreateFeatureFlagRequest, DeleteFeatureFlagRequest, GetFeatureFlagRequest,
    ListFeatureFlagsRequest, TargetingRuleList, UpdateFeatureFlagRequest,
    create_feature_flag_request,
};

use super::{
    Console, Layout, PageError, SignedIn,
    catalogue::{field, fields, list_features},
    encode, first_page, render, render_with, see, write_then_see,
};
use crate::{
    error::ApiError,
    routes::rules::{Condition, Rule, rule_from_pb, rules_to_pb, treatment, treatment_name},
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/flags", get(list).post(create))
        .route("/flags/{id}", get(show).post(edit))
        .route("/flags/{id}/delete", post(delete))
}

/// The 16 operators: the REST name, how the builder labels it, and the operand it takes.
const OPERATORS: &[(&str, &str, Operand)] = &[
    ("in_list", "is one of", Operand::List),
    ("starts_with", "starts with one of", Operand::List),
    ("ends_with", "ends with one of", Operand::List),
    ("contains", "contains one of", Operand::List),
    ("matches", "matches the regex", Operand::Regex),
    ("equal", "equals the number", Operand::Number),
    ("greater_than", "is greater than", Operand::Number),
    ("greater_than_equal", "is at least", Operand::Number),
    ("lower_than", "is lower than", Operand::Number),
    ("lower_than_equal", "is at most", Operand::Number),
    (
        "between_numeric",
        "is a number between",
        Operand::NumberRange,
    ),
    ("is", "is the boolean", Operand::Boolean),
    ("on", "is on the day", Operand::Date),
    ("between_date", "is a date between", Operand::DateRange),
    ("on_or_after", "is on or after", Operand::Date),
    ("on_or_before", "is on or before", Operand::Date),
];

/// The operand shapes of the operators (`ConditionOp` in targeting.proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operand {
    /// `{"list": [..]}`, typed comma-separated.
    List,
    /// `{"string": regex}`.
    Regex,
    /// `{"number": n}`.
    Number,
    /// `{"start": n, "end": n}`.
    NumberRange,
    /// `{"boolean": b}`, typed `true` or `false`.
    Boolean,
    /// `{"date": RFC 3339}`; a bare `YYYY-MM-DD` is that day's midnight UTC.
    Date,
    /// `{"start": date, "end": date}`.
    DateRange,
}

fn operand_of(op: &str) -> Option<Operand> {
    OPERATORS
        .iter()
        .find(|(name, _, _)| *name == op)
        .map(|(_, _, o)| *o)
}

/// A number as typed; text that is none goes to the service as it is, to be refused there with
/// the API's message.
fn number(text: &str) -> Json {
    text.parse::<i64>()
        .map(Json::from)
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(Json::from))
        .unwrap_or_else(|| Json::String(text.to_owned()))
}

fn date(text: &str) -> Json {
    let is_day = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    Json::String(if is_day {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    })
}

/// The operand JSON of `op` from the builder's text fields (`end` for the ranges).
fn operand(op: &str, value: &str, end: &str) -> Json {
    match operand_of(op) {
        Some(Operand::List) => json!({
            "list": value.split(',').map(str::trim).filter(|v| !v.is_empty()).collect::<Vec<_>>()
        }),
        Some(Operand::Number) => json!({ "number": number(value) }),
        Some(Operand::NumberRange) => json!({ "start": number(value), "end": number(end) }),
        Some(Operand::Boolean) => json!({
            "boolean": match value { "true" => Json::Bool(true), "false" => Json::Bool(false), other => Json::String(other.to_owned()) }
        }),
        Some(Operand::Date) => json!({ "date": date(value) }),
        Some(Operand::DateRange) => json!({ "start": date(value), "end": date(end) }),
        // An unknown operator is refused by the conversion, naming the `op` field.
        Some(Operand::Regex) | None => json!({ "string": value }),
    }
}

/// The builder's text fields (value, end) of a stored operand.
fn operand_text(value: &Json) -> (String, String) {
    let text = |v: Option<&Json>| match v {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    for key in ["list", "string", "number", "boolean", "date"] {
        if let Some(v) = value.get(key) {
            return (text(Some(v)), String::new());
        }
    }
    (text(value.get("start")), text(value.get("end")))
}

// ---------------------------------------------------------------------------------------------
// The builder's state: what the form holds.

pub struct ConditionRow {
    /// Its fields' name prefix, `r{i}.c{j}`.
    pub prefix: String,
    /// `{i}.{j}`, for its remove button; `number` counts from 1.
    pub key: String,
    pub number: usize,
    pub attribute: String,
    pub frontegg: bool,
    pub negate: bool,
    pub op: String,
    pub value: String,
    pub end: String,
}

pub struct RuleRow {
    /// Its fields' name prefix, `r{i}`.
    pub prefix: String,
    pub index: usize,
    pub number: usize,
    pub description: String,
    pub treatment: bool,
    pub conditions: Vec<ConditionRow>,
}

fn blank_condition() -> ConditionRow {
    ConditionRow {
        prefix: String::new(),
        key: String::new(),
        number: 0,
        attribute: String::new(),
        frontegg: false,
        negate: false,
        op: "in_list".to_owned(),
        value: String::new(),
        end: String::new(),
    }
}

/// Numbers the rows' field names after a row was added or removed.
fn renumber(rules: &mut [RuleRow]) {
    for (i, rule) in rules.iter_mut().enumerate() {
        rule.prefix = format!("r{i}");
        rule.index = i;
        rule.number = i + 1;
        for (j, c) in rule.conditions.iter_mut().enumerate() {
            c.prefix = format!("r{i}.c{j}");
            c.key = format!("{i}.{j}");
            c.number = j + 1;
        }
    }
}

fn rows_from_rules(rules: Vec<Rule>) -> Vec<RuleRow> {
    let mut rows: Vec<RuleRow> = rules
        .into_iter()
        .map(|r| RuleRow {
            prefix: String::new(),
            index: 0,
            number: 0,
            treatment: r.treatment == "true",
            description: r.description,
            conditions: r
                .conditions
                .into_iter()
                .map(|c| {
                    let (value, end) = operand_text(&c.value);
                    ConditionRow {
                        prefix: String::new(),
                        key: String::new(),
                        number: 0,
                        frontegg: c.attribute_type == "frontegg",
                        negate: c.negate,
                        attribute: c.attribute,
                        op: c.op,
                        value,
                        end,
                    }
                })
                .collect(),
        })
        .collect();
    renumber(&mut rows);
    rows
}

/// The rules as the form sent them: `r{i}.treatment` present for every rule, `r{i}.c{j}.op`
/// for every condition (selects are always sent).
fn rows_from_form(f: &[(String, String)]) -> Vec<RuleRow> {
    let has = |name: &str| f.iter().any(|(k, _)| k == name);
    let mut rows = Vec::new();
    let mut i = 0;
    while has(&format!("r{i}.treatment")) {
        let mut conditions = Vec::new();
        let mut j = 0;
        while has(&format!("r{i}.c{j}.op")) {
            let p = format!("r{i}.c{j}");
            conditions.push(ConditionRow {
                attribute: field(f, &format!("{p}.attribute")),
                frontegg: field(f, &format!("{p}.type")) == "frontegg",
                negate: field(f, &format!("{p}.negate")) == "on",
                op: field(f, &format!("{p}.op")),
                value: field(f, &format!("{p}.value")),
                end: field(f, &format!("{p}.end")),
                prefix: p,
                key: format!("{i}.{j}"),
                number: j + 1,
            });
            j += 1;
        }
        rows.push(RuleRow {
            prefix: format!("r{i}"),
            index: i,
            number: i + 1,
            description: field(f, &format!("r{i}.description")),
            treatment: field(f, &format!("r{i}.treatment")) == "true",
            conditions,
        });
        i += 1;
    }
    rows
}

/// The REST shape of the builder's rules, for `rules_to_pb`.
fn rules_from_rows(rows: &[RuleRow]) -> Vec<Rule> {
    rows.iter()
        .map(|r| Rule {
            description: r.description.clone(),
            condition_logic: "and".to_owned(),
            treatment: if r.treatment { "true" } else { "false" }.to_owned(),
            conditions: r
                .conditions
                .iter()
                .map(|c| Condition {
                    attribute: c.attribute.clone(),
                    attribute_type: if c.frontegg { "frontegg" } else { "custom" }.to_owned(),
                    negate: c.negate,
                    value: operand(&c.op, &c.value, &c.end),
                    op: c.op.clone(),
                })
                .collect(),
        })
        .collect()
}

/// What a builder button asks for (the form's `action`).
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Save,
    AddRule,
    RemoveRule(usize),
    AddCondition(usize),
    RemoveCondition(usize, usize),
}

fn action(value: &str) -> Result<Action, ApiError> {
    let bad = || ApiError::invalid_field("action", "is not a button of this form");
    let numbers = |rest: &str| -> Result<Vec<usize>, ApiError> {
        rest.split('.')
            .map(|n| n.parse().map_err(|_| bad()))
            .collect()
    };
    match value.split_once(':') {
        None if value == "save" || value.is_empty() => Ok(Action::Save),
        None if value == "add-rule" => Ok(Action::AddRule),
        Some(("remove-rule", n)) => match numbers(n)?.as_slice() {
            [i] => Ok(Action::RemoveRule(*i)),
            _ => Err(bad()),
        },
        Some(("add-condition", n)) => match numbers(n)?.as_slice() {
            [i] => Ok(Action::AddCondition(*i)),
            _ => Err(bad()),
        },
        Some(("remove-condition", n)) => match numbers(n)?.as_slice() {
            [i, j] => Ok(Action::RemoveCondition(*i, *j)),
            _ => Err(bad()),
        },
        Some(_) | None => Err(bad()),
    }
}

/// Applies a row button to the builder's rows (`Save` changes nothing).
fn apply(rows: &mut Vec<RuleRow>, action: &Action) {
    match *action {
        Action::Save => {}
        Action::AddRule => rows.push(RuleRow {
            prefix: String::new(),
            index: 0,
            number: 0,
            description: String::new(),
            treatment: true,
            conditions: vec![blank_condition()],
        }),
        Action::RemoveRule(i) if i < rows.len() => {
            rows.remove(i);
        }
        Action::AddCondition(i) => {
            if let Some(rule) = rows.get_mut(i) {
                rule.conditions.push(blank_condition());
            }
        }
        Action::RemoveCondition(i, j) => {
            if let Some(rule) = rows.get_mut(i).filter(|r| j < r.conditions.len()) {
                rule.conditions.remove(j);
            }
        }
        Action::RemoveRule(_) => {}
    }
    renumber(rows);
}

// ---------------------------------------------------------------------------------------------
// Pages

pub struct FlagRow {
    pub name: String,
    pub feature_key: String,
    pub on: bool,
    pub rules: usize,
    pub href: String,
}

pub struct FeatureOption {
    pub key: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "console/flags.html")]
struct FlagsPage {
    layout: Layout,
    rows: Vec<FlagRow>,
    features: Vec<FeatureOption>,
}

async fn list(State(c): State<Console>, session: SignedIn) -> Result<Response, PageError> {
    let p = session.management()?;
    let flags = c
        .app
        .flags()
        .list_feature_flags(grpc(
            p,
            ListFeatureFlagsRequest {
                page: first_page(200),
                ..ListFeatureFlagsRequest::default()
            },
        ))
        .await?
        .into_inner()
        .feature_flags;
    let features = list_features(&c, p)
        .await?
        .into_iter()
        .map(|f| FeatureOption {
            label: format!("{} ({})", f.name, f.key),
            key: f.key,
        })
        .collect();
    render(&FlagsPage {
        layout: session.layout("Feature flags", "Flags"),
        rows: flags
            .into_iter()
            .map(|f| FlagRow {
                href: format!("/console/flags/{}", encode(&f.id)),
                name: f.name,
                feature_key: f.feature_key,
                on: f.on,
                rules: f.rules.len(),
            })
            .collect(),
        features,
    })
}

async fn create(
    State(c): State<Console>,
    session: SignedIn,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let request = CreateFeatureFlagRequest {
        name: field(&f, "name"),
        on: field(&f, "on") == "on",
        off_treatment: treatment(&field(&f, "off_treatment"), "offTreatment")?.into(),
        default_treatment: treatment(&field(&f, "default_treatment"), "defaultTreatment")?.into(),
        feature: Some(create_feature_flag_request::Feature::FeatureKey(field(
            &f,
            "feature_key",
        ))),
        description: field(&f, "description"),
        ..CreateFeatureFlagRequest::default()
    };
    let flag = c
        .app
        .flags()
        .create_feature_flag(grpc(p, request))
        .await?
        .into_inner()
        .feature_flag
        .ok_or_else(ApiError::internal)?;
    // On to its rules.
    Ok(see(&format!("/console/flags/{}", encode(&flag.id))))
}

pub struct OperatorOption {
    pub name: &'static str,
    pub label: &'static str,
}

#[derive(Template)]
#[template(path = "console/flag.html")]
struct FlagPage {
    layout: Layout,
    href: String,
    feature_key: String,
    name: String,
    description: String,
    on: bool,
    off_treatment: bool,
    default_treatment: bool,
    rules: Vec<RuleRow>,
    operators: Vec<OperatorOption>,
    /// The refusal of the last save, shown above the form that is kept as typed.
    error: Option<ApiError>,
}

impl FlagPage {
    fn error_fields(&self) -> Vec<(String, String)> {
        self.error
            .iter()
            .flat_map(|e| &e.body.field_violations)
            .map(|v| (v.field.clone(), v.description.clone()))
            .collect()
    }
}

fn operators() -> Vec<OperatorOption> {
    OPERATORS
        .iter()
        .map(|(name, label, _)| OperatorOption { name, label })
        .collect()
}

async fn show(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let flag = c
        .app
        .flags()
        .get_feature_flag(grpc(p, GetFeatureFlagRequest { id: id.clone() }))
        .await?
        .into_inner()
        .feature_flag
        .ok_or_else(ApiError::internal)?;
    render(&FlagPage {
        layout: session.layout(format!("Flag {}", flag.name), "Flags"),
        href: format!("/console/flags/{}", encode(&id)),
        off_treatment: treatment_name(flag.off_treatment()) == "true",
        default_treatment: treatment_name(flag.default_treatment()) == "true",
        rules: rows_from_rules(flag.rules.into_iter().map(rule_from_pb).collect()),
        feature_key: flag.feature_key,
        name: flag.name,
        description: flag.description,
        on: flag.on,
        operators: operators(),
        error: None,
    })
}

/// A builder button: a row added or removed (the form again, nothing written), or the flag
/// saved; a refused save shows the form as typed with the API's refusal.
async fn edit(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let action = action(&field(&f, "action"))?;
    let mut rules = rows_from_form(&f);
    apply(&mut rules, &action);
    let mut page = FlagPage {
        layout: session.layout(format!("Flag {}", field(&f, "name")), "Flags"),
        href: format!("/console/flags/{}", encode(&id)),
        feature_key: field(&f, "feature_key"),
        name: field(&f, "name"),
        description: field(&f, "description"),
        on: field(&f, "on") == "on",
        off_treatment: field(&f, "off_treatment") == "true",
        default_treatment: field(&f, "default_treatment") == "true",
        rules,
        operators: operators(),
        error: None,
    };
    if action != Action::Save {
        return render(&page);
    }
    let saved = async {
        let request = UpdateFeatureFlagRequest {
            id: id.clone(),
            name: Some(page.name.clone()),
            on: Some(page.on),
            off_treatment: Some(treatment(&field(&f, "off_treatment"), "offTreatment")?.into()),
            default_treatment: Some(
                treatment(&field(&f, "default_treatment"), "defaultTreatment")?.into(),
            ),
            description: Some(page.description.clone()),
            rules: Some(TargetingRuleList {
                rules: rules_to_pb(rules_from_rows(&page.rules), "rules")?,
            }),
            ..UpdateFeatureFlagRequest::default()
        };
        c.app
            .flags()
            .update_feature_flag(grpc(p, request))
            .await
            .map_err(ApiError::from)
    }
    .await;
    match saved {
        Ok(_) => Ok(see(&page.href)),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            let status = e.status;
            page.error = Some(e);
            render_with(status, &page)
        }
        Err(e) => Err(e.into()),
    }
}

async fn delete(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    write_then_see(&session, "/console/flags", |p| async move {
        let request = DeleteFeatureFlagRequest { id };
        c.app.flags().delete_feature_flag(grpc(&p, request)).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_operator_gets_the_operand_shape_the_api_takes() {
        assert_eq!(OPERATORS.len(), 16);
        let cases = [
            ("in_list", "a, b,,c", "", json!({"list": ["a", "b", "c"]})),
            ("starts_with", "x", "", json!({"list": ["x"]})),
            ("matches", "^a.*$", "", json!({"string": "^a.*$"})),
            ("equal", "3", "", json!({"number": 3})),
            ("lower_than", "2.5", "", json!({"number": 2.5})),
            ("greater_than", "many", "", json!({"number": "many"})),
            ("between_numeric", "1", "9", json!({"start": 1, "end": 9})),
            ("is", "true", "", json!({"boolean": true})),
            (
                "on",
                "2026-03-01",
                "",
                json!({"date": "2026-03-01T00:00:00Z"}),
            ),
            (
                "between_date",
                "2026-01-01",
                "2026-02-01T12:00:00Z",
                json!({"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T12:00:00Z"}),
            ),
        ];
        for (op, value, end, expected) in cases {
            let shaped = operand(op, value, end);
            assert_eq!(shaped, expected, "{op}");
            // And back into the builder's fields (lists re-joined).
            let (v, e) = operand_text(&shaped);
            if op == "in_list" {
                assert_eq!(v, "a, b, c");
            } else if !op.starts_with("between_date") && !op.starts_with("on") {
                assert_eq!((v.as_str(), e.as_str()), (value, end), "{op}");
            }
        }
    }

    #[test]
    fn row_buttons_add_and_remove_rows_and_renumber_them() {
        let f = form(&[
            ("r0.treatment", "true"),
            ("r0.c0.op", "in_list"),
            ("r0.c0.attribute", "plan"),
            ("r0.c0.value", "gold"),
            ("r1.treatment", "false"),
            ("r1.c0.op", "is"),
            ("r1.c0.negate", "on"),
            ("r1.c0.type", "frontegg"),
        ]);
        let mut rows = rows_from_form(&f);
        assert_eq!(rows.len(), 2);
        assert!(rows[1].conditions[0].negate && rows[1].conditions[0].frontegg);
        apply(&mut rows, &action("add-condition:0").unwrap());
        assert_eq!(rows[0].conditions.len(), 2);
        assert_eq!(rows[0].conditions[1].prefix, "r0.c1");
        apply(&mut rows, &action("remove-rule:0").unwrap());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].prefix, "r0");
        assert_eq!(rows[0].conditions[0].prefix, "r0.c0");
        assert!(!rows[0].treatment);
        apply(&mut rows, &action("add-rule").unwrap());
        apply(&mut rows, &action("remove-condition:1.0").unwrap());
        assert!(rows[1].conditions.is_empty());
        assert_eq!(action("save").unwrap(), Action::Save);
        assert!(action("remove-condition:1").is_err());
        assert!(action("drop-table").is_err());
    }

    #[test]
    fn the_builders_rules_are_the_rest_rules() {
        let f = form(&[
            ("r0.treatment", "true"),
            ("r0.description", "beta"),
            ("r0.c0.op", "ends_with"),
            ("r0.c0.attribute", "email"),
            ("r0.c0.type", "frontegg"),
            ("r0.c0.value", "@example.com"),
        ]);
        let rules = rules_from_rows(&rows_from_form(&f));
        let pb = rules_to_pb(rules, "rules").unwrap();
        let back = rows_from_rules(pb.into_iter().map(rule_from_pb).collect());
        assert_eq!(back[0].conditions[0].value, "@example.com");
        assert!(back[0].conditions[0].frontegg && back[0].treatment);
        // An unknown operator is the API's refusal, naming the field.
        let bad = form(&[("r0.treatment", "true"), ("r0.c0.op", "near")]);
        let err = rules_to_pb(rules_from_rows(&rows_from_form(&bad)), "rules").unwrap_err();
        assert_eq!(
            err.body.field_violations[0].field,
            "rules[0].conditions[0].op"
        );
    }
}
