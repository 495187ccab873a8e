//! The catalogue: features and plans (with their features and allocations): list, create,
//! delete. Environment sessions only, as the REST routes.

use askama::Template;
use axum::{
    Router,
    extract::{Path, RawForm, State},
    response::Response,
    routing::{get, post},
};
use tenantry_proto::{
    common::v1::PageRequest,
    entitlement::v1::{
        self as pb, Allocation, AllocationType, CreateFeatureRequest, CreatePlanRequest,
        DeleteFeatureRequest, DeletePlanRequest, ListFeaturesRequest, ListPlansRequest,
        MaxCountAllocation, MergePolicy, PlanFeatureInput, allocation::Kind,
    },
};

use super::{Console, Layout, PageError, SignedIn, encode, render, see};
use crate::{error::ApiError, state::grpc};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/features", get(features).post(create_feature))
        .route("/features/{id}/delete", post(delete_feature))
        .route("/plans", get(plans).post(create_plan))
        .route("/plans/{id}/delete", post(delete_plan))
}

/// Most items a catalogue page lists.
const LIST_LIMIT: u32 = 200;

pub struct FeatureRow {
    pub key: String,
    pub name: String,
    pub kind: &'static str,
    pub description: String,
    pub delete_action: String,
}

#[derive(Template)]
#[template(path = "console/features.html")]
struct FeaturesPage {
    layout: Layout,
    rows: Vec<FeatureRow>,
}

fn kind_text(t: AllocationType) -> &'static str {
    match t {
        AllocationType::MaxCount => "max_count",
        AllocationType::Bool | AllocationType::Unspecified => "bool",
    }
}

async fn list_features(
    c: &Console,
    p: &crate::auth::Principal,
) -> Result<Vec<pb::Feature>, PageError> {
    Ok(c.app
        .features()
        .list_features(grpc(
            p,
            ListFeaturesRequest {
                page: Some(PageRequest {
                    limit: Some(LIST_LIMIT),
                    offset: 0,
                }),
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
            kind: kind_text(f.allocation_type()),
            delete_action: format!("/console/features/{}/delete", encode(&f.id)),
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
fn fields(form: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    serde_urlencoded::from_bytes(form)
        .map_err(|_| PageError(ApiError::bad_request("the form is not URL-encoded")))
}

fn field(fields: &[(String, String)], name: &str) -> String {
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
        "" | "bool" => AllocationType::Bool,
        "max_count" => AllocationType::MaxCount,
        _ => {
            return Err(ApiError::invalid_field("type", "must be bool or max_count").into());
        }
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
                idempotency_key: None,
            },
        ))
        .await?;
    Ok(see("/console/features"))
}

async fn delete_feature(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    c.app
        .features()
        .delete_feature(grpc(
            p,
            DeleteFeatureRequest {
                id,
                ..DeleteFeatureRequest::default()
            },
        ))
        .await?;
    Ok(see("/console/features"))
}

pub struct PlanRow {
    pub key: String,
    pub name: String,
    pub features: String,
    pub inherit: bool,
    pub delete_action: String,
}

pub struct FeatureChoice {
    pub key: String,
    pub label: String,
    pub max_count: bool,
    /// The form field holding this feature's count (max_count features).
    pub count_field: String,
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
                page: Some(PageRequest {
                    limit: Some(LIST_LIMIT),
                    offset: 0,
                }),
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
            key: plan.key,
            name: plan.name,
        })
        .collect();
    let features = list_features(&c, p)
        .await?
        .into_iter()
        .map(|f| FeatureChoice {
            max_count: f.allocation_type() == AllocationType::MaxCount,
            count_field: format!("count:{}", f.key),
            label: format!("{} ({})", f.name, f.key),
            key: f.key,
        })
        .collect();
    render(&PlansPage {
        layout: session.layout("Plans", "Plans"),
        rows,
        features,
    })
}

async fn create_plan(
    State(c): State<Console>,
    session: SignedIn,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let mut features = Vec::new();
    for (i, key) in f
        .iter()
        .filter(|(k, _)| k == "feature")
        .map(|(_, v)| v.clone())
        .enumerate()
    {
        // A count for a max_count feature: a number, `unlimited`, or empty for the
        // feature's default.
        let count = field(&f, &format!("count:{key}"));
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
    let p = session.management()?;
    c.app
        .plans()
        .delete_plan(grpc(p, DeletePlanRequest { id, force: false }))
        .await?;
    Ok(see("/console/plans"))
}
