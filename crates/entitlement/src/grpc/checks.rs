//! Checks and effective entitlements, answered from the in-memory index only.

use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};

use std::sync::Arc;

use super::Result;
use super::convert;
use crate::app::checks::{
    self as checks, CheckQuery, CheckTarget, IndexSource, PlanName, WhatIfChange, WhatIfQuery,
};
use crate::domain::{
    self, DecidedBy, Decision, DomainError, EntitlementIndex, GrantLevel, Justification, Subject,
};

/// Decodes a query (`query.`-prefixed fields); `Engine::check` validates its values.
fn decode_query(q: Option<EntitlementQuery>) -> std::result::Result<CheckQuery, DomainError> {
    let q = q.ok_or_else(|| DomainError::invalid("query", "required"))?;
    let subject = q
        .subject
        .ok_or_else(|| DomainError::invalid("query.subject", "required"))?;
    let target = match q.target {
        Some(entitlement_query::Target::FeatureKey(k)) => CheckTarget::Feature(k),
        Some(entitlement_query::Target::PermissionKey(p)) => CheckTarget::Permission(p),
        Some(entitlement_query::Target::Route(r)) => CheckTarget::Route {
            method: r.method,
            path: r.path,
        },
        None => {
            return Err(DomainError::invalid(
                "query.target",
                "exactly one of feature_key, permission_key or route is required",
            ));
        }
    };
    Ok(CheckQuery {
        tenant_id: subject.tenant_id,
        user_id: subject.user_id,
        permissions: subject.permissions,
        attributes: convert::attributes(subject.attributes),
        target,
        at: q.at.map(|t| convert::time("query.at", &t)).transpose()?,
        requested: q.requested_amount,
    })
}

pub(crate) fn justification(j: Option<Justification>) -> pb::Justification {
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
        Some(Justification::UsageLimitReached) => P::UsageLimitReached,
        Some(Justification::InsufficientBalance) => P::InsufficientBalance,
        Some(Justification::MeterHistoryUnknown) => P::MeterHistoryUnknown,
    }
}

