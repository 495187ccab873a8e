//! Sub-accounts and the hierarchy: self-service creation and deletion of sub-accounts,
//! reseller management, hierarchy settings and hierarchy reads (user or environment token),
//! and management attach/detach.

use std::collections::HashSet;

use axum::{Json, extract::State, response::IntoResponse};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tenantry_proto::tenant::v1::{
    self as pb, AttachSubAccountRequest, CreateSubAccountRequest, DetachSubAccountRequest,
    GetHierarchySettingsRequest, GetSubtreeRequest, ListAncestorsRequest, ListDescendantsRequest,
    SubAccountAccessType, UpdateHierarchySettingsRequest, UpdateSubAccountManagementRequest,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    ListMetadata,
    accounts::{self, Tenant, tenant},
    page,
};
use crate::{
    auth::{Caller, Management, permissions, require_permission, scope},
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_sub_account))
        .routes(routes!(delete_sub_account))
        .routes(routes!(update_management))
        .routes(routes!(get_hierarchy_settings, update_hierarchy_settings))
        .routes(routes!(list_sub_accounts, attach, detach))
        .routes(routes!(list_parents))
        .routes(routes!(get_tree))
}

/// Body of `POST /tenants/resources/sub-tenants/v1`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSubTenantBody {
    pub tenant_id: String,
    pub name: String,
    pub parent_tenant_id: String,
    pub status: Option<String>,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub creator_name: Option<String>,
    pub creator_email: Option<String>,
    pub is_reseller: Option<bool>,
}

/// Body of `PUT .../{tenantId}/management`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementBody {
    pub is_reseller: bool,
}

/// Hierarchy settings of an account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HierarchySettings {
    pub tenant_id: String,
    /// `defaultOff`, `defaultOn` or `alwaysOn`.
    pub sub_account_access_type: String,
}

/// Body of `PUT .../{tenantId}/hierarchy-settings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HierarchySettingsBody {
    /// `defaultOff`, `defaultOn` or `alwaysOn`.
    #[schema(pattern = "^(defaultOff|defaultOn|alwaysOn)$")]
    pub sub_account_access_type: String,
}

/// Body of `POST` and `DELETE /tenants/resources/hierarchy/v1`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentChildBody {
    pub parent_tenant_id: String,
    pub child_tenant_id: String,
}

/// An account in a hierarchy listing with its distance from the starting account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HierarchyEntry {
    #[serde(flatten)]
    pub tenant: Tenant,
    /// 1 = child (or parent), 2 = grandchild, ...
    pub depth: u32,
}

/// `{"items": [...]}` of a hierarchy listing; the sub-account listing is paged and adds
/// `_metadata`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HierarchyList {
    pub items: Vec<HierarchyEntry>,
    #[serde(rename = "_metadata", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ListMetadata>,
}

/// A node of the hierarchy tree.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TreeNode {
    #[serde(flatten)]
    pub tenant: Tenant,
    #[schema(no_recursion)]
    pub children: Vec<TreeNode>,
}

/// The hierarchy tree: its root node, and whether sub-accounts were left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tree {
    #[serde(flatten)]
    pub root: TreeNode,
    /// More sub-accounts lie below those returned: the tree was cut breadth first after
    /// `_limit` of them, or earlier to stay under the message size limit (large logos).
    /// Every returned node's parent is returned too.
    pub truncated: bool,
}

/// Query of `GET /tenants/resources/hierarchy/v1/tree`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TreeQuery {
    /// Most sub-accounts returned below the root, breadth first: default 500, at most 1,000
    /// (more is refused with 400). `truncated` says whether more exist.
    #[serde(rename = "_limit")]
    #[param(rename = "_limit")]
    pub limit: Option<u32>,
}

/// Query of `GET /tenants/resources/hierarchy/v1`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct DescendantsQuery {
    /// Only direct children (default: every descendant).
    pub direct_only: Option<bool>,
    /// Page size: default 50, maximum 200 (more is refused). A page may hold fewer items when
    /// more would be too large (large logos): continue at `_offset` + items returned.
    #[serde(rename = "_limit")]
    #[param(rename = "_limit")]
    pub limit: Option<u32>,
    #[serde(rename = "_offset")]
    #[param(rename = "_offset")]
    pub offset: Option<u32>,
}

