//! A deliberately simple reference evaluator (linear scans over plain `Vec`s, conditions read
//! straight from their JSON) and a property test holding the index to it on random plans,
//! grants, hierarchies, flags, routes and times, with the index built partly incrementally.

use std::cmp::Reverse;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::index::{
    AllowReason, CheckRequest, DecidedBy, Decision, EffectiveFeature, FeatureChange, FeatureIndex,
    GrantLevel, Hypothetical, Justification, MAX_ANCESTOR_DEPTH, Subject, Target, WhatIf,
};
use super::model::{
    Allocation, AllocationType, AttributeType, Condition, ConditionOp, Feature, FeatureFlag, Grant,
    GrantSource, GrantStatus, Limit, MergePolicy, Plan, PlanFeature, Route, RoutePolicy, Rule,
    Treatment,
};
use super::writer::{IndexChange, IndexWriter, Snapshot};

/// The whole world as plain data.
#[derive(Debug, Clone, Default)]
struct World {
    features: Vec<Feature>,
    plans: Vec<Plan>,
    flags: Vec<FeatureFlag>,
    routes: Vec<Route>,
    tenants: Vec<(String, Option<String>)>,
    grants: Vec<Grant>,
}

fn status(g: &Grant, at: DateTime<Utc>) -> GrantStatus {
    if g.revoked_at.is_some_and(|r| r <= at) {
        GrantStatus::Revoked
    } else if g.expires_at.is_some_and(|e| e <= at) {
        GrantStatus::Expired
    } else if at < g.starts_at {
        GrantStatus::Scheduled
    } else {
        GrantStatus::Active
    }
}

fn ref_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            let d: NaiveDate = s.parse().ok()?;
            Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
        })
}

fn ref_condition(c: &Condition, attrs: Option<&Map<String, Value>>) -> bool {
    let Some(v) = attrs.and_then(|a| a.get(&c.attribute)) else {
        return false;
    };
    let list = || -> Vec<String> {
        c.value["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    };
    let date = |v: &Value| v.as_str().and_then(ref_date);
    let cv = |k: &str| c.value[k].clone();
    let s = v.as_str();
    use ConditionOp::*;
    let outcome: Option<bool> = match c.op {
        InList => match v {
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|s| list().iter().any(|x| x == s)),
            ),
            Value::Null
            | Value::Bool(_)
            | Value::Number(_)
            | Value::String(_)
            | Value::Object(_) => s.map(|s| list().iter().any(|x| x == s)),
        },
        StartsWith => s.map(|s| list().iter().any(|x| s.starts_with(x.as_str()))),
        EndsWith => s.map(|s| list().iter().any(|x| s.ends_with(x.as_str()))),
        Contains => s.map(|s| list().iter().any(|x| s.contains(x.as_str()))),
        Matches => s.map(|s| {
            Regex::new(cv("string").as_str().unwrap())
                .unwrap()
                .is_match(s)
        }),
        Equal => num(v).map(|x| x == cv("number").as_f64().unwrap()),
        GreaterThan => num(v).map(|x| x > cv("number").as_f64().unwrap()),
        GreaterThanEqual => num(v).map(|x| x >= cv("number").as_f64().unwrap()),
        LowerThan => num(v).map(|x| x < cv("number").as_f64().unwrap()),
        LowerThanEqual => num(v).map(|x| x <= cv("number").as_f64().unwrap()),
        BetweenNumeric => {
            num(v).map(|x| cv("start").as_f64().unwrap() <= x && x <= cv("end").as_f64().unwrap())
        }
        Is => match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            Value::Null
            | Value::Number(_)
            | Value::String(_)
            | Value::Array(_)
            | Value::Object(_) => None,
        }
        .map(|b| b == cv("boolean").as_bool().unwrap()),
        On => date(v).map(|d| d.date_naive() == date(&cv("date")).unwrap().date_naive()),
        BetweenDate => {
            date(v).map(|d| date(&cv("start")).unwrap() <= d && d <= date(&cv("end")).unwrap())
        }
        OnOrAfter => date(v).map(|d| d >= date(&cv("date")).unwrap()),
        OnOrBefore => date(v).map(|d| d <= date(&cv("date")).unwrap()),
    };
    outcome.is_some_and(|o| o != c.negate)
}

fn ref_rules(rules: &[Rule], default: Treatment, attrs: Option<&Map<String, Value>>) -> bool {
    for rule in rules {
        if rule.conditions.iter().all(|c| ref_condition(c, attrs)) {
            return rule.treatment == Treatment::True;
        }
    }
    default == Treatment::True
}

fn ref_route_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", _)) => true,
        Some((&"*", rest)) => !path.is_empty() && ref_route_match(rest, &path[1..]),
        Some((lit, rest)) => path.first() == Some(lit) && ref_route_match(rest, &path[1..]),
    }
}

struct Verdict {
    result: bool,
    justification: Option<Justification>,
    reason: Option<AllowReason>,
    allocation: Option<Allocation>,
    decided_by: Option<DecidedBy>,
    /// The deciding feature's key.
    feature: Option<String>,
    next: Option<DateTime<Utc>>,
}

