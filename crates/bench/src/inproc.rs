//! B1: the in-process check against an index of 10,000 accounts × 10 grants (the entitlement
//! crate's synthetic world, the same one its divan benchmark uses), timed and with every heap
//! allocation counted by the suite's instrumented global allocator.
//!
//! A rotates over all accounts and features (cache misses on tenant data, as in a busy
//! service); B repeats the same feature checks on one warm account. Pairs are interleaved like
//! every other measure. A run's time per check is the median over batches of 1,000 checks
//! (its plain mean is shown beside it). The verdict is on A: the median of its runs, and the
//! allocations of every run of both sides.

use std::{alloc::System, hint::black_box, time::Instant};

use anyhow::{Result, ensure};
use stats_alloc::{Region, StatsAlloc};
use tenantry_entitlement::domain::{
    CheckRequest, EntitlementIndex, IndexWriter, Subject, Target,
    synthetic::{self, FEATURES},
};

use crate::{
    procfs,
    report::{Row, Verdict, thousands},
    stats::{Summary, summarize},
};

const ACCOUNTS: usize = 10_000;
/// The target: at most this many nanoseconds and no allocation per check.
const TARGET_NS: f64 = 1_000.0;
/// The account side B checks again and again.
const WARM_ACCOUNT: usize = 4_242;
/// Checks per timed batch.
const BATCH: usize = 1_000;

/// One side of one pair.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Median over batches of `BATCH` checks of the time per check (as divan and criterion
    /// summarise samples): robust to the odd descheduled batch on a shared machine.
    ns_per_check: f64,
    /// Wall time of the whole run divided by its checks.
    mean_ns_per_check: f64,
    cpu_ns_per_check: f64,
    allocations: usize,
    allowed: usize,
}

struct World {
    index: std::sync::Arc<EntitlementIndex>,
    tenants: Vec<String>,
    keys: Vec<String>,
    attributes: serde_json::Map<String, serde_json::Value>,
}

impl World {
    fn build() -> Self {
        let (snapshot, tenants) = synthetic::world(ACCOUNTS, 42);
        Self {
            index: IndexWriter::from_snapshot(snapshot, 1).current(),
            tenants,
            keys: (0..FEATURES).map(synthetic::feature_key).collect(),
            attributes: synthetic::attributes(),
        }
    }

    /// `checks` feature checks; `account` fixes the tenant, otherwise it rotates.
    fn run(&self, alloc: &StatsAlloc<System>, checks: usize, account: Option<usize>) -> Run {
        self.run_keys(alloc, checks, account, &self.keys)
    }

    /// [`World::run`] over the features `keys`.
    fn run_keys(
        &self,
        alloc: &StatsAlloc<System>,
        checks: usize,
        account: Option<usize>,
        keys: &[String],
    ) -> Run {
        let at = synthetic::now();
        // Allocated before counting starts: the loop itself must not allocate.
        let mut batches = Vec::with_capacity(checks / BATCH + 1);
        let cpu_before = procfs::cpu_time(std::process::id());
        let region = Region::new(alloc);
        let started = Instant::now();
        let mut allowed = 0usize;
        let mut i = 0usize;
        let mut batch_started = started;
        for n in 0..checks {
            // A stride prime to both sizes visits every (account, feature) pair in turn.
            i = i.wrapping_add(7_919);
            let tenant = &self.tenants[account.unwrap_or(i) % self.tenants.len()];
            let request = CheckRequest {
                subject: Subject {
                    tenant_id: tenant,
                    user_id: None,
                    permissions: &[],
                    attributes: Some(&self.attributes),
                },
                target: Target::Feature(&keys[i % keys.len()]),
                requested: None,
            };
            allowed += usize::from(black_box(self.index.check(black_box(&request), at)).result);
            if n % BATCH == BATCH - 1 {
                let now = Instant::now();
                batches.push((now - batch_started).as_secs_f64() * 1e9 / BATCH as f64);
                batch_started = now;
            }
        }
        let elapsed = started.elapsed();
        let stats = region.change();
        let cpu = procfs::cpu_time(std::process::id())
            .zip(cpu_before)
            .map_or(0.0, |(after, before)| {
                after.saturating_sub(before).as_secs_f64()
            });
        let mean = elapsed.as_secs_f64() * 1e9 / checks as f64;
        Run {
            ns_per_check: summarize(&batches).map_or(mean, |s| s.median),
            mean_ns_per_check: mean,
            cpu_ns_per_check: cpu * 1e9 / checks as f64,
            allocations: stats.allocations + stats.reallocations,
            allowed,
        }
    }
}

