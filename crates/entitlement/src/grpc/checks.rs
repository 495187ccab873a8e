//! Checks and effective entitlements, answered from the in-memory index only.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};

use super::convert::{self, uuid};
use super::{Handler, Result};
use crate::domain::{
    self, CheckRequest, DecidedBy, Decision, DomainError, EntitlementIndex, GrantLevel,
    Hypothetical, Justification, MAX_BATCH, MAX_WHAT_IF_CHANGES, Subject, Target,
    validate_attributes, validate_tenant_id,
};

/// A query decoded into owned parts the borrowed `CheckRequest` points into.
struct Query {
    tenant_id: String,
    user_id: Option<String>,
    permissions: Vec<String>,
    attributes: Option<Map<String, Value>>,
    target: TargetOwned,
    at: Option<DateTime<Utc>>,
    requested: Option<u64>,
}

enum TargetOwned {
    Feature(String),
    Permission(String),
    Route(String, String),
}

impl Query {
    fn decode(q: Option<EntitlementQuery>) -> std::result::Result<Self, DomainError> {
        let q = q.ok_or_else(|| DomainError::invalid("query", "required"))?;
        let subject = q
            .subject
            .ok_or_else(|| DomainError::invalid("query.subject", "required"))?;
        validate_tenant_id("query.subject.tenant_id", &subject.tenant_id)?;
        let target = match q.target {
            Some(entitlement_query::Target::FeatureKey(k)) => TargetOwned::Feature(k),
            Some(entitlement_query::Target::PermissionKey(p)) => TargetOwned::Permission(p),
            Some(entitlement_query::Target::Route(r)) => TargetOwned::Route(r.method, r.path),
            None => {
                return Err(DomainError::invalid(
                    "query.target",
                    "exactly one of feature_key, permission_key or route is required",
                ));
            }
        };
        let attributes = convert::attributes(subject.attributes);
        validate_attributes("query.subject.attributes", attributes.as_ref())?;
        check_sizes(&subject.user_id, &subject.permissions, &target)?;
        Ok(Self {
            tenant_id: subject.tenant_id,
            user_id: subject.user_id,
            permissions: subject.permissions,
            attributes,
            target,
            at: q.at.map(|t| convert::time("query.at", &t)).transpose()?,
            requested: q.requested_amount,
        })
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            tenant_id: &self.tenant_id,
            user_id: self.user_id.as_deref(),
            permissions: &self.permissions,
            attributes: self.attributes.as_ref(),
        }
    }

    fn request(&self) -> CheckRequest<'_> {
        CheckRequest {
            subject: self.subject(),
            target: match &self.target {
                TargetOwned::Feature(k) => Target::Feature(k),
                TargetOwned::Permission(p) => Target::Permission(p),
                TargetOwned::Route(m, p) => Target::Route { method: m, path: p },
            },
            requested: self.requested,
        }
    }
}

/// Strings and lists of a check within the shared limits: a check is answered from memory,
/// but half-megabyte keys or 100,000 permissions would still be hashed and compared.
fn check_sizes(
    user_id: &Option<String>,
    permissions: &[String],
    target: &TargetOwned,
) -> std::result::Result<(), DomainError> {
    use tenantry_common::limits::{MAX_ID_CHARS, MAX_PATH_CHARS, MAX_SUBJECT_PERMISSIONS};
    let too_long = |field: &str, value: &str, max: usize| {
        if value.chars().count() > max {
            Err(DomainError::invalid(
                field,
                format!("must be at most {max} characters"),
            ))
        } else {
            Ok(())
        }
    };
    if let Some(user) = user_id {
        too_long("query.subject.user_id", user, MAX_ID_CHARS)?;
    }
    if permissions.len() > MAX_SUBJECT_PERMISSIONS {
        return Err(DomainError::invalid(
            "query.subject.permissions",
            format!("must hold at most {MAX_SUBJECT_PERMISSIONS} permissions"),
        ));
    }
    for (i, p) in permissions.iter().enumerate() {
        too_long(&format!("query.subject.permissions[{i}]"), p, MAX_ID_CHARS)?;
    }
    match target {
        TargetOwned::Feature(k) => too_long("query.feature_key", k, MAX_ID_CHARS),
        TargetOwned::Permission(p) => too_long("query.permission_key", p, MAX_ID_CHARS),
        TargetOwned::Route(method, path) => {
            too_long("query.route.method", method, 16)?;
            too_long("query.route.path", path, MAX_PATH_CHARS)
        }
    }
}