fn deny(j: Justification) -> Verdict {
    Verdict {
        result: false,
        justification: Some(j),
        reason: None,
        allocation: None,
        decided_by: None,
        feature: None,
        next: None,
    }
}

fn allow(reason: AllowReason) -> Verdict {
    Verdict {
        result: true,
        justification: None,
        reason: Some(reason),
        allocation: None,
        decided_by: None,
        feature: None,
        next: None,
    }
}

fn min_time(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl World {
    fn known(&self, t: &str) -> bool {
        self.tenants.iter().any(|(id, _)| id == t) || self.grants.iter().any(|g| g.tenant_id == t)
    }

    fn parent(&self, t: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|(id, _)| id == t)
            .and_then(|(_, p)| p.as_deref())
    }

    fn plan(&self, id: Uuid) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// A feature's position among all features sorted by key.
    fn feature_index(&self, key: &str) -> Option<FeatureIndex> {
        let mut keys: Vec<&str> = self.features.iter().map(|f| f.key.as_str()).collect();
        keys.sort_unstable();
        keys.iter()
            .position(|k| *k == key)
            .map(|i| FeatureIndex(i as u32))
    }

    fn plan_value(&self, plan: &Plan, feature: &Feature) -> Option<Allocation> {
        let pf = plan
            .features
            .iter()
            .find(|pf| pf.feature_key == feature.key)?;
        Some(
            pf.allocation
                .unwrap_or(Allocation::full(feature.allocation_type))
                .coerce(feature.allocation_type),
        )
    }

    /// (grant, level) in decision order.
    fn ordered_grants<'w>(
        &'w self,
        tenant: &'w str,
        user: Option<&str>,
    ) -> Vec<(&'w Grant, GrantLevel)> {
        let sorted = |t: &str, want_user: Option<&str>| {
            let mut v: Vec<&Grant> = self
                .grants
                .iter()
                .filter(|g| g.tenant_id == t && g.user_id.as_deref() == want_user)
                .collect();
            v.sort_by_key(|g| g.id);
            v
        };
        let mut out = Vec::new();
        if let Some(u) = user {
            out.extend(
                sorted(tenant, Some(u))
                    .into_iter()
                    .map(|g| (g, GrantLevel::User)),
            );
        }
        out.extend(
            sorted(tenant, None)
                .into_iter()
                .map(|g| (g, GrantLevel::Account)),
        );
        let mut visited = vec![tenant];
        let mut current = self.parent(tenant);
        while let Some(p) = current {
            if visited.contains(&p) || visited.len() > MAX_ANCESTOR_DEPTH || !self.known(p) {
                break;
            }
            let depth = visited.len() as u8;
            visited.push(p);
            for g in sorted(p, None) {
                if self
                    .plan(g.plan_id)
                    .is_some_and(|pl| pl.inherit_to_sub_accounts)
                {
                    out.push((g, GrantLevel::Ancestor { depth }));
                }
            }
            current = self.parent(p);
        }
        out
    }

    fn feature_verdict(
        &self,
        tenant: &str,
        subject: &Subject<'_>,
        key: &str,
        requested: Option<u64>,
        at: DateTime<Utc>,
    ) -> Verdict {
        let Some(feature) = self.features.iter().find(|f| f.key == key) else {
            return deny(Justification::MissingFeature);
        };
        if let Some(flag) = self.flags.iter().find(|f| f.feature_key == key) {
            let on = if flag.on {
                ref_rules(&flag.rules, flag.default_treatment, subject.attributes)
            } else {
                flag.off_treatment == Treatment::True
            };
            if !on {
                return Verdict {
                    feature: Some(key.to_owned()),
                    ..deny(Justification::FeatureFlagOff)
                };
            }
        }
        let mut relevant = Vec::new();
        for (g, level) in self.ordered_grants(tenant, subject.user_id) {
            let Some(plan) = self.plan(g.plan_id) else {
                continue;
            };
            if let Some(value) = self.plan_value(plan, feature) {
                let by = DecidedBy {
                    grant_id: Some(g.id),
                    plan_id: plan.id,
                    level,
                };
                relevant.push((g, value, by));
            }
        }
        let next = relevant
            .iter()
            .flat_map(|(g, _, _)| [Some(g.starts_at), g.expires_at, g.revoked_at])
            .flatten()
            .filter(|t| *t > at)
            .min();
        let mut active: Vec<(Allocation, DecidedBy)> = relevant
            .iter()
            .filter(|(g, _, _)| status(g, at) == GrantStatus::Active)
            .map(|(_, v, by)| (*v, *by))
            .collect();
        let mut targeted: Vec<&Plan> = self.plans.iter().filter(|p| p.has_targeting()).collect();
        targeted.sort_by_key(|p| p.id);
        for plan in targeted {
            if let Some(value) = self.plan_value(plan, feature)
                && ref_rules(&plan.rules, plan.default_treatment, subject.attributes)
            {
                let by = DecidedBy {
                    grant_id: None,
                    plan_id: plan.id,
                    level: GrantLevel::Targeting,
                };
                active.push((value, by));
            }
        }
        let granting: Vec<(Allocation, DecidedBy)> = active
            .iter()
            .copied()
            .filter(|(v, _)| v.is_granting())
            .collect();
        if !granting.is_empty() {
            let merged = match feature.allocation_type {
                AllocationType::Bool => Allocation::Bool(true),
                AllocationType::MaxCount | AllocationType::Metered => {
                    let limits: Vec<Limit> = granting
                        .iter()
                        .map(|(v, _)| match v {
                            Allocation::MaxCount(l) => *l,
                            Allocation::Bool(_) => unreachable!("coerced"),
                        })
                        .collect();
                    if limits.contains(&Limit::Unlimited) {
                        Allocation::MaxCount(Limit::Unlimited)
                    } else {
                        let finite = limits.iter().map(|l| match l {
                            Limit::Finite(n) => u128::from(*n),
                            Limit::Unlimited => 0,
                        });
                        let n = match feature.merge_policy {
                            MergePolicy::Max => finite.max().unwrap_or(0),
                            MergePolicy::Sum => finite.sum::<u128>(),
                        };
                        Allocation::MaxCount(Limit::Finite(n.min(u128::from(u64::MAX)) as u64))
                    }
                }
            };
            let strongest = granting
                .iter()
                .map(|(v, _)| *v)
                .max_by(|a, b| a.strength_cmp(*b))
                .unwrap();
            let decider = granting
                .iter()
                .find(|(v, _)| *v == strongest)
                .map(|(_, by)| *by);
            let exceeded = match (merged, requested) {
                (Allocation::MaxCount(Limit::Finite(n)), Some(r)) => r > n,
                _ => false,
            };
            return Verdict {
                result: !exceeded,
                justification: exceeded.then_some(Justification::LimitExceeded),
                reason: (!exceeded).then_some(AllowReason::Grant),
                allocation: Some(merged),
                decided_by: decider,
                feature: Some(key.to_owned()),
                next,
            };
        }
        for (want, j) in [
            (GrantStatus::Expired, Justification::PlanExpired),
            (GrantStatus::Revoked, Justification::PlanRevoked),
            (GrantStatus::Scheduled, Justification::NotStarted),
        ] {
            if let Some((_, _, by)) = relevant.iter().find(|(g, _, _)| status(g, at) == want) {
                return Verdict {
                    decided_by: Some(*by),
                    feature: Some(key.to_owned()),
                    next,
                    ..deny(j)
                };
            }
        }
        let inactive_false = active.first().map(|(_, by)| *by);
        Verdict {
            allocation: inactive_false.map(|_| Allocation::Bool(false)),
            decided_by: inactive_false,
            feature: Some(key.to_owned()),
            next,
            ..deny(Justification::MissingFeature)
        }
    }

    fn permission_verdict(
        &self,
        tenant: &str,
        subject: &Subject<'_>,
        key: &str,
        at: DateTime<Utc>,
    ) -> Verdict {
        if !crate::permission::holds(subject.permissions, key) {
            return deny(Justification::MissingPermission);
        }
        let mut linked: Vec<&Feature> = self
            .features
            .iter()
            .filter(|f| f.permissions.iter().any(|p| p == key))
            .collect();
        linked.sort_by(|a, b| a.key.cmp(&b.key));
        if linked.is_empty() {
            return allow(AllowReason::UngatedPermission);
        }
        let verdicts: Vec<Verdict> = linked
            .iter()
            .map(|f| self.feature_verdict(tenant, subject, &f.key, None, at))
            .collect();
        let next = verdicts.iter().fold(None, |acc, v| min_time(acc, v.next));
        let pick = verdicts.iter().position(|v| v.result).unwrap_or(0);
        let v = &verdicts[pick];
        Verdict {
            result: v.result,
            justification: v.justification,
            reason: v.reason,
            allocation: v.allocation,
            decided_by: v.decided_by,
            feature: v.feature.clone(),
            next,
        }
    }

    fn route_verdict(
        &self,
        tenant: &str,
        subject: &Subject<'_>,
        method: &str,
        path: &str,
        at: DateTime<Utc>,
    ) -> Verdict {
        let path = path.split('?').next().unwrap_or("");
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rank = |r: &Route| -> Vec<u8> {
            let mut v: Vec<u8> = r
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| match s {
                    "**" => 1,
                    "*" => 2,
                    _ => 3,
                })
                .collect();
            v.push(4);
            v
        };
        let policy_rank = |p: &RoutePolicy| match p {
            RoutePolicy::Deny => 3,
            RoutePolicy::Require { .. } => 2,
            RoutePolicy::Allow => 1,
        };
        let best = self
            .routes
            .iter()
            .filter(|r| r.method == "*" || r.method.eq_ignore_ascii_case(method))
            .filter(|r| {
                let pattern: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
                ref_route_match(&pattern, &segs)
            })
            .max_by_key(|r| {
                (
                    rank(r),
                    r.method != "*",
                    policy_rank(&r.policy),
                    Reverse(r.id),
                )
            });
        let Some(route) = best else {
            return deny(Justification::MissingRoute);
        };
        match &route.policy {
            RoutePolicy::Allow => allow(AllowReason::RouteAllow),
            RoutePolicy::Deny => deny(Justification::RouteDenied),
            RoutePolicy::Require {
                features,
                permissions,
            } => {
                // Every requirement must hold; the first one met through a grant (features
                // before permissions) names the decider.
                let mut verdicts = Vec::new();
                for f in features {
                    verdicts.push(self.feature_verdict(tenant, subject, f, None, at));
                }
                for p in permissions {
                    verdicts.push(self.permission_verdict(tenant, subject, p, at));
                }
                if let Some(i) = verdicts.iter().position(|v| !v.result) {
                    return verdicts.swap_remove(i);
                }
                let decider = verdicts.iter().find(|v| v.decided_by.is_some());
                Verdict {
                    decided_by: decider.and_then(|v| v.decided_by),
                    feature: decider.and_then(|v| v.feature.clone()),
                    next: verdicts.iter().fold(None, |acc, v| min_time(acc, v.next)),
                    ..allow(AllowReason::RouteRequirementsMet)
                }
            }
        }
    }

    fn check(&self, request: &CheckRequest<'_>, at: DateTime<Utc>, revision: u64) -> Decision {
        let subject = &request.subject;
        let tenant = subject.tenant_id;
        let v = if !self.known(tenant) {
            deny(Justification::TenantNotFound)
        } else {
            match request.target {
                Target::Feature(k) => {
                    self.feature_verdict(tenant, subject, k, request.requested, at)
                }
                Target::Permission(p) => self.permission_verdict(tenant, subject, p, at),
                Target::Route { method, path } => {
                    self.route_verdict(tenant, subject, method, path, at)
                }
            }
        };
        Decision {
            meter: Default::default(),
            meter_pool: None,
            meter_user: false,
            result: v.result,
            justification: v.justification,
            allow_reason: v.reason,
            allocation: v.allocation,
            decided_by: v.decided_by,
            feature: v.feature.as_deref().and_then(|k| self.feature_index(k)),
            next_change_at: v.next,
            revision,
        }
    }

    fn entitlements(
        &self,
        subject: &Subject<'_>,
        at: DateTime<Utc>,
    ) -> Option<Vec<EffectiveFeature>> {
        let tenant = Some(subject.tenant_id).filter(|t| self.known(t))?;
        let mut features: Vec<&Feature> = self.features.iter().collect();
        features.sort_by(|a, b| a.key.cmp(&b.key));
        Some(
            features
                .into_iter()
                .filter_map(|f| {
                    let v = self.feature_verdict(tenant, subject, &f.key, None, at);
                    v.result.then(|| EffectiveFeature {
                        key: f.key.clone(),
                        allocation: v.allocation.unwrap_or(Allocation::Bool(true)),
                        decided_by: v.decided_by,
                        next_change_at: v.next,
                    })
                })
                .collect(),
        )
    }
}