/// `pairs` runs of each side, interleaved (the side going first alternating), after one
/// warm-up run of each that pages in the index and settles the frequency.
fn interleaved(
    world: &World,
    pairs: usize,
    a_side: impl Fn(&World) -> Run,
    b_side: impl Fn(&World) -> Run,
) -> (Vec<Run>, Vec<Run>) {
    a_side(world);
    b_side(world);
    let mut runs: Vec<(Run, Run)> = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        runs.push(if pair % 2 == 0 {
            let a = a_side(world);
            (a, b_side(world))
        } else {
            let b = b_side(world);
            (a_side(world), b)
        });
    }
    runs.into_iter().unzip()
}

/// Median, min and max of one figure over the runs of a side.
fn over_runs(runs: &[Run], figure: impl Fn(&Run) -> f64) -> Option<Summary> {
    summarize(&runs.iter().map(figure).collect::<Vec<_>>())
}

/// Runs B1 on the calling thread; call it while nothing else in the process runs, since the
/// allocation count is the whole process's.
pub fn b1(alloc: &StatsAlloc<System>, pairs: usize, quick: bool) -> Result<Row> {
    let checks = if quick { 200_000 } else { 2_000_000 };
    let world = World::build();
    let spread = |w: &World| w.run(alloc, checks, None);
    let warm = |w: &World| w.run(alloc, checks, Some(WARM_ACCOUNT));
    let (a, b) = interleaved(&world, pairs, spread, warm);
    ensure!(
        a.iter().all(|r| r.allowed > 0 && r.allowed < checks),
        "the rotating checks must both allow and deny"
    );
    let (Some(a_ns), Some(b_ns)) = (
        over_runs(&a, |r| r.ns_per_check),
        over_runs(&b, |r| r.ns_per_check),
    ) else {
        anyhow::bail!("no timings");
    };
    let ratios = summarize(
        &a.iter()
            .zip(&b)
            .map(|(a, b)| a.ns_per_check / b.ns_per_check)
            .collect::<Vec<_>>(),
    );
    let allocations = |runs: &[Run]| runs.iter().map(|r| r.allocations).sum::<usize>();
    let mean = |runs: &[Run]| over_runs(runs, |r| r.mean_ns_per_check).map_or(0.0, |s| s.median);
    let cpu = |runs: &[Run]| over_runs(runs, |r| r.cpu_ns_per_check).map_or(0.0, |s| s.median);
    let total_checks = checks * pairs;
    let verdict = if a_ns.median <= TARGET_NS && allocations(&a) == 0 && allocations(&b) == 0 {
        Verdict::Met
    } else {
        Verdict::Missed
    };
    Ok(Row {
        id: "B1",
        measure: format!(
            "in-process check ({} accounts × {} grants, feature checks rotating over every \
             account and feature) — time per check; A ÷ B {}× (min {}, max {})",
            thousands(ACCOUNTS as f64),
            synthetic::GRANTS_PER_ACCOUNT,
            ratios.map_or_else(|| "–".into(), |s| format!("{:.2}", s.median)),
            ratios.map_or_else(|| "–".into(), |s| format!("{:.2}", s.min)),
            ratios.map_or_else(|| "–".into(), |s| format!("{:.2}", s.max)),
        ),
        a: format!(
            "rotating: median {:.0} ns/check (mean {:.0}), {} allocations in {} checks ({:.0}% \
             allowed)",
            a_ns.median,
            mean(&a),
            allocations(&a),
            thousands(total_checks as f64),
            a.iter().map(|r| r.allowed).sum::<usize>() as f64 * 100.0 / total_checks as f64,
        ),
        b: format!(
            "one warm account: median {:.0} ns/check (mean {:.0}), {} allocations in {} checks",
            b_ns.median,
            mean(&b),
            allocations(&b),
            thousands(total_checks as f64),
        ),
        summary: Some(a_ns),
        unit: " ns",
        cpu: format!(
            "A {:.2} / B {:.2} (in-process)",
            cpu(&a) / 1e3,
            cpu(&b) / 1e3
        ),
        target: "≤ 1 µs, 0 allocations".into(),
        verdict,
    })
}

