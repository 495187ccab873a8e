//! Accounts: the searchable, paged list; an account's page (profile, metadata, its sub-account
//! tree, effective entitlements with why, grants); create, edit, delete, metadata, attach and
//! detach sub-accounts, grant and revoke plans.
//!
//! The authorisation is the REST API's: the list and every write are environment-only
//! (`Management`); an account's page follows the self-service rule (`scope::ensure_account`,
//! the sub-account tree filtered by `scope::readable`, entitlements as seed 004's route gives
//! them to a user), so a user session sees its own account and the sub-accounts its hierarchy
//! settings let it reach, nothing else.

use askama::Template;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::Value as Json;
use tenantry_proto::{
    common::v1::{NullableTimestamp, PageRequest},
    entitlement::v1::{
        Allocation, AmountDecision, BatchIsEntitledToRequest, CreateGrantRequest, EntitlementQuery,
        FeatureChange, GetAccountEntitlementsRequest, GrantLevel, GrantPatch, GrantStatus,
        HypotheticalChange, ListFeaturesRequest, ListGrantsRequest, ListPlansRequest, MeterReading,
        NewGrant, Provenance, RevokeGrantRequest, Subject, UpdateGrantRequest, WhatIfRequest,
        allocation::Kind, entitlement_query::Target, hypothetical_change::Change, new_grant,
    },
    tenant::v1::{
        self as pb, AccountSortField, AddAccountMetadataRequest, AttachSubAccountRequest,
        CreateAccountRequest, DetachSubAccountRequest, GetSubtreeRequest, ListAccountsRequest,
        UpdateAccountRequest,
    },
};

use super::{
    Console, Layout, PageError, SignedIn, account_href,
    catalogue::{field, fields},
    encode, first_page, members, render, see, write_then_see,
};
use crate::{
    auth::{Principal, scope},
    convert::{json_to_value, metadata_to_struct, opt_struct_to_json, opt_timestamp},
    error::ApiError,
    routes::checks::justification_name,
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/accounts", get(list).post(create))
        .route("/accounts/{id}", get(show).post(update))
        .route("/accounts/{id}/delete", post(delete))
        .route("/accounts/{id}/metadata", post(add_metadata))
        .route("/accounts/{id}/sub-accounts", post(attach))
        .route("/accounts/{id}/sub-accounts/{child}/detach", post(detach))
        .route("/accounts/{id}/grants", post(grant))
        .route("/accounts/{id}/grants/{grant}/revoke", post(revoke))
        .route("/accounts/{id}/grants/{grant}/dates", post(change_dates))
        .route("/grants", post(grant_selection))
        .route("/accounts/{id}/what-if", get(what_if))
        .route("/accounts/{id}/revoke-plan", post(revoke_plan))
}

/// Accounts per page of the list.
const PAGE_SIZE: u32 = 20;
/// Most sub-accounts an account's tree shows.
const TREE_NODES: u32 = 200;

/// Text form fields: empty means absent.
fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// The list

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    page: Option<u32>,
}

pub struct AccountRow {
    pub tenant_id: String,
    pub href: String,
    pub name: String,
    pub parent: String,
    pub status: String,
    pub created_at: String,
}

