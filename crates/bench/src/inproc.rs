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
                target: Target::Feature(&self.keys[i % FEATURES]),
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
    // Warm-up of each side: page in the index and settle the frequency.
    spread(&world);
    warm(&world);
    let mut runs: Vec<(Run, Run)> = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        runs.push(if pair % 2 == 0 {
            let a = spread(&world);
            (a, warm(&world))
        } else {
            let b = warm(&world);
            (spread(&world), b)
        });
    }
    let (a, b): (Vec<Run>, Vec<Run>) = runs.into_iter().unzip();
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
