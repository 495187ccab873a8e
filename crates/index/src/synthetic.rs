//! A deterministic synthetic world for benchmarks of the in-process check: a catalog of 50
//! features (some counted, some under a flag rule, some behind routes), 20 plans of about 10
//! features, and `accounts` tenants in a shallow hierarchy with 10 grants each. The divan
//! benchmark (`benches/check.rs`) and the suite's B1 (`tenantry-bench`) build the same index
//! from it, so their figures describe the same thing.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    Allocation, AllocationType, AttributeType, CheckRequest, Condition, ConditionOp, Decision,
    EntitlementIndex, Feature, FeatureFlag, Grant, GrantSource, Limit, MergePolicy, Plan,
    PlanFeature, Route, RoutePolicy, Rule, Snapshot, Subject, Target, Treatment,
};

pub const FEATURES: usize = 50;
pub const PLANS: usize = 20;
pub const GRANTS_PER_ACCOUNT: usize = 10;
pub const USERS_PER_ACCOUNT: usize = 5;
/// Distinct permission keys (`perm.0` …), two features each.
pub const PERMISSIONS: usize = 25;
pub const ROUTES: usize = 20;

/// Deterministic pseudo-random numbers, so two runs build the same world (the benchmark
/// suite's fixtures use them too).
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The instant every check of the world is evaluated at: some grants have not started yet,
/// some have expired.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

pub fn feature_key(i: usize) -> String {
    format!("feature-{i:02}")
}

pub fn permission_key(i: usize) -> String {
    format!("perm.{i}")
}

pub fn user_id(i: usize) -> String {
    format!("user-{i}")
}

/// A path each route `r` matches (`/api/r{r}/*/items/**`).
pub fn route_path(r: usize) -> String {
    format!("/api/r{r}/42/items/a/b")
}

/// The targeting attributes the checks carry (no flag rule matches them).
pub fn attributes() -> Map<String, Value> {
    let mut attributes = Map::new();
    attributes.insert("country".into(), json!("de"));
    attributes.insert("plan".into(), json!("pro"));
    attributes
}

fn features() -> Vec<Feature> {
    (0..FEATURES)
        .map(|i| Feature {
            id: Uuid::from_u128(i as u128 + 1),
            key: feature_key(i),
            name: feature_key(i),
            description: None,
            metadata: Value::Null,
            permissions: vec![permission_key(i % PERMISSIONS)],
            allocation_type: if i % 5 == 0 {
                AllocationType::MaxCount
            } else {
                AllocationType::Bool
            },
            merge_policy: if i % 10 == 0 {
                MergePolicy::Sum
            } else {
                MergePolicy::Max
            },
            metering: None,
        })
        .collect()
}

fn plans(rng: &mut Lcg) -> Vec<Plan> {
    (0..PLANS)
        .map(|p| Plan {
            id: Uuid::from_u128(0x1000 + p as u128),
            key: format!("plan-{p}"),
            name: format!("plan {p}"),
            description: None,
            metadata: Value::Null,
            features: (0..10)
                .map(|_| rng.below(FEATURES))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|f| PlanFeature {
                    feature_key: feature_key(f),
                    allocation: (f % 5 == 0)
                        .then(|| Allocation::MaxCount(Limit::Finite(rng.below(100) as u64))),
                })
                .collect(),
            default_time_limitation_days: None,
            assign_on_signup: false,
            rules: vec![],
            default_treatment: Treatment::False,
            inherit_to_sub_accounts: p % 4 == 0,
        })
        .collect()
}

fn flags() -> Vec<FeatureFlag> {
    (0..FEATURES)
        .step_by(7)
        .map(|f| FeatureFlag {
            id: Uuid::from_u128(0x2000 + f as u128),
            feature_key: feature_key(f),
            name: String::new(),
            description: None,
            on: true,
            off_treatment: Treatment::False,
            default_treatment: Treatment::True,
            rules: vec![Rule {
                description: None,
                conditions: vec![Condition {
                    attribute: "country".into(),
                    attribute_type: AttributeType::Custom,
                    negate: false,
                    op: ConditionOp::InList,
                    value: json!({"list": ["xx", "yy"]}),
                }],
                treatment: Treatment::False,
            }],
        })
        .collect()
}

fn routes() -> Vec<Route> {
    (0..ROUTES)
        .map(|r| Route {
            id: Uuid::from_u128(0x3000 + r as u128),
            method: if r % 2 == 0 { "GET".into() } else { "*".into() },
            path: format!("/api/r{r}/*/items/**"),
            policy: RoutePolicy::Require {
                features: vec![feature_key(r)],
                permissions: vec![],
            },
            description: None,
        })
        .collect()
}