fn access_type_name(t: SubAccountAccessType) -> &'static str {
    match t {
        SubAccountAccessType::DefaultOn => "defaultOn",
        SubAccountAccessType::AlwaysOn => "alwaysOn",
        SubAccountAccessType::DefaultOff | SubAccountAccessType::Unspecified => "defaultOff",
    }
}

fn settings_json(s: Option<pb::HierarchySettings>) -> HierarchySettings {
    let s = s.unwrap_or_default();
    HierarchySettings {
        sub_account_access_type: access_type_name(s.sub_account_access_type()).to_owned(),
        tenant_id: s.tenant_id,
    }
}

/// The listing's accounts, keeping only those in `allowed` (`None`: all of them).
fn entries(entries: Vec<pb::HierarchyEntry>, allowed: Option<&HashSet<String>>) -> HierarchyList {
    HierarchyList {
        items: entries
            .into_iter()
            .filter_map(|e| {
                e.account
                    .filter(|a| allowed.is_none_or(|set| set.contains(&a.tenant_id)))
                    .map(|a| HierarchyEntry {
                        tenant: Tenant::from(a),
                        depth: e.depth,
                    })
            })
            .collect(),
        metadata: None,
    }
}

/// A page of sub-accounts as a reader limited to `allowed` sees it. Sub-accounts are
/// readable all or none: when some are not, not even their number shows.
fn sub_account_page(
    out: pb::ListDescendantsResponse,
    allowed: Option<&HashSet<String>>,
) -> HierarchyList {
    let listed = out.entries.len();
    let mut list = entries(out.entries, allowed);
    list.metadata = Some(if list.items.len() == listed {
        out.page.into()
    } else {
        ListMetadata::default()
    });
    list
}

fn entry_ids(entries: &[pb::HierarchyEntry]) -> impl Iterator<Item = &str> {
    entries
        .iter()
        .filter_map(|e| e.account.as_ref())
        .map(|a| a.tenant_id.as_str())
}

/// The tree's nodes, keeping only those in `allowed` (`None`: all) with their subtrees: a
/// node out of scope hides everything below it.
fn tree(node: pb::HierarchyTreeNode, allowed: Option<&HashSet<String>>) -> Option<TreeNode> {
    let account = node
        .account
        .filter(|a| allowed.is_none_or(|set| set.contains(&a.tenant_id)))?;
    Some(TreeNode {
        tenant: Tenant::from(account),
        children: node
            .children
            .into_iter()
            .filter_map(|c| tree(c, allowed))
            .collect(),
    })
}

fn tree_ids<'a>(node: &'a pb::HierarchyTreeNode, out: &mut Vec<&'a str>) {
    if let Some(a) = &node.account {
        out.push(&a.tenant_id);
    }
    for child in &node.children {
        tree_ids(child, out);
    }
}