/// Metered features B13 adds to the world, each on a plan granted to every account.
const METERED: usize = 4;
/// B13's target: a metered check at most this many nanoseconds.
const METERED_TARGET_NS: f64 = 1_500.0;

/// B1's world plus `METERED` metered features issued 1,000 a month by a plan every account
/// holds, each account's meter of each drawn on and topped up by a credit grant.
fn metered_world() -> (World, Vec<String>, usize) {
    use tenantry_entitlement::domain::metering::{Credit, MeterState, Rollover};
    use tenantry_entitlement::domain::metering::{Recurrence, UsagePeriod};
    use tenantry_entitlement::domain::{
        Aggregation, Allocation, AllocationType, Grant, GrantSource, Limit, MergePolicy, Metering,
        Plan, PlanFeature, Treatment,
    };
    let (mut snapshot, tenants) = synthetic::world(ACCOUNTS, 42);
    let now = synthetic::now();
    let keys: Vec<String> = (0..METERED).map(|m| format!("metered-{m}")).collect();
    let metering = Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, now - chrono::TimeDelta::days(40)),
        soft_limit: false,
        carry_overage: false,
    };
    let features: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(m, key)| tenantry_entitlement::domain::Feature {
            id: uuid::Uuid::from_u128(0x7_0000 + m as u128),
            key: key.clone(),
            name: key.clone(),
            description: None,
            metadata: serde_json::Value::Null,
            permissions: vec![],
            allocation_type: AllocationType::Metered,
            merge_policy: MergePolicy::Max,
            metering: Some(metering.clone()),
        })
        .collect();
    let plan = Plan {
        id: uuid::Uuid::from_u128(0x7_1000),
        key: "metered".into(),
        name: "Metered".into(),
        description: None,
        metadata: serde_json::Value::Null,
        features: keys
            .iter()
            .map(|k| PlanFeature {
                feature_key: k.clone(),
                allocation: Some(Allocation::MaxCount(Limit::Finite(1_000))),
            })
            .collect(),
        default_time_limitation_days: None,
        assign_on_signup: false,
        rules: vec![],
        default_treatment: Treatment::False,
        inherit_to_sub_accounts: false,
    };
    let spec = metering.spec();
    let mut meters = Vec::with_capacity(ACCOUNTS * METERED);
    for (i, tenant) in tenants.iter().enumerate() {
        snapshot.grants.push(Grant {
            id: uuid::Uuid::from_u128(0x7_2000_0000 + i as u128),
            plan_id: plan.id,
            tenant_id: tenant.clone(),
            user_id: None,
            starts_at: now - chrono::TimeDelta::days(60),
            expires_at: None,
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            source: GrantSource::Api,
            external_id: None,
            granted_by: None,
            metadata: serde_json::Value::Null,
            created_at: now,
            updated_at: now,
        });
        for f in &features {
            let mut state = MeterState::open(&spec, now).expect("a period");
            state.add_credit(Credit {
                id: uuid::Uuid::from_u128(0x7_3000_0000 + i as u128),
                priority: 10,
                effective_at: now - chrono::TimeDelta::days(1),
                expires_at: None,
                voided_at: None,
                balance: 500,
                rollover: Rollover { min: 0, max: 500 },
            });
            // Every fourth account has spent everything: checks deny as well as allow.
            let used = if i % 4 == 0 { 1_500 } else { (i % 900) as i64 };
            state
                .draw(&spec, now - chrono::TimeDelta::hours(1), used, &|_| {
                    Limit::Finite(1_000)
                })
                .expect("a draw");
            meters.push((tenant.clone(), f.id, state));
        }
    }
    snapshot.features.extend(features);
    snapshot.plans.push(plan);
    snapshot.meters = meters;
    let writer = IndexWriter::from_snapshot(snapshot, 1);
    let world = World {
        index: writer.current(),
        tenants,
        keys: (0..FEATURES).map(synthetic::feature_key).collect(),
        attributes: synthetic::attributes(),
    };
    let per_meter = std::mem::size_of::<(uuid::Uuid, MeterState)>() + std::mem::size_of::<Credit>();
    (world, keys, per_meter)
}

