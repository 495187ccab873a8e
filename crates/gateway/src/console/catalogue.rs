//! The catalogue: features and plans (with their features and allocations): list, create,
//! edit, delete. Environment sessions only, as the REST routes; values are checked by the same
//! functions as the REST bodies' (`routes::rules`), so a refusal reads as the API's.

use askama::Template;
use axum::{
    Router,
    extract::{Path, RawForm, State},
    response::Response,
    routing::{get, post},
};
use tenantry_proto::entitlement::v1::{
    self as pb, Allocation, AllocationType, CreateFeatureRequest, CreatePlanRequest,
    DeleteFeatureRequest, DeletePlanRequest, GetFeatureRequest, GetPlanRequest,
    ListFeaturesRequest, ListPlansRequest, MaxCountAllocation, MergePolicy, PlanFeatureInput,
    PlanFeatureInputList, UpdateFeatureRequest, UpdatePlanRequest, allocation::Kind,
    get_feature_request, get_plan_request,
};

use super::{
    Console, Layout, PageError, SignedIn, encode, first_page, render, see, write_then_see,
};
use crate::{
    auth::Principal,
    error::ApiError,
    routes::rules::{allocation_type, allocation_type_name, merge_policy, merge_policy_name},
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/features", get(features).post(create_feature))
        .route("/features/{id}", get(feature).post(update_feature))
        .route("/features/{id}/delete", post(delete_feature))
        .route("/plans", get(plans).post(create_plan))
        .route("/plans/{id}", get(plan).post(update_plan))
        .route("/plans/{id}/delete", post(delete_plan))
}

/// Most items a catalogue page lists.
const LIST_LIMIT: u32 = 200;

pub struct FeatureRow {
    pub key: String,
    pub name: String,
    /// The type; a metered feature's with its unit and period (`metered: api_call per P1M`).
    pub kind: String,
    pub description: String,
    pub href: String,
    pub delete_action: String,
}

#[derive(Template)]
#[template(path = "console/features.html")]
struct FeaturesPage {
    layout: Layout,
    rows: Vec<FeatureRow>,
}

/// The features list's type column: a metered feature's with what it counts and how often its
/// balance resets.
fn kind_label(f: &pb::Feature) -> String {
    match &f.metering {
        Some(m) => format!(
            "{}: {} per {}",
            allocation_type_name(f.allocation_type()),
            m.unit,
            m.recurrence
        ),
        None => allocation_type_name(f.allocation_type()).to_owned(),
    }
}

pub(super) async fn list_features(
    c: &Console,
    p: &crate::auth::Principal,
) -> Result<Vec<pb::Feature>, PageError> {
    Ok(c.app
        .features()
        .list_features(grpc(
            p,
            ListFeaturesRequest {
                page: first_page(LIST_LIMIT),
                ..ListFeaturesRequest::default()
            },
        ))
        .await?
        .into_inner()
        .features)
}

async fn features(State(c): State<Console>, session: SignedIn) -> Result<Response, PageError> {
    let p = session.management()?;
    let rows = list_features(&c, p)
        .await?
        .into_iter()
        .map(|f| FeatureRow {
            kind: kind_label(&f),
            delete_action: format!("/console/features/{}/delete", encode(&f.id)),
            href: format!("/console/features/{}", encode(&f.id)),
            key: f.key,
            name: f.name,
            description: f.description,
        })
        .collect();
    render(&FeaturesPage {
        layout: session.layout("Features", "Features"),
        rows,
    })
}

/// Form fields in order (repeated keys kept: a plan's feature checkboxes).
pub(super) fn fields(form: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    serde_urlencoded::from_bytes(form)
        .map_err(|_| PageError(ApiError::bad_request("the form is not URL-encoded")))
}