impl From<pb::Account> for AccountRow {
    fn from(a: pb::Account) -> Self {
        Self {
            href: account_href(&a.tenant_id),
            tenant_id: a.tenant_id,
            name: a.name,
            parent: a.parent_tenant_id.unwrap_or_default(),
            status: a.status.unwrap_or_default(),
            created_at: opt_timestamp(a.created_at).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/accounts.html")]
struct AccountsPage {
    layout: Layout,
    q: String,
    rows: Vec<AccountRow>,
    page: u32,
    pages: u64,
    total: u64,
    prev: Option<String>,
    next: Option<String>,
    /// The plans the selection form can grant.
    plans: Vec<PlanChoice>,
}

async fn list(
    State(c): State<Console>,
    session: SignedIn,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let q = given(query.q).unwrap_or_default();
    let (filter, metadata) = parse_search(&q);
    let page = query.page.unwrap_or(1).max(1);
    let out = c
        .app
        .tenants()
        .list_accounts(grpc(
            p,
            ListAccountsRequest {
                page: Some(PageRequest {
                    limit: Some(PAGE_SIZE),
                    offset: (page - 1).saturating_mul(PAGE_SIZE),
                }),
                filter,
                sort_by: AccountSortField::Name.into(),
                order: 0,
                tenant_ids: Vec::new(),
                metadata,
            },
        ))
        .await?
        .into_inner();
    let info = out.page.unwrap_or_default();
    let link = |n: u32| format!("/console/accounts?q={}&page={n}", encode(&q));
    render(&AccountsPage {
        layout: session.layout("Accounts", "Accounts"),
        rows: out.accounts.into_iter().map(AccountRow::from).collect(),
        page,
        pages: info.total_pages.max(1),
        total: info.total_items,
        prev: (page > 1).then(|| link(page - 1)),
        next: info.has_next.then(|| link(page + 1)),
        plans: plan_choices(&c, p).await?,
        q,
    })
}

/// The search box: a word `key=value` is a metadata pair (the key ends at the first `=`), the
/// other words are the name or ID filter. Double quotes keep spaces in a word:
/// `region=eu "plan tier"="gold plus" acme`.
fn parse_search(q: &str) -> (Option<String>, Vec<pb::MetadataMatch>) {
    let mut words: Vec<String> = Vec::new();
    let mut metadata = Vec::new();
    let mut finish = |word: String, eq: Option<usize>| match eq {
        Some(at) if at > 0 => metadata.push(pb::MetadataMatch {
            key: word[..at].to_owned(),
            value: word[at + 1..].to_owned(),
        }),
        _ if word.is_empty() => {}
        _ => words.push(word),
    };
    let (mut word, mut eq, mut quoted, mut started) = (String::new(), None, false, false);
    for c in q.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    finish(std::mem::take(&mut word), eq.take());
                }
                started = false;
            }
            c => {
                if c == '=' && !quoted && eq.is_none() {
                    eq = Some(word.len());
                }
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        finish(word, eq);
    }
    let filter = (!words.is_empty()).then(|| words.join(" "));
    (filter, metadata)
}

#[derive(Deserialize)]
pub struct NewAccountForm {
    tenant_id: Option<String>,
    name: Option<String>,
    parent_tenant_id: Option<String>,
}

async fn create(
    State(c): State<Console>,
    session: SignedIn,
    Form(form): Form<NewAccountForm>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let account = pb::NewAccount {
        tenant_id: given(form.tenant_id),
        name: given(form.name).unwrap_or_default(),
        parent_tenant_id: given(form.parent_tenant_id),
        ..pb::NewAccount::default()
    };
    let out = c
        .app
        .tenants()
        .create_account(grpc(
            p,
            CreateAccountRequest {
                account: Some(account),
                idempotency_key: None,
            },
        ))
        .await?
        .into_inner();
    let account = out.account.ok_or_else(ApiError::internal)?;
    Ok(see(&account_href(&account.tenant_id)))
}

// ---------------------------------------------------------------------------------------------
// One account

/// One step of the sub-account tree, rendered flat: `ul`/`/ul` open and close a level,
/// `li`/`/li` an account (askama has no recursive blocks).
pub struct TreeStep {
    pub kind: &'static str,
    pub row: Option<AccountRow>,
    pub current: bool,
}

fn tree_steps(
    node: pb::HierarchyTreeNode,
    current: &str,
    allowed: Option<&std::collections::HashSet<String>>,
    out: &mut Vec<TreeStep>,
) {
    let Some(account) = node
        .account
        .filter(|a| allowed.is_none_or(|set| set.contains(&a.tenant_id)))
    else {
        return;
    };
    let is_current = account.tenant_id == current;
    out.push(TreeStep {
        kind: "li",
        row: Some(AccountRow::from(account)),
        current: is_current,
    });
    if !node.children.is_empty() {
        out.push(step("ul"));
        for child in node.children {
            tree_steps(child, current, allowed, out);
        }
        out.push(step("/ul"));
    }
    out.push(step("/li"));
}

fn step(kind: &'static str) -> TreeStep {
    TreeStep {
        kind,
        row: None,
        current: false,
    }
}

fn tree_ids<'a>(node: &'a pb::HierarchyTreeNode, out: &mut Vec<&'a str>) {
    if let Some(a) = &node.account {
        out.push(&a.tenant_id);
    }
    for child in &node.children {
        tree_ids(child, out);
    }
}

pub struct EntitlementRow {
    pub feature_key: String,
    pub entitled: bool,
    pub allocation: String,
    pub why: String,
    pub next_change: String,
}