fn justification(j: Option<Justification>) -> pb::Justification {
    use pb::Justification as P;
    match j {
        None => P::Unspecified,
        Some(Justification::MissingFeature) => P::MissingFeature,
        Some(Justification::MissingPermission) => P::MissingPermission,
        Some(Justification::PlanExpired) => P::PlanExpired,
        Some(Justification::PlanRevoked) => P::PlanRevoked,
        Some(Justification::NotStarted) => P::NotStarted,
        Some(Justification::FeatureFlagOff) => P::FeatureFlagOff,
        Some(Justification::LimitExceeded) => P::LimitExceeded,
        Some(Justification::MissingRoute) => P::MissingRoute,
        Some(Justification::RouteDenied) => P::RouteDenied,
        Some(Justification::TenantNotFound) => P::TenantNotFound,
    }
}

fn allow_reason(r: Option<domain::AllowReason>) -> AllowReason {
    use domain::AllowReason as D;
    match r {
        None => AllowReason::Unspecified,
        Some(D::Grant) => AllowReason::Grant,
        Some(D::UngatedPermission) => AllowReason::UngatedPermission,
        Some(D::RouteAllow) => AllowReason::RouteAllow,
        Some(D::RouteRequirementsMet) => AllowReason::RouteRequirementsMet,
    }
}

fn level(l: GrantLevel) -> pb::GrantLevel {
    match l {
        GrantLevel::User => pb::GrantLevel::User,
        GrantLevel::Account => pb::GrantLevel::Account,
        GrantLevel::Ancestor { .. } => pb::GrantLevel::Ancestor,
        GrantLevel::Targeting => pb::GrantLevel::Targeting,
    }
}

fn granted_tenant(index: &EntitlementIndex, tenant: &str, l: GrantLevel) -> String {
    match l {
        GrantLevel::Ancestor { depth } => index
            .ancestor_at(tenant, depth)
            .unwrap_or_default()
            .to_owned(),
        GrantLevel::User | GrantLevel::Account | GrantLevel::Targeting => tenant.to_owned(),
    }
}

fn provenance(
    index: &EntitlementIndex,
    tenant: &str,
    by: DecidedBy,
    feature_key: &str,
) -> pb::Provenance {
    pb::Provenance {
        grant_id: by.grant_id.map(|g| g.to_string()).unwrap_or_default(),
        plan_id: by.plan_id.to_string(),
        plan_key: index.plan_key(by.plan_id).unwrap_or_default().to_owned(),
        level: level(by.level) as i32,
        granted_tenant_id: granted_tenant(index, tenant, by.level),
        feature_key: feature_key.to_owned(),
        route_id: String::new(),
    }
}

/// The route a route query is decided by, if any matches.
fn matched_route(index: &EntitlementIndex, q: &Query) -> Option<String> {
    match &q.target {
        TargetOwned::Route(method, path) => {
            index.matched_route(method, path).map(|id| id.to_string())
        }
        TargetOwned::Feature(_) | TargetOwned::Permission(_) => None,
    }
}

fn decision(index: &EntitlementIndex, q: &Query, d: &Decision) -> EntitlementDecision {
    // The feature that decided: the checked one, or the linked/required one for permission
    // and route checks (resolved against the snapshot the decision came from).
    let feature_key = d
        .feature
        .and_then(|f| index.feature_key(f))
        .unwrap_or_default();
    EntitlementDecision {
        result: d.result,
        justification: justification(d.justification) as i32,
        allow_reason: allow_reason(d.allow_reason) as i32,
        allocation: Some(convert::allocation(d.allocation)),
        provenance: d.decided_by.map(|by| pb::Provenance {
            route_id: matched_route(index, q).unwrap_or_default(),
            ..provenance(index, &q.tenant_id, by, feature_key)
        }),
        next_change_at: d.next_change_at.map(convert::timestamp),
    }
}

impl Handler {
    /// The serving index, once it includes `min_revision` (waiting briefly, else UNAVAILABLE).
    pub(super) async fn index(
        &self,
        min_revision: u64,
    ) -> std::result::Result<std::sync::Arc<EntitlementIndex>, DomainError> {
        self.engine
            .index
            .at_least(min_revision, self.engine.revision_wait)
            .await
    }
}

#[tonic::async_trait]
impl entitlement_service_server::EntitlementService for Handler {
    async fn is_entitled_to(
        &self,
        request: Request<IsEntitledToRequest>,
    ) -> Result<Response<IsEntitledToResponse>> {
        let r = request.into_inner();
        let q = Query::decode(r.query)?;
        let index = self.index(r.min_revision).await?;
        let d = index.check(
            &q.request(),
            q.at.unwrap_or_else(|| self.engine.present(&index)),
        );
        Ok(Response::new(IsEntitledToResponse {
            decision: Some(decision(&index, &q, &d)),
            revision: index.revision(),
        }))
    }