/// Each account's decision on each feature at [`now`] with [`attributes`], accounts in order:
/// what a copy of an index (a follower, a snapshot file) must reproduce.
pub fn feature_decisions(index: &EntitlementIndex, tenants: &[String]) -> Vec<Decision> {
    let attributes = attributes();
    let keys: Vec<String> = (0..FEATURES).map(feature_key).collect();
    let mut out = Vec::with_capacity(tenants.len() * FEATURES);
    for tenant in tenants {
        for key in &keys {
            let request = CheckRequest {
                subject: Subject {
                    tenant_id: tenant,
                    user_id: None,
                    permissions: &[],
                    attributes: Some(&attributes),
                },
                target: Target::Feature(key),
                requested: None,
            };
            out.push(index.check(&request, now()));
        }
    }
    out
}

/// `accounts` tenants (every tenant past the first 1% has a parent among them), 10 grants
/// each: 8 account-level, 2 for users; a mix of active, expired and scheduled. Returns the
/// snapshot and the tenant IDs in creation order.
pub fn world(accounts: usize, seed: u64) -> (Snapshot, Vec<String>) {
    let mut rng = Lcg::new(seed);
    let plans = plans(&mut Lcg::new(7));
    // Caller-chosen tenant IDs as customers pick them (slugs of varying length).
    let tenant_ids: Vec<String> = (0..accounts)
        .map(|i| format!("customer-{i:06}-{}", ["eu", "us-east", "apac"][i % 3]))
        .collect();
    let roots = (accounts / 100).max(1);
    let tenants = tenant_ids
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.clone(),
                (i >= roots).then(|| tenant_ids[i % roots].clone()),
            )
        })
        .collect();
    let mut grants = Vec::with_capacity(accounts * GRANTS_PER_ACCOUNT);
    for (i, tenant) in tenant_ids.iter().enumerate() {
        for g in 0..GRANTS_PER_ACCOUNT {
            let starts_at = now() - Duration::days(rng.below(400) as i64 - 20);
            let expires_at = (rng.below(3) == 0).then(|| starts_at + Duration::days(365));
            grants.push(Grant {
                id: Uuid::from_u128(((i as u128) << 8) | g as u128 | (0x9 << 100)),
                plan_id: plans[rng.below(PLANS)].id,
                tenant_id: tenant.clone(),
                user_id: (g >= 8).then(|| user_id(rng.below(USERS_PER_ACCOUNT))),
                starts_at,
                expires_at,
                revoked_at: None,
                revoked_by: None,
                revoke_reason: None,
                source: GrantSource::Batch,
                external_id: None,
                granted_by: None,
                metadata: Value::Null,
                created_at: starts_at,
                updated_at: starts_at,
            });
        }
    }
    (
        Snapshot {
            meters: Default::default(),
            user_meters: Default::default(),
            features: features(),
            plans,
            flags: flags(),
            routes: routes(),
            tenants,
            grants,
        },
        tenant_ids,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckRequest, IndexWriter, Subject, Target};

    #[test]
    fn the_world_is_deterministic_and_sized_as_asked() {
        let (a, tenants) = world(200, 42);
        let (b, _) = world(200, 42);
        assert_eq!(tenants.len(), 200);
        assert_eq!(a.grants.len(), 200 * GRANTS_PER_ACCOUNT);
        assert_eq!(a.plans.len(), PLANS);
        assert_eq!(a.features.len(), FEATURES);
        let ids = |s: &Snapshot| {
            s.grants
                .iter()
                .map(|g| (g.id, g.plan_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        // two roots, everyone else below one of them
        assert_eq!(a.tenants.iter().filter(|(_, p)| p.is_none()).count(), 2);
    }

    #[test]
    fn checks_on_the_world_say_both_yes_and_no() {
        let (snapshot, tenants) = world(100, 42);
        let index = IndexWriter::from_snapshot(snapshot, 1).current();
        let attributes = attributes();
        let (mut yes, mut no) = (0, 0);
        for (i, tenant) in tenants.iter().enumerate() {
            let key = feature_key(i % FEATURES);
            let request = CheckRequest {
                subject: Subject {
                    tenant_id: tenant,
                    user_id: None,
                    permissions: &[],
                    attributes: Some(&attributes),
                },
                target: Target::Feature(&key),
                requested: None,
            };
            if index.check(&request, now()).result {
                yes += 1;
            } else {
                no += 1;
            }
        }
        assert!(yes > 0 && no > 0, "{yes} allowed, {no} denied");
    }
}