pub struct GrantRow {
    pub plan_key: String,
    /// The user of a user grant; empty for the account's.
    pub user: String,
    pub status: String,
    pub starts_at: String,
    pub expires_at: String,
    pub granted_by: String,
    /// Active or scheduled: it can be revoked, extended or rescheduled.
    pub revocable: bool,
    pub revoke_action: String,
    pub dates_action: String,
}

pub struct PlanChoice {
    pub id: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    layout: Layout,
    manage: bool,
    href: String,
    account: AccountRow,
    website: String,
    metadata: Vec<(String, String)>,
    tree: Vec<TreeStep>,
    truncated: bool,
    children: Vec<AccountRow>,
    entitlements: Vec<EntitlementRow>,
    grants: Vec<GrantRow>,
    plans: Vec<PlanChoice>,
    /// `None` for a user session (members are environment-only, as in the REST API).
    members: Option<Vec<members::MemberRow>>,
    settings: Vec<members::SettingRow>,
    settings_editable: bool,
}

async fn show(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = &session.principal;
    // The self-service rule: a user session reaches its account and the sub-accounts its
    // hierarchy settings open; the same 403 otherwise, whether the account exists or not.
    scope::ensure_account(&c.app, p, &id).await?;
    let subtree = c
        .app
        .hierarchy()
        .get_subtree(grpc(
            p,
            GetSubtreeRequest {
                tenant_id: id.clone(),
                max_nodes: Some(TREE_NODES),
            },
        ))
        .await?
        .into_inner();
    let root = subtree.root.ok_or_else(ApiError::internal)?;
    let mut ids = Vec::new();
    tree_ids(&root, &mut ids);
    let allowed = scope::readable(&c.app, p, ids).await?;
    let account = root.account.clone().ok_or_else(ApiError::internal)?;
    let children: Vec<AccountRow> = root
        .children
        .iter()
        .filter_map(|n| n.account.clone())
        .filter(|a| {
            allowed
                .as_ref()
                .is_none_or(|set| set.contains(&a.tenant_id))
        })
        .map(AccountRow::from)
        .collect();
    // Inside the template's own list element.
    let mut tree = Vec::new();
    tree_steps(root, &id, allowed.as_ref(), &mut tree);

    let entitlements = entitlements(&c, p, &id).await?;
    let members = members::members(&c, p, &id).await?;
    let (settings, settings_editable) = members::settings(&c, p, &id).await?;
    let (grants, plans) = if session.is_management() {
        (grants(&c, p, &id).await?, plan_choices(&c, p).await?)
    } else {
        (Vec::new(), Vec::new())
    };
    let metadata = match opt_struct_to_json(account.metadata.clone()) {
        Json::Object(map) => map.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
        // Metadata is always an object; anything else is shown whole.
        other @ (Json::Null
        | Json::Bool(_)
        | Json::Number(_)
        | Json::String(_)
        | Json::Array(_)) => vec![(String::new(), other.to_string())],
    };
    let website = account.website.clone().unwrap_or_default();
    let row = AccountRow::from(account);
    render(&AccountPage {
        layout: session.layout(
            format!("Account {}", row.name),
            if session.is_management() {
                "Accounts"
            } else {
                "My account"
            },
        ),
        manage: session.is_management(),
        href: row.href.clone(),
        account: row,
        website,
        metadata,
        tree,
        truncated: subtree.truncated,
        children,
        entitlements,
        grants,
        plans,
        members,
        settings,
        settings_editable,
    })
}