    async fn batch_is_entitled_to(
        &self,
        request: Request<BatchIsEntitledToRequest>,
    ) -> Result<Response<BatchIsEntitledToResponse>> {
        let r = request.into_inner();
        if r.queries.is_empty() || r.queries.len() > MAX_BATCH {
            return Err(DomainError::invalid("queries", "give 1 to 1000 queries").into());
        }
        let mut items = Vec::new();
        let mut queries = Vec::with_capacity(r.queries.len());
        for (i, q) in r.queries.into_iter().enumerate() {
            match Query::decode(Some(q)) {
                Ok(q) => queries.push(q),
                Err(DomainError::InvalidArgument { field, message }) => {
                    items.push(crate::domain::ItemError::new(i, field, message));
                }
                Err(other) => return Err(other.into()),
            }
        }
        if !items.is_empty() {
            return Err(DomainError::InvalidItems(items).into());
        }
        let index = self.index(r.min_revision).await?;
        let now = self.engine.present(&index);
        let decisions = queries
            .iter()
            .map(|q| {
                let d = index.check(&q.request(), q.at.unwrap_or(now));
                decision(&index, q, &d)
            })
            .collect();
        Ok(Response::new(BatchIsEntitledToResponse {
            decisions,
            revision: index.revision(),
        }))
    }

    async fn get_account_entitlements(
        &self,
        request: Request<GetAccountEntitlementsRequest>,
    ) -> Result<Response<GetAccountEntitlementsResponse>> {
        let r = request.into_inner();
        validate_tenant_id("tenant_id", &r.tenant_id)?;
        let attributes = convert::attributes(r.attributes);
        validate_attributes("attributes", attributes.as_ref())?;
        let at = r.at.map(|t| convert::time("at", &t)).transpose()?;
        let index = self.index(r.min_revision).await?;
        // "Now" is read once the index holds the awaited revision, never before: grants
        // written meanwhile have started by then.
        let at = at.unwrap_or_else(|| self.engine.present(&index));
        let subject = Subject {
            tenant_id: &r.tenant_id,
            user_id: r.user_id.as_deref(),
            permissions: &[],
            attributes: attributes.as_ref(),
        };
        let entitlements = index
            .account_entitlements(&subject, at)?
            .into_iter()
            .map(|e| AccountEntitlement {
                allocation: Some(convert::allocation(Some(e.allocation))),
                provenance: e
                    .decided_by
                    .map(|by| provenance(&index, &r.tenant_id, by, &e.key)),
                next_change_at: e.next_change_at.map(convert::timestamp),
                feature_key: e.key,
            })
            .collect();
        Ok(Response::new(GetAccountEntitlementsResponse {
            entitlements,
            revision: index.revision(),
        }))
    }

    async fn explain(&self, request: Request<ExplainRequest>) -> Result<Response<ExplainResponse>> {
        let r = request.into_inner();
        let q = Query::decode(r.query)?;
        let index = self.index(r.min_revision).await?;
        let at = q.at.unwrap_or_else(|| self.engine.present(&index));
        let d = index.check(&q.request(), at);
        let feature_key = match &q.target {
            TargetOwned::Feature(k) => Some(k.as_str()),
            TargetOwned::Permission(_) | TargetOwned::Route(..) => None,
        };
        let decided = d.decided_by.and_then(|b| b.grant_id);
        let grants = index
            .explain_grants(&q.subject(), feature_key, at)
            .into_iter()
            .map(|g| GrantEvaluation {
                grant_id: g.grant_id.to_string(),
                plan_key: index.plan_key(g.plan_id).unwrap_or_default().to_owned(),
                level: level(g.level) as i32,
                granted_tenant_id: granted_tenant(&index, &q.tenant_id, g.level),
                status: convert::grant_status(g.status) as i32,
                targeted: g.targeted,
                allocation: Some(convert::allocation(g.allocation)),
                effective: d.result
                    && g.allocation.is_some_and(|a| a.is_granting())
                    && g.status == crate::domain::GrantStatus::Active
                    || decided == Some(g.grant_id),
            })
            .collect();
        let (flag, linked) = match &q.target {
            TargetOwned::Feature(k) => (index.flag_on(k, q.attributes.as_ref()), vec![]),
            TargetOwned::Permission(p) => (None, index.linked_features(p)),
            TargetOwned::Route(..) => (None, vec![]),
        };
        Ok(Response::new(ExplainResponse {
            decision: Some(decision(&index, &q, &d)),
            grants,
            feature_flag_on: flag,
            matched_route_id: matched_route(&index, &q),
            linked_feature_keys: linked,
            revision: index.revision(),
        }))
    }