impl World {
    /// What-if by brute force: copy the world, edit its grants change by change, list the
    /// entitlements before and after and diff them. `None` where the index gives an error.
    /// The worlds hold no metered features (their meters and decisions are the entitlement
    /// service's reference ledgers' and the index's what-if tests'), so no change carries a
    /// meter.
    fn what_if(
        &self,
        subject: &Subject<'_>,
        changes: &[Hypothetical],
        at: DateTime<Utc>,
    ) -> Option<WhatIf> {
        let before = self.entitlements(subject, at)?;
        let tenant = subject.tenant_id;
        let direct = |g: &Grant| {
            g.tenant_id == tenant
                && (g.user_id.is_none() || g.user_id.as_deref() == subject.user_id)
        };
        let mut after_world = self.clone();
        for (i, change) in changes.iter().enumerate() {
            match *change {
                Hypothetical::GrantPlan {
                    plan_id,
                    to_user,
                    starts_at,
                    expires_at,
                } => {
                    self.plan(plan_id)?;
                    let starts_at = starts_at.unwrap_or(at);
                    if expires_at.is_some_and(|e| e <= starts_at) {
                        return None;
                    }
                    after_world.grants.push(Grant {
                        id: Uuid::from_u128(u128::MAX - i as u128),
                        plan_id,
                        tenant_id: tenant.to_owned(),
                        user_id: subject.user_id.filter(|_| to_user).map(str::to_owned),
                        starts_at,
                        expires_at,
                        revoked_at: None,
                        revoked_by: None,
                        revoke_reason: None,
                        source: GrantSource::Api,
                        external_id: None,
                        granted_by: None,
                        metadata: Value::Null,
                        created_at: at,
                        updated_at: at,
                    });
                }
                Hypothetical::RevokePlan { plan_id } => {
                    self.plan(plan_id)?;
                    after_world
                        .grants
                        .retain(|g| !(g.plan_id == plan_id && direct(g)));
                }
                Hypothetical::RevokeGrant { grant_id } => {
                    // Held in the world as it is, not as earlier changes left it.
                    if !self.grants.iter().any(|g| g.id == grant_id && direct(g)) {
                        return None;
                    }
                    after_world.grants.retain(|g| g.id != grant_id);
                }
            }
        }
        let after = after_world.entitlements(subject, at)?;
        let mut out = WhatIf::default();
        for b in &before {
            match after.iter().find(|a| a.key == b.key) {
                None => out.lost.push(FeatureChange {
                    key: b.key.clone(),
                    before: Some(b.allocation),
                    after: None,
                    meter_before: None,
                    meter_after: None,
                }),
                Some(a) if a.allocation != b.allocation => out.changed.push(FeatureChange {
                    key: b.key.clone(),
                    before: Some(b.allocation),
                    after: Some(a.allocation),
                    meter_before: None,
                    meter_after: None,
                }),
                Some(_) => {}
            }
        }
        for a in &after {
            if !before.iter().any(|b| b.key == a.key) {
                out.gained.push(FeatureChange {
                    key: a.key.clone(),
                    before: None,
                    after: Some(a.allocation),
                    meter_before: None,
                    meter_after: None,
                });
            }
        }
        Some(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Random worlds
// ---------------------------------------------------------------------------------------------

const FEATURES: usize = 5;
const PLANS: usize = 4;
const TENANTS: usize = 5;
const PERMS: [&str; 3] = ["p0", "p1", "p2"];
const USERS: [&str; 2] = ["u0", "u1"];
const PATTERNS: [&str; 6] = ["/a/*", "/a/b", "/**", "/a/**", "/x/*/y", "/a/*/c"];
const PATHS: [&str; 6] = ["/a/b", "/a/z", "/a/b/c", "/x/1/y", "/q", "/a"];
const METHODS: [&str; 3] = ["*", "GET", "POST"];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn hour(h: u8) -> DateTime<Utc> {
    base() + chrono::Duration::hours(i64::from(h))
}

fn condition_pool() -> Vec<Condition> {
    use ConditionOp::*;
    let c = |attribute: &str, op, value: Value| Condition {
        attribute: attribute.into(),
        attribute_type: AttributeType::Custom,
        negate: false,
        op,
        value,
    };
    let pool = vec![
        c("tier", InList, json!({"list": ["gold"]})),
        c("email", StartsWith, json!({"list": ["ann"]})),
        c("email", EndsWith, json!({"list": [".com"]})),
        c("email", Contains, json!({"list": ["acme"]})),
        c("email", Matches, json!({"string": "^[a-b]"})),
        c("seats", Equal, json!({"number": 10})),
        c("seats", GreaterThan, json!({"number": 5})),
        c("seats", GreaterThanEqual, json!({"number": 3})),
        c("seats", LowerThan, json!({"number": 4})),
        c("seats", LowerThanEqual, json!({"number": 10})),
        c("seats", BetweenNumeric, json!({"start": 2, "end": 5})),
        c("beta", Is, json!({"boolean": true})),
        c("signup", On, json!({"date": "2024-03-05"})),
        c(
            "signup",
            BetweenDate,
            json!({"start": "2024-01-01", "end": "2024-12-31T23:59:59Z"}),
        ),
        c("signup", OnOrAfter, json!({"date": "2024-01-01"})),
        c(
            "signup",
            OnOrBefore,
            json!({"date": "2024-01-01T00:00:00Z"}),
        ),
    ];
    assert_eq!(
        pool.len(),
        ConditionOp::ALL.len(),
        "one condition per operator"
    );
    pool
}

fn attribute_pool() -> Vec<Option<Map<String, Value>>> {
    vec![
        None,
        json!({"tier": "gold", "seats": 10, "beta": true, "signup": "2024-03-05T10:00:00Z",
               "email": "ann@acme.io"})
        .as_object()
        .cloned(),
        json!({"tier": "silver", "seats": "3", "beta": "false", "signup": "2023-12-31",
               "email": "bob@other.com"})
        .as_object()
        .cloned(),
        json!({"tier": 5, "seats": "x", "beta": 1, "signup": "never"})
            .as_object()
            .cloned(),
    ]
}

/// (condition, negate, second condition, treatment)
type RuleSpec = (usize, bool, Option<usize>, bool);

fn rule_strategy() -> impl Strategy<Value = RuleSpec> {
    (
        0..16usize,
        any::<bool>(),
        proptest::option::of(0..16usize),
        any::<bool>(),
    )
}

fn build_rules(specs: &[RuleSpec]) -> Vec<Rule> {
    let pool = condition_pool();
    specs
        .iter()
        .map(|&(a, negate, b, treatment)| {
            let mut first = pool[a].clone();
            first.negate = negate;
            let mut conditions = vec![first];
            conditions.extend(b.map(|b| pool[b].clone()));
            Rule {
                description: None,
                conditions,
                treatment: treatment.into(),
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct FeatureSpec {
    max_count: bool,
    sum: bool,
    perms: u8,
    /// (on, off treatment, default treatment, rules)
    flag: Option<(bool, bool, bool, Vec<RuleSpec>)>,
}

#[derive(Debug, Clone)]
struct PlanSpec {
    /// Per feature: None = not included, Some(choice) picks the allocation.
    features: Vec<Option<u8>>,
    inherit: bool,
    rules: Vec<RuleSpec>,
    default_true: bool,
}

#[derive(Debug, Clone)]
struct GrantSpec {
    tenant: usize,
    user: Option<usize>,
    /// `PLANS` means a plan that does not exist.
    plan: usize,
    start: u8,
    duration: Option<u8>,
    revoked: Option<u8>,
}

#[derive(Debug, Clone)]
struct RouteSpec {
    pattern: usize,
    method: usize,
    /// 0 allow, 1 deny, 2 require
    policy: u8,
    features: u8,
    perms: u8,
}

#[derive(Debug, Clone)]
struct AskSpec {
    tenant: usize,
    user: Option<usize>,
    perms: u8,
    attrs: usize,
    /// 0 feature, 1 permission, 2 route
    kind: u8,
    which: usize,
    method: usize,
    requested: Option<u64>,
    at: u8,
}

/// (kind: 0 grant plan, 1 revoke plan, 2 revoke grant; plan or grant index; to user;
/// window: 0 open, 1 starts later, 2 ends at the last hour asked about)
type ChangeSpec = (u8, usize, bool, u8);

#[derive(Debug, Clone)]
struct Scenario {
    /// Hypothetical change lists, each tried for every ask's subject.
    what_ifs: Vec<Vec<ChangeSpec>>,
    features: Vec<FeatureSpec>,
    plans: Vec<PlanSpec>,
    parents: Vec<Option<usize>>,
    grants: Vec<GrantSpec>,
    routes: Vec<RouteSpec>,
    asks: Vec<AskSpec>,
    deletes: Vec<usize>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let feature = (
        any::<bool>(),
        any::<bool>(),
        0..8u8,
        proptest::option::weighted(
            0.4,
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec(rule_strategy(), 0..3),
            ),
        ),
    )
        .prop_map(|(max_count, sum, perms, flag)| FeatureSpec {
            max_count,
            sum,
            perms,
            flag,
        });
    let plan = (
        prop::collection::vec(proptest::option::of(0..8u8), FEATURES),
        any::<bool>(),
        prop::collection::vec(rule_strategy(), 0..2),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(features, inherit, rules, default_true)| PlanSpec {
            features,
            inherit,
            // Most plans are not targeted: keep rules on a few only.
            rules: if rules.len() == 1 { rules } else { vec![] },
            default_true,
        });
    let grant = (
        0..TENANTS,
        proptest::option::of(0..USERS.len()),
        0..=PLANS,
        0..6u8,
        proptest::option::of(1..6u8),
        proptest::option::weighted(0.2, 0..10u8),
    )
        .prop_map(|(tenant, user, plan, start, duration, revoked)| GrantSpec {
            tenant,
            user,
            plan,
            start,
            duration,
            revoked,
        });
    let route = (0..PATTERNS.len(), 0..METHODS.len(), 0..3u8, 0..64u8, 0..8u8).prop_map(
        |(pattern, method, policy, features, perms)| RouteSpec {
            pattern,
            method,
            policy,
            features,
            perms,
        },
    );
    let ask = (
        (
            0..=TENANTS,
            proptest::option::of(0..USERS.len()),
            0..16u8,
            0..4usize,
        ),
        (0..3u8, 0..8usize, 0..METHODS.len()),
        (proptest::option::of(0..30u64), 0..14u8),
    )
        .prop_map(
            |((tenant, user, perms, attrs), (kind, which, method), (requested, at))| AskSpec {
                tenant,
                user,
                perms,
                attrs,
                kind,
                which,
                method,
                requested,
                at,
            },
        );
    (
        prop::collection::vec(feature, FEATURES),
        prop::collection::vec(plan, PLANS),
        prop::collection::vec(proptest::option::of(0..TENANTS), TENANTS),
        prop::collection::vec(grant, 0..16),
        prop::collection::vec(route, 0..4),
        prop::collection::vec(ask, 1..24),
        prop::collection::vec(0..16usize, 0..3),
        prop::collection::vec(
            prop::collection::vec((0..3u8, 0..16usize, any::<bool>(), 0..3u8), 1..5),
            0..3,
        ),
    )
        .prop_map(
            |(features, plans, parents, grants, routes, asks, deletes, what_ifs)| Scenario {
                what_ifs,
                features,
                plans,
                parents,
                grants,
                routes,
                asks,
                deletes,
            },
        )
}

fn ids(n: usize, seed: u128) -> Vec<Uuid> {
    (0..n as u128)
        .map(|i| Uuid::from_u128((seed << 64) | (i * 7919 + 13)))
        .collect()
}

fn materialize(s: &Scenario) -> World {
    let feature_ids = ids(FEATURES, 1);
    let plan_ids = ids(PLANS + 1, 2);
    // Caller-chosen strings, some UUID-shaped, as the tenant service allows.
    let tenant_ids: Vec<String> = (0..TENANTS)
        .map(|i| match i % 3 {
            0 => format!("acme-{i}"),
            1 => Uuid::from_u128((3 << 64) | i as u128).to_string(),
            _ => format!("t{i}.example:eu"),
        })
        .collect();
    let mask_perms = |m: u8| -> Vec<String> {
        PERMS
            .iter()
            .enumerate()
            .filter(|(i, _)| m & (1 << i) != 0)
            .map(|(_, p)| p.to_string())
            .collect()
    };
    let mut w = World::default();
    for (i, f) in s.features.iter().enumerate() {
        let key = format!("f{i}");
        w.features.push(Feature {
            id: feature_ids[i],
            key: key.clone(),
            name: key.clone(),
            description: None,
            metadata: Value::Null,
            permissions: mask_perms(f.perms),
            allocation_type: if f.max_count {
                AllocationType::MaxCount
            } else {
                AllocationType::Bool
            },
            merge_policy: if f.sum {
                MergePolicy::Sum
            } else {
                MergePolicy::Max
            },
            metering: None,
        });
        if let Some((on, off, default, rules)) = &f.flag {
            w.flags.push(FeatureFlag {
                id: Uuid::from_u128((0xf1a6 << 32) | i as u128),
                feature_key: key,
                name: String::new(),
                description: None,
                on: *on,
                off_treatment: (*off).into(),
                default_treatment: (*default).into(),
                rules: build_rules(rules),
            });
        }
    }
    for (i, p) in s.plans.iter().enumerate() {
        let features = p
            .features
            .iter()
            .enumerate()
            .filter_map(|(f, choice)| {
                let choice = (*choice)?;
                let key = format!("f{f}");
                let allocation = match (s.features[f].max_count, choice) {
                    (_, 0) => None,
                    (false, c) => Some(Allocation::Bool(c % 3 != 0)),
                    (true, 7) => Some(Allocation::MaxCount(Limit::Unlimited)),
                    (true, c) => Some(Allocation::MaxCount(Limit::Finite(u64::from(c - 1) * 5))),
                };
                Some(PlanFeature {
                    feature_key: key,
                    allocation,
                })
            })
            .collect();
        w.plans.push(Plan {
            id: plan_ids[i],
            key: format!("plan{i}"),
            name: format!("plan{i}"),
            description: None,
            metadata: Value::Null,
            features,
            default_time_limitation_days: None,
            assign_on_signup: false,
            rules: build_rules(&p.rules),
            default_treatment: p.default_true.into(),
            inherit_to_sub_accounts: p.inherit,
        });
    }
    w.tenants = tenant_ids
        .iter()
        .zip(&s.parents)
        .map(|(t, p)| (t.clone(), p.map(|p| tenant_ids[p].clone())))
        .collect();
    for (i, g) in s.grants.iter().enumerate() {
        let starts_at = hour(g.start);
        w.grants.push(Grant {
            id: Uuid::from_u128((0x6a << 64) | ((i as u128 * 104_729) % 1000)),
            plan_id: plan_ids[g.plan],
            tenant_id: tenant_ids[g.tenant].clone(),
            user_id: g.user.map(|u| USERS[u].to_string()),
            starts_at,
            expires_at: g
                .duration
                .map(|d| starts_at + chrono::Duration::hours(i64::from(d))),
            revoked_at: g.revoked.map(hour),
            revoked_by: None,
            revoke_reason: None,
            source: GrantSource::Api,
            external_id: None,
            granted_by: None,
            metadata: Value::Null,
            created_at: base(),
            updated_at: base(),
        });
    }
    for (i, r) in s.routes.iter().enumerate() {
        let features: Vec<String> = (0..6)
            .filter(|b| r.features & (1 << b) != 0)
            .map(|b| {
                if b == 5 {
                    "zz".to_string()
                } else {
                    format!("f{b}")
                }
            })
            .collect();
        let policy = match r.policy {
            0 => RoutePolicy::Allow,
            1 => RoutePolicy::Deny,
            _ => RoutePolicy::Require {
                features,
                permissions: mask_perms(r.perms),
            },
        };
        w.routes.push(Route {
            id: Uuid::from_u128((0x7007 << 32) | i as u128),
            method: METHODS[r.method].into(),
            path: PATTERNS[r.pattern].into(),
            policy,
            description: None,
        });
    }
    w
}

/// Builds the index the way a service would: a snapshot, then writes, then deletions.
fn build_incrementally(
    w: &World,
    deletes: &[Uuid],
) -> std::sync::Arc<super::index::EntitlementIndex> {
    let half = w.grants.len() / 2;
    let (held_back_plan, first_plans) = w.plans.split_last().expect("plans");
    let mut writer = IndexWriter::from_snapshot(
        Snapshot {
            meters: Default::default(),
            user_meters: Default::default(),
            features: w.features.clone(),
            plans: first_plans.to_vec(),
            flags: vec![],
            routes: vec![],
            tenants: w.tenants.clone(),
            grants: w.grants[..half].to_vec(),
        },
        1,
    );
    writer.apply([IndexChange::UpsertPlan(held_back_plan.clone())]);
    writer.apply(w.flags.iter().cloned().map(IndexChange::UpsertFlag));
    writer.apply(w.routes.iter().cloned().map(IndexChange::UpsertRoute));
    for g in &w.grants[half..] {
        // one revision per write, as the service does for single writes
        writer.apply([IndexChange::UpsertGrant(g.clone())]);
    }
    writer.apply(deletes.iter().map(|&id| IndexChange::DeleteGrant { id }))
}

struct AskData {
    tenant: String,
    user: Option<&'static str>,
    perms: Vec<String>,
    attrs: Option<Map<String, Value>>,
    target: (u8, String, &'static str),
    requested: Option<u64>,
    at: DateTime<Utc>,
}

fn ask_data(a: &AskSpec, tenants: &[String], attrs: &[Option<Map<String, Value>>]) -> AskData {
    let tenant = tenants
        .get(a.tenant)
        .cloned()
        .unwrap_or_else(|| "unknown-tenant".to_owned());
    let perms = PERMS
        .iter()
        .chain(["unlinked"].iter())
        .enumerate()
        .filter(|(i, _)| a.perms & (1 << i) != 0)
        .map(|(_, p)| p.to_string())
        .collect();
    let which = match a.kind {
        0 => {
            if a.which < FEATURES {
                format!("f{}", a.which)
            } else {
                "unknown".into()
            }
        }
        1 => ["p0", "p1", "p2", "unlinked"][a.which % 4].into(),
        _ => PATHS[a.which % PATHS.len()].into(),
    };
    AskData {
        tenant,
        user: a.user.map(|u| USERS[u]),
        perms,
        attrs: attrs[a.attrs].clone(),
        target: (a.kind, which, METHODS[a.method]),
        requested: a.requested,
        at: hour(a.at),
    }
}

impl AskData {
    fn request(&self) -> CheckRequest<'_> {
        let (kind, which, method) = &self.target;
        CheckRequest {
            subject: Subject {
                tenant_id: &self.tenant,
                user_id: self.user,
                permissions: &self.perms,
                attributes: self.attrs.as_ref(),
            },
            target: match kind {
                0 => Target::Feature(which),
                1 => Target::Permission(which),
                _ => Target::Route {
                    method: if *method == "*" { "DELETE" } else { method },
                    path: which,
                },
            },
            requested: self.requested,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_reference(s in scenario()) {
        let mut world = materialize(&s);
        let deletes: Vec<Uuid> = s
            .deletes
            .iter()
            .filter_map(|&i| world.grants.get(i).map(|g| g.id))
            .collect();
        let index = build_incrementally(&world, &deletes);
        world.grants.retain(|g| !deletes.contains(&g.id));
        prop_assert_eq!(index.grant_count(), world.grants.len());

        let tenants: Vec<String> = world.tenants.iter().map(|(t, _)| t.clone()).collect();
        let attrs = attribute_pool();
        let asks: Vec<AskData> = s.asks.iter().map(|a| ask_data(a, &tenants, &attrs)).collect();
        for ask in &asks {
            let request = ask.request();
            let expected = world.check(&request, ask.at, index.revision());
            prop_assert_eq!(index.check(&request, ask.at), expected, "request {:?}", request);
        }

        let at = asks[0].at;
        let requests: Vec<CheckRequest<'_>> = asks.iter().map(AskData::request).collect();
        let expected: Vec<Decision> =
            requests.iter().map(|r| world.check(r, at, index.revision())).collect();
        prop_assert_eq!(index.check_batch(&requests, at), expected);

        for ask in &asks {
            let subject = ask.request().subject;
            let got = index.account_entitlements(&subject, ask.at).ok();
            prop_assert_eq!(got, world.entitlements(&subject, ask.at), "subject {:?}", subject);
        }

        let plan_ids: Vec<Uuid> = ids(PLANS + 1, 2);
        // Mostly live plans; index 15 names the plan that does not exist.
        let plan_of = |which: usize| plan_ids[if which == 15 { PLANS } else { which % PLANS }];
        for specs in &s.what_ifs {
            for ask in &asks {
                let subject = ask.request().subject;
                // Revocations pick among the grants the subject holds directly (an unknown
                // id when it holds none).
                let held: Vec<Uuid> = world
                    .grants
                    .iter()
                    .filter(|g| {
                        g.tenant_id == subject.tenant_id
                            && (g.user_id.is_none() || g.user_id.as_deref() == subject.user_id)
                    })
                    .map(|g| g.id)
                    .collect();
                let changes: Vec<Hypothetical> = specs
                    .iter()
                    .map(|&(kind, which, to_user, window)| match kind {
                        0 => Hypothetical::GrantPlan {
                            plan_id: plan_of(which),
                            to_user,
                            starts_at: (window == 1).then(|| hour(8)),
                            expires_at: (window == 2).then(|| hour(13)),
                        },
                        1 => Hypothetical::RevokePlan {
                            plan_id: plan_of(which),
                        },
                        _ => Hypothetical::RevokeGrant {
                            grant_id: held
                                .get(which % held.len().max(1))
                                .copied()
                                .unwrap_or_else(|| Uuid::from_u128(which as u128)),
                        },
                    })
                    .collect();
                let got = index.what_if(&subject, &changes, ask.at, None).ok();
                prop_assert_eq!(
                    got,
                    world.what_if(&subject, &changes, ask.at),
                    "subject {:?} changes {:?}",
                    subject,
                    changes
                );
            }
        }
    }
}