/// Every effective feature with its allocation and why (the deciding grant, as the check
/// API's provenance gives it); with an environment session also every other feature of the
/// catalogue with why not (the check API's justification).
async fn entitlements(
    c: &Console,
    p: &Principal,
    tenant_id: &str,
) -> Result<Vec<EntitlementRow>, PageError> {
    // A user's own grants count too, as seed 004's route answers a user token.
    let user_id = match p {
        Principal::User { user_id, .. } => Some(user_id.clone()),
        Principal::Environment { .. } => None,
    };
    let answer = c
        .app
        .checks()
        .get_account_entitlements(grpc(
            p,
            GetAccountEntitlementsRequest {
                tenant_id: tenant_id.to_owned(),
                user_id,
                attributes: None,
                at: None,
                min_revision: 0,
            },
        ))
        .await;
    let effective = match answer {
        Ok(out) => out.into_inner().entitlements,
        // The entitlement service learns of accounts from the tenant feed: an account created
        // a moment ago may not have reached it yet, and holds nothing there until it has.
        Err(status) if status.code() == tonic::Code::NotFound => Vec::new(),
        Err(status) => return Err(status.into()),
    };
    let mut rows: Vec<EntitlementRow> = effective
        .into_iter()
        .map(|e| EntitlementRow {
            why: why(e.provenance.as_ref()),
            allocation: allocation_text(e.allocation),
            next_change: opt_timestamp(e.next_change_at).unwrap_or_default(),
            feature_key: e.feature_key,
            entitled: true,
        })
        .collect();
    if matches!(p, Principal::Environment { .. }) {
        let features = c
            .app
            .features()
            .list_features(grpc(
                p,
                ListFeaturesRequest {
                    page: first_page(200),
                    ..ListFeaturesRequest::default()
                },
            ))
            .await?
            .into_inner()
            .features;
        let missing: Vec<String> = features
            .into_iter()
            .map(|f| f.key)
            .filter(|k| !rows.iter().any(|r| &r.feature_key == k))
            .collect();
        if !missing.is_empty() {
            let queries = missing
                .iter()
                .map(|key| EntitlementQuery {
                    subject: Some(Subject {
                        tenant_id: tenant_id.to_owned(),
                        ..Subject::default()
                    }),
                    target: Some(Target::FeatureKey(key.clone())),
                    at: None,
                    requested_amount: None,
                })
                .collect();
            let answers = c
                .app
                .checks()
                .batch_is_entitled_to(grpc(
                    p,
                    BatchIsEntitledToRequest {
                        queries,
                        min_revision: 0,
                    },
                ))
                .await?
                .into_inner();
            for (key, d) in missing.into_iter().zip(answers.decisions) {
                let reason = justification_name(d.justification()).unwrap_or("MISSING_FEATURE");
                let closest = d
                    .provenance
                    .as_ref()
                    .filter(|p| !p.plan_key.is_empty())
                    .map(|p| format!(" (closest: plan {})", p.plan_key))
                    .unwrap_or_default();
                rows.push(EntitlementRow {
                    feature_key: key,
                    entitled: d.result,
                    allocation: allocation_text(d.allocation),
                    why: format!("{reason}{closest}"),
                    next_change: opt_timestamp(d.next_change_at).unwrap_or_default(),
                });
            }
        }
        rows.sort_by(|a, b| a.feature_key.cmp(&b.feature_key));
    }
    Ok(rows)
}

fn why(p: Option<&Provenance>) -> String {
    let Some(p) = p else {
        return "no grant involved".to_owned();
    };
    let grant = if p.grant_id.is_empty() {
        String::new()
    } else {
        format!(" (grant {})", p.grant_id)
    };
    match p.level() {
        GrantLevel::Account => format!("plan {} granted to this account{grant}", p.plan_key),
        GrantLevel::User => format!("plan {} granted to the user{grant}", p.plan_key),
        GrantLevel::Ancestor => format!(
            "plan {} granted to ancestor account {} and inherited{grant}",
            p.plan_key, p.granted_tenant_id
        ),
        GrantLevel::Targeting => format!(
            "plan {} targets this account (its rules or default treatment)",
            p.plan_key
        ),
        GrantLevel::Unspecified => format!("plan {}{grant}", p.plan_key),
    }
}

fn allocation_text(a: Option<Allocation>) -> String {
    match a.and_then(|a| a.kind) {
        Some(Kind::BoolAllocation(b)) => if b.value { "on" } else { "off" }.to_owned(),
        Some(Kind::MaxCountAllocation(m)) if m.unlimited => "unlimited".to_owned(),
        Some(Kind::MaxCountAllocation(m)) => m.value.to_string(),
        None => "—".to_owned(),
    }
}

fn status_text(s: GrantStatus) -> &'static str {
    match s {
        GrantStatus::Unspecified => "unknown",
        GrantStatus::Active => "active",
        GrantStatus::Scheduled => "scheduled",
        GrantStatus::Expired => "expired",
        GrantStatus::Revoked => "revoked",
    }
}

