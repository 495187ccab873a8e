//! The hot path: checks against an index of 10,000 accounts × 10 grants, with allocation counts
//! from divan's `AllocProfiler`, plus the cost of one incremental write and the memory held per
//! grant at 1,000,000 grants.

use std::sync::{Arc, LazyLock};

use divan::{AllocProfiler, Bencher, black_box};
use serde_json::{Map, Value};
use tenantry_entitlement::domain::{
    CheckRequest, EntitlementIndex, Grant, IndexChange, IndexWriter, Subject, Target,
    synthetic::{self, FEATURES, PERMISSIONS, ROUTES, USERS_PER_ACCOUNT, feature_key, now, world},
};
use uuid::Uuid;

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

struct Fixture {
    writer: std::sync::Mutex<IndexWriter>,
    index: Arc<EntitlementIndex>,
    tenants: Vec<String>,
    template: Grant,
    attributes: Map<String, Value>,
    permissions: Vec<String>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| fixture(10_000));

fn fixture(accounts: usize) -> Fixture {
    let (snapshot, tenant_ids) = world(accounts, 42);
    let template = snapshot.grants[0].clone();
    let writer = IndexWriter::from_snapshot(snapshot, 1);
    let index = writer.current();
    Fixture {
        writer: std::sync::Mutex::new(writer),
        index,
        tenants: tenant_ids,
        template,
        attributes: synthetic::attributes(),
        permissions: (0..PERMISSIONS).map(synthetic::permission_key).collect(),
    }
}

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
    let keys: Vec<String> = (0..FEATURES).map(feature_key).collect();
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
    let keys: Vec<String> = (0..FEATURES).map(feature_key).collect();
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
    let keys: Vec<String> = (0..FEATURES).map(feature_key).collect();
    let users: Vec<String> = (0..USERS_PER_ACCOUNT).map(synthetic::user_id).collect();
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
        let req = request(fx, i, Target::Permission(&fx.permissions[i % PERMISSIONS]));
        black_box(fx.index.check(black_box(&req), at))
    });
}

#[divan::bench(sample_count = 100, sample_size = 1000)]
fn check_route(bencher: Bencher) {
    let fx = &*FIXTURE;
    let paths: Vec<String> = (0..ROUTES).map(synthetic::route_path).collect();
    let mut i = 0usize;
    let at = now();
    bencher.bench_local(|| {
        i = i.wrapping_add(7919);
        let req = request(
            fx,
            i,
            Target::Route {
                method: "GET",
                path: &paths[i % ROUTES],
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

/// A `BatchCreateGrants` of 1,000 grants made visible: about 1,000 accounts each staged, written
/// back and republished, the work a batch call does after its commit.
#[divan::bench(sample_count = 50, sample_size = 1)]
fn write_batch_of_1000_grants(bencher: Bencher) {
    batch_of_1000(bencher, &FIXTURE);
}

/// The same batch into an index ten times larger: the cost should follow the batch, not the
/// index.
#[divan::bench(sample_count = 50, sample_size = 1)]
fn write_batch_of_1000_grants_100k_accounts(bencher: Bencher) {
    static LARGE: LazyLock<Fixture> = LazyLock::new(|| fixture(100_000));
    batch_of_1000(bencher, &LARGE);
}

fn batch_of_1000(bencher: Bencher, fx: &Fixture) {
    let mut writer = fx.writer.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = synthetic::Lcg::new(1_000);
    let mut n = 0u128;
    bencher
        .with_inputs(|| {
            (0..1_000)
                .map(|_| {
                    n += 1;
                    let mut g = fx.template.clone();
                    g.id = Uuid::from_u128((0x78 << 100) | n);
                    g.tenant_id
                        .clone_from(&fx.tenants[rng.below(fx.tenants.len())]);
                    IndexChange::UpsertGrant(g)
                })
                .collect::<Vec<_>>()
        })
        .bench_local_values(|changes| black_box(writer.apply(changes).revision()));
}