/// A comma-separated list field.
pub(super) fn list_field(f: &[(String, String)], name: &str) -> Vec<String> {
    field(f, name)
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

async fn create_feature(
    State(c): State<Console>,
    session: SignedIn,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let allocation_type = match field(&f, "type").as_str() {
        "" => AllocationType::Bool,
        kind => allocation_type(kind, "type")?,
    };
    c.app
        .features()
        .create_feature(grpc(
            p,
            CreateFeatureRequest {
                key: field(&f, "key"),
                name: field(&f, "name"),
                description: field(&f, "description"),
                metadata: None,
                permissions: Vec::new(),
                allocation_type: allocation_type.into(),
                merge_policy: MergePolicy::Unspecified.into(),
                metering: None,
                idempotency_key: None,
            },
        ))
        .await?;
    Ok(see("/console/features"))
}

#[derive(Template)]
#[template(path = "console/feature.html")]
struct FeaturePage {
    layout: Layout,
    href: String,
    key: String,
    name: String,
    description: String,
    max_count: bool,
    /// A metered feature stays metered: its form sends the type back unchanged.
    metered: bool,
    merge: &'static str,
}

async fn feature(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = c
        .app
        .features()
        .get_feature(grpc(
            p,
            GetFeatureRequest {
                selector: Some(get_feature_request::Selector::Id(id.clone())),
            },
        ))
        .await?
        .into_inner()
        .feature
        .ok_or_else(ApiError::internal)?;
    render(&FeaturePage {
        layout: session.layout(format!("Feature {}", f.key), "Features"),
        href: format!("/console/features/{}", encode(&id)),
        max_count: f.allocation_type() == AllocationType::MaxCount,
        metered: f.allocation_type() == AllocationType::Metered,
        merge: merge_policy_name(f.merge_policy()).unwrap_or(""),
        key: f.key,
        name: f.name,
        description: f.description,
    })
}

/// Changes a feature's key, name, description, type and merge policy (the REST PATCH's
/// fields; the service refuses a type change while plans allocate the old type).
async fn update_feature(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let merge = field(&f, "merge_policy");
    let request = UpdateFeatureRequest {
        id,
        key: Some(field(&f, "key")),
        name: Some(field(&f, "name")),
        description: Some(field(&f, "description")),
        metadata: None,
        permissions: None,
        allocation_type: Some(allocation_type(&field(&f, "type"), "type")?.into()),
        // Empty: the feature's policy is kept.
        merge_policy: (!merge.is_empty())
            .then(|| merge_policy(&merge, "mergePolicy").map(i32::from))
            .transpose()?,
        metering: None,
    };
    c.app.features().update_feature(grpc(p, request)).await?;
    Ok(see("/console/features"))
}

async fn delete_feature(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let request = DeleteFeatureRequest {
        id,
        ..DeleteFeatureRequest::default()
    };
    write_then_see(&session, "/console/features", |p| async move {
        c.app.features().delete_feature(grpc(&p, request)).await
    })
    .await
}

pub struct PlanRow {
    pub key: String,
    pub name: String,
    pub features: String,
    pub inherit: bool,
    pub href: String,
    pub delete_action: String,
}

pub struct FeatureChoice {
    pub key: String,
    pub label: String,
    pub max_count: bool,
    /// The form field holding this feature's count (max_count features).
    pub count_field: String,
    /// Whether the plan being edited holds it, and its count as typed.
    pub held: bool,
    pub count: String,
}

#[derive(Template)]
#[template(path = "console/plans.html")]
struct PlansPage {
    layout: Layout,
    rows: Vec<PlanRow>,
    features: Vec<FeatureChoice>,
}

fn allocation_text(a: Option<&Allocation>) -> String {
    match a.and_then(|a| a.kind.as_ref()) {
        Some(Kind::MaxCountAllocation(m)) if m.unlimited => " (unlimited)".to_owned(),
        Some(Kind::MaxCountAllocation(m)) => format!(" ({})", m.value),
        Some(Kind::BoolAllocation(b)) if !b.value => " (off)".to_owned(),
        Some(Kind::BoolAllocation(_)) | None => String::new(),
    }
}

async fn plans(State(c): State<Console>, session: SignedIn) -> Result<Response, PageError> {
    let p = session.management()?;
    let out = c
        .app
        .plans()
        .list_plans(grpc(
            p,
            ListPlansRequest {
                page: first_page(LIST_LIMIT),
                ..ListPlansRequest::default()
            },
        ))
        .await?
        .into_inner();
    let rows = out
        .plans
        .into_iter()
        .map(|plan| PlanRow {
            features: plan
                .features
                .iter()
                .map(|f| {
                    format!(
                        "{}{}",
                        f.feature_key,
                        allocation_text(f.allocation.as_ref())
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            inherit: plan.inherit_to_sub_accounts,
            delete_action: format!("/console/plans/{}/delete", encode(&plan.id)),
            href: format!("/console/plans/{}", encode(&plan.id)),
            key: plan.key,
            name: plan.name,
        })
        .collect();
    let features = feature_choices(&c, p, &[]).await?;
    render(&PlansPage {
        layout: session.layout("Plans", "Plans"),
        rows,
        features,
    })
}

/// Every feature of the catalogue as a plan form's choice, ticked (with its count) when
/// `held` holds it.
async fn feature_choices(
    c: &Console,
    p: &Principal,
    held: &[pb::PlanFeature],
) -> Result<Vec<FeatureChoice>, PageError> {
    Ok(list_features(c, p)
        .await?
        .into_iter()
        .map(|f| {
            let holding = held.iter().find(|h| h.feature_key == f.key);
            FeatureChoice {
                // A metered feature is allocated a count too: the amount issued each period.
                max_count: matches!(
                    f.allocation_type(),
                    AllocationType::MaxCount | AllocationType::Metered
                ),
                count_field: format!("count:{}", f.key),
                label: format!("{} ({})", f.name, f.key),
                held: holding.is_some(),
                count: holding
                    .and_then(|h| h.allocation.as_ref())
                    .and_then(|a| a.kind.as_ref())
                    .map(|k| match k {
                        Kind::MaxCountAllocation(m) if m.unlimited => "unlimited".to_owned(),
                        Kind::MaxCountAllocation(m) => m.value.to_string(),
                        Kind::BoolAllocation(_) => String::new(),
                    })
                    .unwrap_or_default(),
                key: f.key,
            }
        })
        .collect())
}

#[derive(Template)]
#[template(path = "console/plan.html")]
struct PlanPage {
    layout: Layout,
    href: String,
    key: String,
    name: String,
    description: String,
    inherit: bool,
    features: Vec<FeatureChoice>,
}

async fn plan(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let plan = c
        .app
        .plans()
        .get_plan(grpc(
            p,
            GetPlanRequest {
                selector: Some(get_plan_request::Selector::Id(id.clone())),
            },
        ))
        .await?
        .into_inner()
        .plan
        .ok_or_else(ApiError::internal)?;
    render(&PlanPage {
        layout: session.layout(format!("Plan {}", plan.key), "Plans"),
        href: format!("/console/plans/{}", encode(&id)),
        features: feature_choices(&c, p, &plan.features).await?,
        key: plan.key,
        name: plan.name,
        description: plan.description,
        inherit: plan.inherit_to_sub_accounts,
    })
}

/// Changes a plan's key, name, description, inheritance and its whole feature set with
/// counts (the REST PATCH's `features`).
async fn update_plan(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let request = UpdatePlanRequest {
        id,
        key: Some(field(&f, "key")),
        name: Some(field(&f, "name")),
        description: Some(field(&f, "description")),
        features: Some(PlanFeatureInputList {
            features: plan_features(&f)?,
        }),
        inherit_to_sub_accounts: Some(field(&f, "inherit") == "on"),
        ..UpdatePlanRequest::default()
    };
    c.app.plans().update_plan(grpc(p, request)).await?;
    Ok(see("/console/plans"))
}

/// The ticked features of a plan form with their counts (`count:<key>`), numbered as the
/// REST body's `features[i]`.
fn plan_features(f: &[(String, String)]) -> Result<Vec<PlanFeatureInput>, PageError> {
    let mut features = Vec::new();
    for (i, key) in f
        .iter()
        .filter(|(k, _)| k == "feature")
        .map(|(_, v)| v.clone())
        .enumerate()
    {
        // A count for a max_count feature: a number, `unlimited`, or empty for the
        // feature's default.
        let count = field(f, &format!("count:{key}"));
        let allocation = match count.as_str() {
            "" => None,
            "unlimited" => Some(Kind::MaxCountAllocation(MaxCountAllocation {
                value: 0,
                unlimited: true,
            })),
            n => Some(Kind::MaxCountAllocation(MaxCountAllocation {
                value: n.parse().map_err(|_| {
                    ApiError::invalid_field(
                        &format!("features[{i}].allocation.value"),
                        "must be a whole number or unlimited",
                    )
                })?,
                unlimited: false,
            })),
        };
        features.push(PlanFeatureInput {
            feature_key: key,
            allocation: allocation.map(|kind| Allocation { kind: Some(kind) }),
        });
    }
    Ok(features)
}

async fn create_plan(
    State(c): State<Console>,
    session: SignedIn,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let features = plan_features(&f)?;
    let key = field(&f, "key");
    c.app
        .plans()
        .create_plan(grpc(
            p,
            CreatePlanRequest {
                key: (!key.is_empty()).then_some(key),
                name: field(&f, "name"),
                description: field(&f, "description"),
                features,
                inherit_to_sub_accounts: field(&f, "inherit") == "on",
                ..CreatePlanRequest::default()
            },
        ))
        .await?;
    Ok(see("/console/plans"))
}

async fn delete_plan(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let request = DeletePlanRequest { id, force: false };
    write_then_see(&session, "/console/plans", |p| async move {
        c.app.plans().delete_plan(grpc(&p, request)).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metered_feature_lists_its_unit_and_period() {
        let metered = pb::Feature {
            allocation_type: AllocationType::Metered.into(),
            metering: Some(pb::Metering {
                unit: "api_call".into(),
                recurrence: "P1M".into(),
                ..pb::Metering::default()
            }),
            ..pb::Feature::default()
        };
        assert_eq!(kind_label(&metered), "metered: api_call per P1M");
        let seats = pb::Feature {
            allocation_type: AllocationType::MaxCount.into(),
            ..pb::Feature::default()
        };
        assert_eq!(kind_label(&seats), "max_count");
    }
}