/// The account's grant history, newest first (every status).
async fn grants(c: &Console, p: &Principal, tenant_id: &str) -> Result<Vec<GrantRow>, PageError> {
    let out = c
        .app
        .grants()
        .list_grants(grpc(
            p,
            ListGrantsRequest {
                page: first_page(100),
                tenant_ids: vec![tenant_id.to_owned()],
                order: tenantry_proto::common::v1::SortOrder::Desc.into(),
                ..ListGrantsRequest::default()
            },
        ))
        .await?
        .into_inner();
    Ok(out
        .grants
        .into_iter()
        .map(|g| {
            let status = g.status();
            GrantRow {
                revoke_action: format!(
                    "/console/accounts/{}/grants/{}/revoke",
                    encode(tenant_id),
                    encode(&g.id)
                ),
                dates_action: format!(
                    "/console/accounts/{}/grants/{}/dates",
                    encode(tenant_id),
                    encode(&g.id)
                ),
                revocable: matches!(status, GrantStatus::Active | GrantStatus::Scheduled),
                user: g.user_id.unwrap_or_default(),
                status: status_text(status).to_owned(),
                starts_at: opt_timestamp(g.starts_at).unwrap_or_default(),
                expires_at: opt_timestamp(g.expires_at).unwrap_or_else(|| "never".to_owned()),
                granted_by: g.granted_by,
                plan_key: g.plan_key,
            }
        })
        .collect())
}