/// Create a sub-account under a parent (user token: its account or a reachable sub-account,
/// with `fe.account-hierarchy.write.subAccount`; `Idempotency-Key` makes retries safe).
#[utoipa::path(post, path = "/tenants/resources/sub-tenants/v1", tag = "Sub-accounts",
    params(IdempotencyKey),
    request_body = CreateSubTenantBody,
    responses((status = 201, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_sub_account(
    State(state): State<AppState>,
    Caller(p): Caller,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<CreateSubTenantBody>,
) -> Result<impl IntoResponse, ApiError> {
    scope::ensure_account(&state, &p, &b.parent_tenant_id).await?;
    require_permission(&p, permissions::WRITE_SUB_ACCOUNTS)?;
    let out = state
        .hierarchy()
        .create_sub_account(grpc(
            &p,
            CreateSubAccountRequest {
                tenant_id: b.tenant_id,
                name: b.name,
                parent_tenant_id: b.parent_tenant_id,
                status: b.status,
                logo: b.logo,
                logo_url: b.logo_url,
                creator_name: b.creator_name,
                creator_email: b.creator_email,
                is_reseller: b.is_reseller,
                idempotency_key,
            },
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(tenant(out.account)?)))
}

/// Delete a sub-account (user token: a reachable sub-account of its account).
#[utoipa::path(delete, path = "/tenants/resources/sub-tenants/v1/{tenantId}", tag = "Sub-accounts",
    params(("tenantId" = String, Path)),
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_sub_account(
    State(state): State<AppState>,
    Caller(p): Caller,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    scope::ensure_descendant(&state, &p, &tenant_id).await?;
    require_permission(&p, permissions::WRITE_SUB_ACCOUNTS)?;
    accounts::delete(&state, &p, tenant_id).await
}

/// Enable or disable sub-account (reseller) management of an account.
#[utoipa::path(put, path = "/tenants/resources/sub-tenants/v1/{tenantId}/management", tag = "Sub-accounts",
    params(("tenantId" = String, Path)), request_body = ManagementBody,
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_management(
    State(state): State<AppState>,
    Caller(p): Caller,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(b): ApiJson<ManagementBody>,
) -> Result<Json<Tenant>, ApiError> {
    // A user may not grant its own account reseller rights: sub-accounts only.
    scope::ensure_descendant(&state, &p, &tenant_id).await?;
    require_permission(&p, permissions::WRITE_SUB_ACCOUNTS)?;
    let out = state
        .hierarchy()
        .update_sub_account_management(grpc(
            &p,
            UpdateSubAccountManagementRequest {
                tenant_id,
                is_reseller: b.is_reseller,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(tenant(out.account)?))
}

/// Read an account's hierarchy settings.
#[utoipa::path(get, path = "/tenants/resources/sub-tenants/v1/{tenantId}/hierarchy-settings", tag = "Sub-accounts",
    params(("tenantId" = String, Path)),
    responses((status = 200, body = HierarchySettings), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_hierarchy_settings(
    State(state): State<AppState>,
    Caller(p): Caller,
    ApiPath(tenant_id): ApiPath<String>,
) -> Result<Json<HierarchySettings>, ApiError> {
    scope::ensure_account(&state, &p, &tenant_id).await?;
    let out = state
        .hierarchy()
        .get_hierarchy_settings(grpc(&p, GetHierarchySettingsRequest { tenant_id }))
        .await?
        .into_inner();
    Ok(Json(settings_json(out.settings)))
}

/// Set `subAccountAccessType` (`defaultOff`, `defaultOn`, `alwaysOn`).
#[utoipa::path(put, path = "/tenants/resources/sub-tenants/v1/{tenantId}/hierarchy-settings", tag = "Sub-accounts",
    params(("tenantId" = String, Path)), request_body = HierarchySettingsBody,
    responses((status = 200, body = HierarchySettings), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_hierarchy_settings(
    State(state): State<AppState>,
    Caller(p): Caller,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(b): ApiJson<HierarchySettingsBody>,
) -> Result<Json<HierarchySettings>, ApiError> {
    scope::ensure_account(&state, &p, &tenant_id).await?;
    require_permission(&p, permissions::WRITE_SUB_ACCOUNTS)?;
    // Unknown strings go to the service as UNSPECIFIED, which it refuses with its message.
    let access = match b.sub_account_access_type.as_str() {
        "defaultOff" => SubAccountAccessType::DefaultOff,
        "defaultOn" => SubAccountAccessType::DefaultOn,
        "alwaysOn" => SubAccountAccessType::AlwaysOn,
        _ => {
            return Err(ApiError::invalid_field(
                "subAccountAccessType",
                "must be defaultOff, defaultOn or alwaysOn",
            ));
        }
    };
    let out = state
        .hierarchy()
        .update_hierarchy_settings(grpc(
            &p,
            UpdateHierarchySettingsRequest {
                tenant_id,
                sub_account_access_type: access.into(),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(settings_json(out.settings)))
}

/// List the sub-accounts of the account (token's, or `frontegg-tenant-id`); with a user
/// token only those its account's hierarchy settings let it read (none under `defaultOff`).
#[utoipa::path(get, path = "/tenants/resources/hierarchy/v1", tag = "Sub-accounts",
    params(("frontegg-tenant-id" = String, Header, description = "The account; required with an environment token (a user token may leave it out for its own account)"), DescendantsQuery),
    responses((status = 200, body = HierarchyList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_sub_accounts(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DescendantsQuery>,
) -> Result<Json<HierarchyList>, ApiError> {
    let tenant_id = scope::target_account(&state, &p, &headers).await?;
    let out = state
        .hierarchy()
        .list_descendants(grpc(
            &p,
            ListDescendantsRequest {
                tenant_id,
                direct_only: q.direct_only.unwrap_or(false),
                page: page(q.limit, q.offset),
            },
        ))
        .await?
        .into_inner();
    // Every record shown is a read of that account: the scope rule applies to each.
    let allowed = scope::readable(&state, &p, entry_ids(&out.entries)).await?;
    Ok(Json(sub_account_page(out, allowed.as_ref())))
}

/// Attach an existing account under a parent (`Idempotency-Key` makes retries safe).
#[utoipa::path(post, path = "/tenants/resources/hierarchy/v1", tag = "Sub-accounts and hierarchy",
    params(IdempotencyKey),
    request_body = ParentChildBody,
    responses((status = 201, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn attach(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(b): ApiJson<ParentChildBody>,
) -> Result<impl IntoResponse, ApiError> {
    let out = state
        .hierarchy()
        .attach_sub_account(grpc(
            &p,
            AttachSubAccountRequest {
                parent_tenant_id: b.parent_tenant_id,
                child_tenant_id: b.child_tenant_id,
                idempotency_key,
            },
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(tenant(out.child)?)))
}

/// Detach a sub-account from its parent (404 when they are not parent and child).
#[utoipa::path(delete, path = "/tenants/resources/hierarchy/v1", tag = "Sub-accounts and hierarchy",
    request_body = ParentChildBody,
    responses((status = 200, body = Tenant), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn detach(
    State(state): State<AppState>,
    Management(p): Management,
    ApiJson(b): ApiJson<ParentChildBody>,
) -> Result<Json<Tenant>, ApiError> {
    let out = state
        .hierarchy()
        .detach_sub_account(grpc(
            &p,
            DetachSubAccountRequest {
                parent_tenant_id: b.parent_tenant_id,
                child_tenant_id: b.child_tenant_id,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(tenant(out.child)?))
}

/// List the ancestors of the account, nearest first (with a user token, only those it may
/// read: its own account and reachable sub-accounts).
#[utoipa::path(get, path = "/tenants/resources/hierarchy/v1/parents", tag = "Sub-accounts",
    params(("frontegg-tenant-id" = String, Header, description = "The account; required with an environment token (a user token may leave it out for its own account)")),
    responses((status = 200, body = HierarchyList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_parents(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
) -> Result<Json<HierarchyList>, ApiError> {
    let tenant_id = scope::target_account(&state, &p, &headers).await?;
    let out = state
        .hierarchy()
        .list_ancestors(grpc(&p, ListAncestorsRequest { tenant_id }))
        .await?
        .into_inner();
    let allowed = scope::readable(&state, &p, entry_ids(&out.entries)).await?;
    Ok(Json(entries(out.entries, allowed.as_ref())))
}

/// The account's subtree as a tree, breadth first up to `_limit` sub-accounts (with a user
/// token, only the sub-accounts it may read).
#[utoipa::path(get, path = "/tenants/resources/hierarchy/v1/tree", tag = "Sub-accounts",
    params(("frontegg-tenant-id" = String, Header, description = "The account; required with an environment token (a user token may leave it out for its own account)"), TreeQuery),
    responses((status = 200, body = Tree), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_tree(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TreeQuery>,
) -> Result<Json<Tree>, ApiError> {
    let tenant_id = scope::target_account(&state, &p, &headers).await?;
    let out = state
        .hierarchy()
        .get_subtree(grpc(
            &p,
            GetSubtreeRequest {
                tenant_id,
                max_nodes: q.limit,
            },
        ))
        .await?
        .into_inner();
    let root = out.root.ok_or_else(ApiError::internal)?;
    let mut ids = Vec::new();
    tree_ids(&root, &mut ids);
    let allowed = scope::readable(&state, &p, ids).await?;
    let root = tree(root, allowed.as_ref()).ok_or_else(ApiError::internal)?;
    Ok(Json(Tree {
        root,
        truncated: out.truncated,
    }))
}
