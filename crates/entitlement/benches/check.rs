//! The hot path: checks against an index of 10,000 accounts × 10 grants, with allocation counts
//! from divan's `AllocProfiler`, plus the cost of one incremental write and the memory held per
//! grant at 1,000,000 grants.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Duration, TimeZone, Utc};
use divan::{AllocProfiler, Bencher, black_box};
use serde_json::{Map, Value, json};
use tenantry_entitlement::domain::{
    Allocation, AllocationType, AttributeType, CheckRequest, Condition, ConditionOp,
    EntitlementIndex, Feature, FeatureFlag, Grant, GrantSource, IndexChange, IndexWriter, Limit,
    MergePolicy, Plan, PlanFeature, Route, RoutePolicy, Rule, Snapshot, Subject, Target, Treatment,
};
use uuid::Uuid;

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

const FEATURES: usize = 50;
const PLANS: usize = 20;
const USERS_PER_ACCOUNT: usize = 5;

/// Deterministic pseudo-random numbers (no extra dev-dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

fn key(i: usize) -> String {
    format!("feature-{i:02}")
}

fn catalog() -> (Vec<Feature>, Vec<Plan>, Vec<FeatureFlag>, Vec<Route>) {
    let mut rng = Lcg(7);
    let features: Vec<Feature> = (0..FEATURES)
        .map(|i| Feature {
            id: Uuid::from_u128(i as u128 + 1),
            key: key(i),
            name: key(i),
            description: None,
            metadata: Value::Null,
            permissions: vec![format!("perm.{}", i % 25)],
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
        })
        .collect();
    let plans: Vec<Plan> = (0..PLANS)
        .map(|p| Plan {
            id: Uuid::from_u128(0x1000 + p as u128),
            key: format!("plan-{p}"),
            name: format!("plan {p}"),
            description: None,
            metadata: Value::Null,
            features: (0..10)
                .map(|_| rng.below(FEATURES))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|f| PlanFeature {
                    feature_key: key(f),
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
        .collect();
    let flags = (0..FEATURES)
        .step_by(7)
        .map(|f| FeatureFlag {
            id: Uuid::from_u128(0x2000 + f as u128),
            feature_key: key(f),
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
        .collect();
    let routes = (0..20)
        .map(|r| Route {
            id: Uuid::from_u128(0x3000 + r as u128),
            method: if r % 2 == 0 { "GET".into() } else { "*".into() },
            path: format!("/api/r{r}/*/items/**"),
            policy: RoutePolicy::Require {
                features: vec![key(r)],
                permissions: vec![],
            },
            description: None,
        })
        .collect();
    (features, plans, flags, routes)
}

/// `accounts` tenants (every tenant past the first 1% has a parent among them), 10 grants
/// each: 8 account-level, 2 for users; a mix of active, expired and scheduled.
fn world(accounts: usize, seed: u64) -> (Snapshot, Vec<String>) {
    let (features, plans, flags, routes) = catalog();
    let mut rng = Lcg(seed);
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
    let mut grants = Vec::with_capacity(accounts * 10);
    for (i, tenant) in tenant_ids.iter().enumerate() {
        for g in 0..10 {
            let starts_at = now() - Duration::days(rng.below(400) as i64 - 20);
            let expires_at = (rng.below(3) == 0).then(|| starts_at + Duration::days(365));
            grants.push(Grant {
                id: Uuid::from_u128(((i as u128) << 8) | g as u128 | (0x9 << 100)),
                plan_id: plans[rng.below(PLANS)].id,
                tenant_id: tenant.clone(),
                user_id: (g >= 8).then(|| format!("user-{}", rng.below(USERS_PER_ACCOUNT))),
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
            features,
            plans,
            flags,
            routes,
            tenants,
            grants,
        },
        tenant_ids,
    )
}

struct Fixture {
    writer: std::sync::Mutex<IndexWriter>,
    index: Arc<EntitlementIndex>,
    tenants: Vec<String>,
    template: Grant,
    attributes: Map<String, Value>,
    permissions: Vec<String>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let (snapshot, tenant_ids) = world(10_000, 42);
    let template = snapshot.grants[0].clone();
    let writer = IndexWriter::from_snapshot(snapshot, 1);
    let index = writer.current();
    Fixture {
        writer: std::sync::Mutex::new(writer),
        index,
        tenants: tenant_ids,
        template,
        attributes: json!({"country": "de", "plan": "pro"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        permissions: (0..25).map(|i| format!("perm.{i}")).collect(),
    }
});

fn main() {
    // Build the 10k fixture first so the 1M-grant memory run cannot fragment its heap.
    LazyLock::force(&FIXTURE);
    memory_report();
    divan::main();
}

/// Builds 100,000 accounts × 10 grants and reports the index's own estimate and the RSS growth.
fn memory_report() {
    let rss_before = rss_bytes();
    let (snapshot, _) = world(100_000, 9);
    let grants = snapshot.grants.len();
    let rss_snapshot = rss_bytes();
    let writer = IndexWriter::from_snapshot(snapshot, 1);
    let rss_built = rss_bytes();
    let estimate = writer.memory_estimate();
    eprintln!(
        "memory at {grants} grants: estimate {} B/grant (index + writer); RSS growth while \
         building {} B/grant (the input snapshot, {} B/grant, is freed as it is consumed)",
        estimate.bytes / grants,
        rss_built.saturating_sub(rss_before) / grants,
        rss_snapshot.saturating_sub(rss_before) / grants,
    );
    drop(writer);
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn request<'a>(fx: &'a Fixture, i: usize, target: Target<'a>) -> CheckRequest<'a> {
    CheckRequest {
        subject: Subject {
            tenant_id: &fx.tenants[i % fx.tenants.len()],
            user_id: None,
            permissions: &fx.permissions,
            attributes: Some(&fx.attributes),
        },
        target,
        requested: None,
    }
}

/// A bool feature check, rotating over accounts (account + inherited grants).
#[divan::bench(sample_count = 100, sample_size = 1000)]
fn check_feature(bencher: Bencher) {
    let fx = &*FIXTURE;
    let keys: Vec<String> = (0..FEATURES).map(key).collect();
    let mut i = 0usize;
    let at = now();
    bencher.bench_local(|| {
        i = i.wrapping_add(7919);
        let req = request(fx, i, Target::Feature(&keys[i % FEATURES]));
        black_box(fx.index.check(black_box(&req), at))
    });
}

/// The same check on one account: the cost without cache misses on tenant data.
#[divan::bench(sample_count = 100, sample_size = 1000)]
fn check_feature_one_account(bencher: Bencher) {
    let fx = &*FIXTURE;
    let keys: Vec<String> = (0..FEATURES).map(key).collect();
    let mut i = 0usize;
    let at = now();
    bencher.bench_local(|| {
        i = i.wrapping_add(7919);
        let req = request(fx, 4242, Target::Feature(&keys[i % FEATURES]));
        black_box(fx.index.check(black_box(&req), at))
    });
}

/// A user's check: user grants + account + inherited, with a flag rule on some features.
#[divan::bench(sample_count = 100, sample_size = 1000)]
fn check_feature_user(bencher: Bencher) {
    let fx = &*FIXTURE;
    let keys: Vec<String> = (0..FEATURES).map(key).collect();
    let users: Vec<String> = (0..USERS_PER_ACCOUNT)
        .map(|u| format!("user-{u}"))
        .collect();
    let mut i = 0usize;
    let at = now();
    bencher.bench_local(|| {
        i = i.wrapping_add(7919);
        let mut req = request(fx, i, Target::Feature(&keys[i % FEATURES]));
        req.subject.user_id = Some(&users[i % USERS_PER_ACCOUNT]);
        req.requested = Some(5);
        black_box(fx.index.check(black_box(&req), at))
    });
}

#[divan::bench(sample_count = 100, sample_size = 1000)]
fn check_permission(bencher: Bencher) {
    let fx = &*FIXTURE;
    let mut i = 0usize;
    let at = now();
    bencher.bench_local(|| {
        i = i.wrapping_add(7919);
        let req = request(fx, i, Target::Permission(&fx.permissions[i % 25]));
        black_box(fx.index.check(black_box(&req), at))
    });
}

#[divan::bench(sample_count = 100, sample_size = 1000)]
fn check_route(bencher: Bencher) {
    let fx = &*FIXTURE;
    let paths: Vec<String> = (0..20).map(|r| format!("/api/r{r}/42/items/a/b")).collect();
    let mut i = 0usize;
    let at = now();
    bencher.bench_local(|| {
        i = i.wrapping_add(7919);
        let req = request(
            fx,
            i,
            Target::Route {
                method: "GET",
                path: &paths[i % 20],
            },
        );
        black_box(fx.index.check(black_box(&req), at))
    });
}

/// One grant write made visible: copy-on-write of one shard and node, then publish.
#[divan::bench(sample_count = 200, sample_size = 10)]
fn write_one_grant(bencher: Bencher) {
    let fx = &*FIXTURE;
    let mut writer = fx.writer.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 0u128;
    bencher.bench_local(|| {
        n += 1;
        let mut g = fx.template.clone();
        g.id = Uuid::from_u128((0x77 << 100) | n);
        // keep the reader's snapshot alive so every write pays the copy-on-write
        let snapshot = writer.apply([IndexChange::UpsertGrant(g)]);
        black_box(snapshot.revision())
    });
}