async fn plan_choices(c: &Console, p: &Principal) -> Result<Vec<PlanChoice>, PageError> {
    let out = c
        .app
        .plans()
        .list_plans(grpc(
            p,
            ListPlansRequest {
                page: first_page(200),
                ..ListPlansRequest::default()
            },
        ))
        .await?
        .into_inner();
    Ok(out
        .plans
        .into_iter()
        .map(|plan| PlanChoice {
            label: format!("{} ({})", plan.name, plan.key),
            id: plan.id,
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Writes on one account (environment sessions, as the REST routes)

/// A write on one account, then the account's page.
async fn write_then_show<T, E, Fut>(
    session: &SignedIn,
    id: &str,
    call: impl FnOnce(Principal) -> Fut,
) -> Result<Response, PageError>
where
    Fut: Future<Output = Result<T, E>>,
    PageError: From<E>,
{
    write_then_see(session, &account_href(id), call).await
}

#[derive(Deserialize)]
pub struct UpdateForm {
    name: Option<String>,
    website: Option<String>,
}

async fn update(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<UpdateForm>,
) -> Result<Response, PageError> {
    let request = UpdateAccountRequest {
        tenant_id: id.clone(),
        // A blank name is the service's to refuse, with the API's message.
        name: form.name.map(|n| n.trim().to_owned()),
        // An empty string clears an optional field, as in the API.
        website: form.website.map(|w| w.trim().to_owned()),
        ..UpdateAccountRequest::default()
    };
    write_then_show(&session, &id, |p| async move {
        c.app.tenants().update_account(grpc(&p, request)).await
    })
    .await
}

async fn delete(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    // The deleted account's JSON is the REST answer; the console shows the list instead.
    let _deleted = crate::routes::accounts::delete(&c.app, p, id).await?;
    Ok(see("/console/accounts"))
}

#[derive(Deserialize)]
pub struct MetadataForm {
    key: String,
    value: String,
}

async fn add_metadata(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<MetadataForm>,
) -> Result<Response, PageError> {
    // A value that reads as JSON is kept as such (`10`, `true`, `{"a": 1}`), else a string.
    let value = serde_json::from_str(&form.value).unwrap_or(Json::String(form.value));
    let mut map = serde_json::Map::new();
    map.insert(form.key.trim().to_owned(), value);
    let metadata = Json::Object(map);
    // Refused here when over the limits, as the REST route does.
    metadata_to_struct(Some(metadata.clone()), "metadata")?;
    let request = AddAccountMetadataRequest {
        tenant_id: id.clone(),
        metadata: Some(json_to_value(metadata)),
    };
    write_then_show(&session, &id, |p| async move {
        c.app
            .tenants()
            .add_account_metadata(grpc(&p, request))
            .await
    })
    .await
}

#[derive(Deserialize)]
pub struct AttachForm {
    child_tenant_id: String,
}

async fn attach(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<AttachForm>,
) -> Result<Response, PageError> {
    let request = AttachSubAccountRequest {
        parent_tenant_id: id.clone(),
        child_tenant_id: form.child_tenant_id.trim().to_owned(),
        idempotency_key: None,
    };
    write_then_show(&session, &id, |p| async move {
        c.app
            .hierarchy()
            .attach_sub_account(grpc(&p, request))
            .await
    })
    .await
}

async fn detach(
    State(c): State<Console>,
    session: SignedIn,
    Path((id, child)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let request = DetachSubAccountRequest {
        parent_tenant_id: id.clone(),
        child_tenant_id: child,
    };
    write_then_show(&session, &id, |p| async move {
        c.app
            .hierarchy()
            .detach_sub_account(grpc(&p, request))
            .await
    })
    .await
}

#[derive(Deserialize)]
pub struct GrantForm {
    plan_id: String,
    expires: Option<String>,
    /// A user grant: the identity provider's user ID.
    user_id: Option<String>,
}

async fn grant(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<GrantForm>,
) -> Result<Response, PageError> {
    let request = CreateGrantRequest {
        grant: Some(NewGrant {
            plan: Some(new_grant::Plan::PlanId(form.plan_id)),
            tenant_id: id.clone(),
            user_id: given(form.user_id),
            expires_at: optional_time(form.expires, "expirationDate")?,
            ..NewGrant::default()
        }),
        idempotency_key: None,
    };
    write_then_show(&session, &id, |p| async move {
        c.app.grants().create_grant(grpc(&p, request)).await
    })
    .await
}

#[derive(Deserialize)]
pub struct DatesForm {
    starts: Option<String>,
    expires: Option<String>,
    /// `on`: the grant never expires.
    never: Option<String>,
}

/// Extends or reschedules a grant: a new start, a new expiry or none (the REST PATCH's
/// `startsAt` and `expirationDate`); an empty field keeps the grant's.
async fn change_dates(
    State(c): State<Console>,
    session: SignedIn,
    Path((id, grant)): Path<(String, String)>,
    Form(form): Form<DatesForm>,
) -> Result<Response, PageError> {
    let set = |t| NullableTimestamp { value: Some(t) };
    let expires_at = if form.never.as_deref() == Some("on") {
        Some(NullableTimestamp { value: None })
    } else {
        optional_time(form.expires, "expirationDate")?.map(set)
    };
    let starts_at = optional_time(form.starts, "startsAt")?.map(set);
    if expires_at.is_none() && starts_at.is_none() {
        return Err(ApiError::invalid_field(
            "expirationDate",
            "give a new start, a new expiry, or never expires",
        )
        .into());
    }
    let request = UpdateGrantRequest {
        patch: Some(GrantPatch {
            id: grant,
            expires_at,
            starts_at,
            ..GrantPatch::default()
        }),
    };
    write_then_show(&session, &id, |p| async move {
        c.app.grants().update_grant(grpc(&p, request)).await
    })
    .await
}

pub struct SelectionRow {
    pub account: String,
    pub href: String,
    pub granted: bool,
    /// The grant's ID, or why it was refused (the API's status and message).
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "console/granted.html")]
struct GrantedPage {
    layout: Layout,
    plan: String,
    rows: Vec<SelectionRow>,
    refused: usize,
}

/// Grants a plan to every ticked account of the list, one grant each, so that one refusal
/// (an account deleted meanwhile, a duplicate) neither hides nor stops the others: every
/// account's outcome is shown.
async fn grant_selection(
    State(c): State<Console>,
    session: SignedIn,
    axum::extract::RawForm(form): axum::extract::RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    // Repeated `tenant_id` fields: one per ticked box.
    let ticked: Vec<String> = f
        .iter()
        .filter(|(k, _)| k == "tenant_id")
        .map(|(_, v)| v.clone())
        .collect();
    if ticked.is_empty() {
        return Err(ApiError::invalid_field("tenantIds", "tick at least one account").into());
    }
    let plan_id = field(&f, "plan_id");
    let expires_at = optional_time(Some(field(&f, "expires")), "expirationDate")?;
    let plan = plan_choices(&c, p)
        .await?
        .into_iter()
        .find(|plan| plan.id == plan_id)
        .map_or_else(|| plan_id.clone(), |plan| plan.label);
    let mut rows = Vec::with_capacity(ticked.len());
    for tenant_id in ticked {
        let request = CreateGrantRequest {
            grant: Some(NewGrant {
                plan: Some(new_grant::Plan::PlanId(plan_id.clone())),
                tenant_id: tenant_id.clone(),
                expires_at,
                ..NewGrant::default()
            }),
            idempotency_key: None,
        };
        let answer = c.app.grants().create_grant(grpc(p, request)).await;
        let (granted, outcome) = match answer.map(|r| r.into_inner().grant) {
            Ok(Some(g)) => (true, format!("granted (grant {})", g.id)),
            Ok(None) => (true, "granted".to_owned()),
            Err(status) => {
                let e = ApiError::from(status);
                (false, format!("{} — {}", e.status.as_u16(), e.body.message))
            }
        };
        rows.push(SelectionRow {
            href: account_href(&tenant_id),
            account: tenant_id,
            granted,
            outcome,
        });
    }
    render(&GrantedPage {
        layout: session.layout("Grants to a selection", "Accounts"),
        refused: rows.iter().filter(|r| !r.granted).count(),
        plan,
        rows,
    })
}

/// An optional date or time field, parsed as the REST API parses `field`.
fn optional_time(
    value: Option<String>,
    field: &str,
) -> Result<Option<prost_types::Timestamp>, ApiError> {
    given(value)
        .map(|v| crate::convert::parse_time_field(&v, field))
        .transpose()
}

async fn revoke(
    State(c): State<Console>,
    session: SignedIn,
    Path((id, grant)): Path<(String, String)>,
) -> Result<Response, PageError> {
    write_then_show(
        &session,
        &id,
        |p| async move { revoke_one(&c, &p, grant).await },
    )
    .await
}

async fn revoke_one(c: &Console, p: &Principal, grant: String) -> Result<(), tonic::Status> {
    c.app
        .grants()
        .revoke_grant(grpc(
            p,
            RevokeGrantRequest {
                id: grant,
                reason: Some("revoked in the console".to_owned()),
            },
        ))
        .await
        .map(drop)
}

// ---------------------------------------------------------------------------------------------
// What if: a plan granted or revoked, previewed as features gained, lost and changed (the
// entitlement service's WhatIf, which writes nothing; metered features with their meter before
// and after), then applied.

#[derive(Deserialize)]
pub struct WhatIfQuery {
    plan_id: String,
    /// `grant` or `revoke`.
    change: String,
    expires: Option<String>,
}

pub struct ChangeRow {
    pub feature_key: String,
    pub before: String,
    pub after: String,
    /// A metered feature's meter before and after ("" for other features, or none).
    pub meter_before: String,
    pub meter_after: String,
}

#[derive(Template)]
#[template(path = "console/what_if.html")]
struct WhatIfPage {
    layout: Layout,
    href: String,
    account_name: String,
    grant: bool,
    plan_id: String,
    plan_label: String,
    expires: String,
    gained: Vec<ChangeRow>,
    lost: Vec<ChangeRow>,
    changed: Vec<ChangeRow>,
}

fn change_rows(changes: Vec<FeatureChange>) -> Vec<ChangeRow> {
    changes
        .into_iter()
        .map(|c| ChangeRow {
            before: allocation_text(c.before),
            after: allocation_text(c.after),
            meter_before: meter_text(c.meter_before, c.decision_before),
            meter_after: meter_text(c.meter_after, c.decision_after),
            feature_key: c.feature_key,
        })
        .collect()
}

/// A metered feature's side of a what-if in words: what is left and used of the period on
/// whose meter, and why a check would refuse one unit. "" for a feature that is not metered.
fn meter_text(meter: Option<MeterReading>, decision: Option<AmountDecision>) -> String {
    let Some(decision) = decision else {
        return String::new();
    };
    let mut text = match meter {
        None => "no meter".to_owned(),
        Some(m) => {
            let left = m
                .balance
                .map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
            let mut t = format!("{left} left, {} used", m.usage);
            if m.held > 0 {
                t.push_str(&format!(", {} held", m.held));
            }
            if let Some(owner) = m.owner_tenant_id {
                t.push_str(&format!(" (pool of {owner})"));
            } else if let Some(user) = m.user_id {
                t.push_str(&format!(" ({user}'s own meter)"));
            }
            t
        }
    };
    if let Some(why) = justification_name(decision.justification()) {
        text.push_str(&format!(": refused, {why}"));
    }
    text
}

async fn what_if(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<WhatIfQuery>,
) -> Result<Response, PageError> {
    // No REST route previews; every change it previews is an environment-only write.
    let p = session.management()?;
    let expires = given(q.expires);
    let change = match q.change.as_str() {
        "grant" => Change::Grant(NewGrant {
            plan: Some(new_grant::Plan::PlanId(q.plan_id.clone())),
            tenant_id: id.clone(),
            expires_at: optional_time(expires.clone(), "expirationDate")?,
            ..NewGrant::default()
        }),
        "revoke" => Change::RevokePlan(q.plan_id.clone()),
        _ => return Err(ApiError::invalid_field("change", "must be grant or revoke").into()),
    };
    let out = c
        .app
        .checks()
        .what_if(grpc(
            p,
            WhatIfRequest {
                tenant_id: id.clone(),
                user_id: None,
                changes: vec![HypotheticalChange {
                    change: Some(change),
                }],
                at: None,
                min_revision: 0,
                requested_amount: None,
            },
        ))
        .await?
        .into_inner();
    let account = c
        .app
        .tenants()
        .get_account(grpc(
            p,
            pb::GetAccountRequest {
                tenant_id: id.clone(),
            },
        ))
        .await?
        .into_inner()
        .account
        .ok_or_else(ApiError::internal)?;
    let plan_label = plan_choices(&c, p)
        .await?
        .into_iter()
        .find(|plan| plan.id == q.plan_id)
        .map_or_else(|| q.plan_id.clone(), |plan| plan.label);
    render(&WhatIfPage {
        layout: session.layout(format!("What if · {}", account.name), "Accounts"),
        href: account_href(&id),
        account_name: account.name,
        grant: q.change == "grant",
        plan_id: q.plan_id,
        plan_label,
        expires: expires.unwrap_or_default(),
        gained: change_rows(out.gained),
        lost: change_rows(out.lost),
        changed: change_rows(out.changed),
    })
}

#[derive(Deserialize)]
pub struct RevokePlanForm {
    plan_id: String,
}

/// Revokes every active or scheduled grant of the plan on the account (what the preview of
/// revoking it showed).
async fn revoke_plan(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<RevokePlanForm>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let held = c
        .app
        .grants()
        .list_grants(grpc(
            p,
            ListGrantsRequest {
                page: first_page(100),
                tenant_ids: vec![id.clone()],
                plan_ids: vec![form.plan_id],
                statuses: vec![GrantStatus::Active.into(), GrantStatus::Scheduled.into()],
                ..ListGrantsRequest::default()
            },
        ))
        .await?
        .into_inner()
        .grants;
    for g in held {
        revoke_one(&c, p, g.id).await?;
    }
    Ok(see(&account_href(&id)))
}

#[cfg(test)]
mod tests {
    use super::parse_search;

    fn pairs(q: &str) -> (Option<String>, Vec<(String, String)>) {
        let (filter, metadata) = parse_search(q);
        (
            filter,
            metadata.into_iter().map(|m| (m.key, m.value)).collect(),
        )
    }

    #[test]
    fn the_search_box_splits_metadata_pairs_from_the_name() {
        assert_eq!(pairs("  Acme  Corp "), (Some("Acme Corp".into()), vec![]));
        assert_eq!(
            pairs("plan=pro acme region=eu"),
            (
                Some("acme".into()),
                vec![
                    ("plan".into(), "pro".into()),
                    ("region".into(), "eu".into())
                ]
            )
        );
        assert_eq!(
            pairs(r#""plan tier"="gold plus" url=a=b note="""#),
            (
                None,
                vec![
                    ("plan tier".into(), "gold plus".into()),
                    ("url".into(), "a=b".into()),
                    ("note".into(), String::new()),
                ]
            )
        );
        // No key: a word like any other.
        assert_eq!(pairs("=x"), (Some("=x".into()), vec![]));
        assert_eq!(pairs(""), (None, vec![]));
    }

    #[test]
    fn a_metered_side_of_a_what_if_reads_as_what_is_left_used_and_whose() {
        use super::{AmountDecision, MeterReading, meter_text};
        use tenantry_proto::entitlement::v1::Justification;
        let spent = AmountDecision {
            result: false,
            justification: Justification::UsageLimitReached.into(),
            ..AmountDecision::default()
        };
        let pool = MeterReading {
            balance: Some(0),
            usage: 60,
            held: 5,
            owner_tenant_id: Some("org".into()),
            ..MeterReading::default()
        };
        assert_eq!(
            meter_text(Some(pool), Some(spent)),
            "0 left, 60 used, 5 held (pool of org): refused, USAGE_LIMIT_REACHED"
        );
        let own = MeterReading {
            balance: None,
            user_id: Some("ann".into()),
            ..MeterReading::default()
        };
        let allowed = AmountDecision {
            result: true,
            ..AmountDecision::default()
        };
        assert_eq!(
            meter_text(Some(own), Some(allowed)),
            "unlimited left, 0 used (ann's own meter)"
        );
        assert_eq!(
            meter_text(None, Some(spent)),
            "no meter: refused, USAGE_LIMIT_REACHED"
        );
        assert_eq!(meter_text(None, None), "", "not metered");
    }
}