/// B13: a check on a metered feature (balance, usage and period read from the account's
/// meter) against B1's boolean check, both rotating over every account of the same index.
pub fn b13(alloc: &StatsAlloc<System>, pairs: usize, quick: bool) -> Result<Row> {
    let checks = if quick { 200_000 } else { 2_000_000 };
    let (world, metered, per_meter) = metered_world();
    let a_side = |w: &World| w.run_keys(alloc, checks, None, &metered);
    let b_side = |w: &World| w.run(alloc, checks, None);
    let (a, b) = interleaved(&world, pairs, a_side, b_side);
    ensure!(
        a.iter().all(|r| r.allowed > 0 && r.allowed < checks),
        "the metered checks must both allow and deny"
    );
    let (Some(a_ns), Some(b_ns)) = (
        over_runs(&a, |r| r.ns_per_check),
        over_runs(&b, |r| r.ns_per_check),
    ) else {
        anyhow::bail!("no timings");
    };
    let ratios = summarize(
        &a.iter()
            .zip(&b)
            .map(|(a, b)| a.ns_per_check / b.ns_per_check)
            .collect::<Vec<_>>(),
    );
    let allocations = |runs: &[Run]| runs.iter().map(|r| r.allocations).sum::<usize>();
    let cpu = |runs: &[Run]| over_runs(runs, |r| r.cpu_ns_per_check).map_or(0.0, |s| s.median);
    let total_checks = checks * pairs;
    let verdict = if a_ns.median <= METERED_TARGET_NS && allocations(&a) == 0 {
        Verdict::Met
    } else {
        Verdict::Missed
    };
    Ok(Row {
        id: "B13",
        measure: format!(
            "in-process metered check ({} accounts × {METERED} metered features, each \
             account's meter with a credit grant; rotating) ÷ B1's boolean check on the same \
             index — time per check; A ÷ B {}× (min {}, max {}); {per_meter} B per meter \
             (state and one credit)",
            thousands(ACCOUNTS as f64),
            ratios.map_or_else(|| "–".into(), |s| format!("{:.2}", s.median)),
            ratios.map_or_else(|| "–".into(), |s| format!("{:.2}", s.min)),
            ratios.map_or_else(|| "–".into(), |s| format!("{:.2}", s.max)),
        ),
        a: format!(
            "metered: median {:.0} ns/check, {} allocations in {} checks ({:.0}% allowed)",
            a_ns.median,
            allocations(&a),
            thousands(total_checks as f64),
            a.iter().map(|r| r.allowed).sum::<usize>() as f64 * 100.0 / total_checks as f64,
        ),
        b: format!(
            "boolean (B1's A): median {:.0} ns/check, {} allocations",
            b_ns.median,
            allocations(&b),
        ),
        summary: Some(a_ns),
        unit: " ns",
        cpu: format!(
            "A {:.2} / B {:.2} (in-process)",
            cpu(&a) / 1e3,
            cpu(&b) / 1e3
        ),
        target: "≤ 1.5 µs, 0 allocations".into(),
        verdict,
    })
}