pub(crate) fn allow_reason(r: Option<domain::AllowReason>) -> AllowReason {
    use domain::AllowReason as D;
    match r {
        None => AllowReason::Unspecified,
        Some(D::Grant) => AllowReason::Grant,
        Some(D::UngatedPermission) => AllowReason::UngatedPermission,
        Some(D::RouteAllow) => AllowReason::RouteAllow,
        Some(D::RouteRequirementsMet) => AllowReason::RouteRequirementsMet,
        Some(D::SoftLimitOverage) => AllowReason::SoftLimitOverage,
        Some(D::Credits) => AllowReason::Credits,
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
fn matched_route(index: &EntitlementIndex, q: &CheckQuery) -> Option<String> {
    match &q.target {
        CheckTarget::Route { method, path } => {
            index.matched_route(method, path).map(|id| id.to_string())
        }
        CheckTarget::Feature(_) | CheckTarget::Permission(_) => None,
    }
}

/// `history_at`: the past instant a metered feature's meter was read at from history.
fn decision(
    index: &EntitlementIndex,
    q: &CheckQuery,
    d: &Decision,
    history_at: Option<chrono::DateTime<chrono::Utc>>,
) -> EntitlementDecision {
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
        meter: d.meter.map(|m| pb::MeterReading {
            // A pool's meter names its owner.
            owner_tenant_id: d
                .meter_pool
                .and_then(|depth| index.ancestor_at(&q.tenant_id, depth))
                .map(str::to_owned),
            // The subject's user's own meter names its user.
            user_id: q.user_id.clone().filter(|_| d.meter_user),
            as_of: history_at.map(convert::timestamp),
            ..meter_reading(m)
        }),
    }
}

/// A metered feature's meter on the wire.
pub(crate) fn meter_reading(m: tenantry_index::metering::MeterReading) -> pb::MeterReading {
    pb::MeterReading {
        balance: m.balance,
        usage: m.usage,
        overage: m.overage,
        period_start: Some(convert::timestamp(m.period_start)),
        period_end: Some(convert::timestamp(m.period_end)),
        held: m.held,
        owner_tenant_id: None,
        user_id: None,
        as_of: None,
    }
}

/// `EntitlementService` over any [`IndexSource`]: the service's own index, or an agent's
/// follower of it — the same decoding, rules and encoding either way.
#[derive(Debug)]
pub struct CheckService<I> {
    source: Arc<I>,
}

impl<I> CheckService<I> {
    pub fn new(source: Arc<I>) -> Self {
        Self { source }
    }
}

impl<I> Clone for CheckService<I> {
    fn clone(&self) -> Self {
        Self {
            source: Arc::clone(&self.source),
        }
    }
}

#[tonic::async_trait]
impl<I: IndexSource> entitlement_service_server::EntitlementService for CheckService<I> {
    async fn is_entitled_to(
        &self,
        request: Request<IsEntitledToRequest>,
    ) -> Result<Response<IsEntitledToResponse>> {
        let r = request.into_inner();
        let q = decode_query(r.query)?;
        let checked = checks::check(&*self.source, &q, r.min_revision).await?;
        Ok(Response::new(IsEntitledToResponse {
            decision: Some(decision(
                &checked.index,
                &q,
                &checked.value,
                checked.history_at(q.at),
            )),
            revision: checked.index.revision(),
        }))
    }

    async fn batch_is_entitled_to(
        &self,
        request: Request<BatchIsEntitledToRequest>,
    ) -> Result<Response<BatchIsEntitledToResponse>> {
        let r = request.into_inner();
        checks::check_batch_size(r.queries.len())?;
        let queries = r
            .queries
            .into_iter()
            .map(|q| decode_query(Some(q)))
            .collect();
        let checked = checks::check_batch(&*self.source, queries, r.min_revision).await?;
        let index = &checked.index;
        Ok(Response::new(BatchIsEntitledToResponse {
            decisions: checked
                .value
                .iter()
                .map(|(q, d)| decision(index, q, d, checked.history_at(q.at)))
                .collect(),
            revision: index.revision(),
        }))
    }

    async fn get_account_entitlements(
        &self,
        request: Request<GetAccountEntitlementsRequest>,
    ) -> Result<Response<GetAccountEntitlementsResponse>> {
        let r = request.into_inner();
        let attributes = convert::attributes(r.attributes);
        let at = r.at.map(|t| convert::time("at", &t)).transpose()?;
        let subject = Subject {
            tenant_id: &r.tenant_id,
            user_id: r.user_id.as_deref(),
            permissions: &[],
            attributes: attributes.as_ref(),
        };
        let checked =
            checks::account_entitlements(&*self.source, &subject, at, r.min_revision).await?;
        let index = &checked.index;
        let history_at = checked.history_at(at);
        let entitlements = checked
            .value
            .into_iter()
            .map(|(e, meter)| AccountEntitlement {
                allocation: Some(convert::allocation(Some(e.allocation))),
                provenance: e
                    .decided_by
                    .map(|by| provenance(index, &r.tenant_id, by, &e.key)),
                next_change_at: e.next_change_at.map(convert::timestamp),
                feature_key: e.key,
                meter_history_unknown: matches!(meter, Some((None, _, _))),
                meter: meter.and_then(|(m, owner, user)| {
                    Some(pb::MeterReading {
                        owner_tenant_id: owner,
                        user_id: user,
                        as_of: history_at.map(convert::timestamp),
                        ..meter_reading(m?)
                    })
                }),
            })
            .collect();
        Ok(Response::new(GetAccountEntitlementsResponse {
            entitlements,
            revision: index.revision(),
        }))
    }

    async fn explain(&self, request: Request<ExplainRequest>) -> Result<Response<ExplainResponse>> {
        let r = request.into_inner();
        let q = decode_query(r.query)?;
        let checked = checks::explain(&*self.source, &q, r.min_revision).await?;
        let (index, e) = (&checked.index, &checked.value);
        let grants = e
            .grants
            .iter()
            .map(|(g, effective)| GrantEvaluation {
                grant_id: g.grant_id.to_string(),
                plan_key: index.plan_key(g.plan_id).unwrap_or_default().to_owned(),
                level: level(g.level) as i32,
                granted_tenant_id: granted_tenant(index, &q.tenant_id, g.level),
                status: convert::grant_status(g.status) as i32,
                targeted: g.targeted,
                allocation: Some(convert::allocation(g.allocation)),
                effective: *effective,
            })
            .collect();
        Ok(Response::new(ExplainResponse {
            decision: Some(decision(index, &q, &e.decision, checked.history_at(q.at))),
            grants,
            feature_flag_on: e.flag_on,
            matched_route_id: matched_route(index, &q),
            linked_feature_keys: e.linked_features.clone(),
            revision: index.revision(),
        }))
    }

    async fn what_if(&self, request: Request<WhatIfRequest>) -> Result<Response<WhatIfResponse>> {
        let r = request.into_inner();
        let at = r.at.map(|t| convert::time("at", &t)).transpose()?;
        let mut changes = Vec::with_capacity(r.changes.len());
        for (i, change) in r.changes.into_iter().enumerate() {
            let field = format!("changes[{i}]");
            let time = |t: Option<prost_types::Timestamp>, name: &str| {
                t.map(|t| convert::time(&format!("{field}.grant.{name}"), &t))
                    .transpose()
            };
            changes.push(match change.change {
                Some(hypothetical_change::Change::Grant(g)) => WhatIfChange::Grant {
                    starts_at: time(g.starts_at, "starts_at")?,
                    expires_at: time(g.expires_at, "expires_at")?,
                    tenant_id: g.tenant_id,
                    user_id: g.user_id,
                    plan: g.plan.map(|p| match p {
                        new_grant::Plan::PlanId(id) => PlanName::Id(id),
                        new_grant::Plan::PlanKey(k) => PlanName::Key(k),
                    }),
                },
                Some(hypothetical_change::Change::RevokeGrantId(id)) => {
                    WhatIfChange::RevokeGrant(id)
                }
                Some(hypothetical_change::Change::RevokePlan(p)) => WhatIfChange::RevokePlan(p),
                None => WhatIfChange::Missing,
            });
        }
        let checked = checks::what_if(
            &*self.source,
            WhatIfQuery {
                tenant_id: r.tenant_id,
                user_id: r.user_id,
                changes,
                at,
                requested: r.requested_amount,
                min_revision: r.min_revision,
            },
        )
        .await?;
        let as_of = checked.history_at(at).map(convert::timestamp);
        let meter = |m: &Option<domain::MeterOutlook>| {
            m.as_ref().and_then(|m| {
                Some(pb::MeterReading {
                    owner_tenant_id: m.owner_tenant_id.clone(),
                    user_id: m.user_id.clone(),
                    as_of,
                    ..meter_reading(m.reading?)
                })
            })
        };
        let amount = |m: &Option<domain::MeterOutlook>| {
            m.as_ref().map(|m| AmountDecision {
                result: m.result,
                justification: justification(m.justification) as i32,
                allow_reason: allow_reason(m.allow_reason) as i32,
            })
        };
        let encode = |list: Vec<domain::FeatureChange>| {
            list.into_iter()
                .map(|c| pb::FeatureChange {
                    before: Some(convert::allocation(c.before)),
                    after: Some(convert::allocation(c.after)),
                    meter_before: meter(&c.meter_before),
                    meter_after: meter(&c.meter_after),
                    decision_before: amount(&c.meter_before),
                    decision_after: amount(&c.meter_after),
                    feature_key: c.key,
                })
                .collect()
        };
        let revision = checked.index.revision();
        let result = checked.value;
        Ok(Response::new(WhatIfResponse {
            gained: encode(result.gained),
            lost: encode(result.lost),
            changed: encode(result.changed),
            revision,
        }))
    }

    async fn get_revision(
        &self,
        _request: Request<GetRevisionRequest>,
    ) -> Result<Response<GetRevisionResponse>> {
        Ok(Response::new(GetRevisionResponse {
            revision: self.source.revision(),
        }))
    }
}