    async fn what_if(&self, request: Request<WhatIfRequest>) -> Result<Response<WhatIfResponse>> {
        let r = request.into_inner();
        validate_tenant_id("tenant_id", &r.tenant_id)?;
        let index = self.index(r.min_revision).await?;
        let at = match r.at {
            Some(t) => convert::time("at", &t)?,
            None => self.engine.present(&index),
        };
        if r.changes.is_empty() || r.changes.len() > MAX_WHAT_IF_CHANGES {
            return Err(DomainError::invalid(
                "changes",
                format!("give 1 to {MAX_WHAT_IF_CHANGES} changes"),
            )
            .into());
        }
        let plan_id = |s: &str, field: &str| {
            if s.is_empty() {
                return Err(DomainError::invalid(field, "required"));
            }
            uuid(field, s)
                .ok()
                .or_else(|| index.plan_id_by_key(s))
                .ok_or_else(|| DomainError::not_found("plan", s))
        };
        let time = |t: &Option<prost_types::Timestamp>, field: &str| {
            t.as_ref().map(|t| convert::time(field, t)).transpose()
        };
        let mut hypotheticals = Vec::with_capacity(r.changes.len());
        for (i, change) in r.changes.iter().enumerate() {
            let field = format!("changes[{i}]");
            hypotheticals.push(match &change.change {
                Some(hypothetical_change::Change::Grant(g)) => {
                    if !g.tenant_id.is_empty() && g.tenant_id != r.tenant_id {
                        return Err(DomainError::invalid(
                            format!("{field}.grant.tenant_id"),
                            "must be empty or the request's tenant_id",
                        )
                        .into());
                    }
                    if g.user_id.is_some() && g.user_id != r.user_id {
                        return Err(DomainError::invalid(
                            format!("{field}.grant.user_id"),
                            "must be unset or the request's user_id",
                        )
                        .into());
                    }
                    Hypothetical::GrantPlan {
                        plan_id: match &g.plan {
                            Some(new_grant::Plan::PlanId(id)) => {
                                plan_id(id, &format!("{field}.grant.plan_id"))?
                            }
                            Some(new_grant::Plan::PlanKey(k)) => {
                                plan_id(k, &format!("{field}.grant.plan_key"))?
                            }
                            None => {
                                return Err(DomainError::invalid(
                                    format!("{field}.grant.plan"),
                                    "required",
                                )
                                .into());
                            }
                        },
                        to_user: g.user_id.is_some(),
                        starts_at: time(&g.starts_at, &format!("{field}.grant.starts_at"))?,
                        expires_at: time(&g.expires_at, &format!("{field}.grant.expires_at"))?,
                    }
                }
                Some(hypothetical_change::Change::RevokeGrantId(id)) => Hypothetical::RevokeGrant {
                    grant_id: uuid(&format!("{field}.revoke_grant_id"), id)?,
                },
                Some(hypothetical_change::Change::RevokePlan(p)) => Hypothetical::RevokePlan {
                    plan_id: plan_id(p, &format!("{field}.revoke_plan"))?,
                },
                None => return Err(DomainError::invalid(field, "required").into()),
            });
        }
        let subject = Subject {
            tenant_id: &r.tenant_id,
            user_id: r.user_id.as_deref(),
            permissions: &[],
            attributes: None,
        };
        let result = index.what_if(&subject, &hypotheticals, at)?;
        let encode = |list: Vec<crate::domain::FeatureChange>| {
            list.into_iter()
                .map(|c| pb::FeatureChange {
                    feature_key: c.key,
                    before: Some(convert::allocation(c.before)),
                    after: Some(convert::allocation(c.after)),
                })
                .collect()
        };
        Ok(Response::new(WhatIfResponse {
            gained: encode(result.gained),
            lost: encode(result.lost),
            changed: encode(result.changed),
            revision: index.revision(),
        }))
    }

    async fn get_revision(
        &self,
        _request: Request<GetRevisionRequest>,
    ) -> Result<Response<GetRevisionResponse>> {
        Ok(Response::new(GetRevisionResponse {
            revision: self.engine.index.current().revision(),
        }))
    }
}
