//! Decisions where the application runs (issue 17).
//!
//! - **B11**: the SDK's in-process check, through its API (`Evaluator::check_at` on an
//!   evaluator opened from a snapshot file), against the raw index check of B1, on the same
//!   world of 10,000 accounts × 10 grants rotating over every account and feature; heap
//!   allocations counted by the suite's instrumented allocator.
//! - **B12**: `tenantry agent` cold start from its snapshot file with the service unreachable:
//!   time from spawn to `/readyz` 200 and VmRSS once ready, with 1,000,000 grants (100,000
//!   accounts) against 10,000 grants (1,000 accounts); bytes per grant from the difference.

use std::{
    alloc::System,
    collections::HashMap,
    hint::black_box,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use stats_alloc::{Region, StatsAlloc};
use tenantry_client::{Evaluator, evaluator::persist};
use tenantry_entitlement::domain::{
    CheckRequest, EntitlementIndex, IndexWriter, Subject, Target,
    synthetic::{self, FEATURES},
};
use tenantry_tests::Process;

use crate::{
    procfs,
    report::{Row, Verdict, thousands},
    stats::summarize,
};

const ACCOUNTS: usize = 10_000;
const BATCH: usize = 1_000;

/// Writes the synthetic world of `accounts` accounts to a snapshot file; returns its grants.
fn write_world(path: &Path, accounts: usize) -> Result<usize> {
    let (snapshot, _) = synthetic::world(accounts, 42);
    let writer = IndexWriter::from_snapshot(snapshot, 1);
    let grants = writer.current().grant_count();
    persist::save(path, &writer.export(), std::time::SystemTime::now())?;
    Ok(grants)
}

struct Timed {
    ns_per_check: f64,
    allocations: usize,
    allowed: usize,
}

fn timed(
    alloc: &StatsAlloc<System>,
    checks: usize,
    tenants: &[String],
    keys: &[String],
    check: impl Fn(&CheckRequest<'_>) -> bool,
) -> Timed {
    let attributes = synthetic::attributes();
    let mut batches = Vec::with_capacity(checks / BATCH + 1);
    let region = Region::new(alloc);
    let mut allowed = 0usize;
    let mut i = 0usize;
    let mut batch_started = Instant::now();
    for n in 0..checks {
        i = i.wrapping_add(7_919);
        let request = CheckRequest {
            subject: Subject {
                tenant_id: &tenants[i % tenants.len()],
                user_id: None,
                permissions: &[],
                attributes: Some(&attributes),
            },
            target: Target::Feature(&keys[i % FEATURES]),
            requested: None,
        };
        allowed += usize::from(black_box(check(black_box(&request))));
        if n % BATCH == BATCH - 1 {
            let now = Instant::now();
            batches.push((now - batch_started).as_secs_f64() * 1e9 / BATCH as f64);
            batch_started = now;
        }
    }
    let stats = region.change();
    Timed {
        ns_per_check: summarize(&batches).map_or(f64::NAN, |s| s.median),
        allocations: stats.allocations + stats.reallocations,
        allowed,
    }
}

/// B11. Runs on the calling thread while nothing else in the process runs (the allocation
/// count is the whole process's).
pub fn b11(alloc: &StatsAlloc<System>, pairs: usize, quick: bool) -> Result<Row> {
    let checks = if quick { 200_000 } else { 2_000_000 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("b11.snapshot");
    let (snapshot, tenants) = synthetic::world(ACCOUNTS, 42);
    let writer = IndexWriter::from_snapshot(snapshot, 1);
    persist::save(&path, &writer.export(), std::time::SystemTime::now())?;
    let index: std::sync::Arc<EntitlementIndex> = writer.current();
    let evaluator = tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(Evaluator::open(&path))?;
    let keys: Vec<String> = (0..FEATURES).map(synthetic::feature_key).collect();
    let at = synthetic::now();
    let sdk = |r: &CheckRequest<'_>| evaluator.check_at(r, at).is_ok_and(|d| d.result);
    let raw = |r: &CheckRequest<'_>| index.check(r, at).result;
    timed(alloc, checks, &tenants, &keys, sdk);
    timed(alloc, checks, &tenants, &keys, raw);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for pair in 0..pairs {
        if pair % 2 == 0 {
            a.push(timed(alloc, checks, &tenants, &keys, sdk));
            b.push(timed(alloc, checks, &tenants, &keys, raw));
        } else {
            b.push(timed(alloc, checks, &tenants, &keys, raw));
            a.push(timed(alloc, checks, &tenants, &keys, sdk));
        }
    }
    ensure!(
        a.iter().zip(&b).all(|(a, b)| a.allowed == b.allowed),
        "the SDK and the index must give the same answers"
    );
    let ns = |runs: &[Timed]| summarize(&runs.iter().map(|r| r.ns_per_check).collect::<Vec<_>>());
    let (Some(a_ns), Some(b_ns)) = (ns(&a), ns(&b)) else {
        bail!("no timings");
    };
    let allocations = |runs: &[Timed]| runs.iter().map(|r| r.allocations).sum::<usize>();
    let total = thousands((checks * pairs) as f64);
    let verdict = if a_ns.median <= 1_000.0 && allocations(&a) == 0 {
        Verdict::Met
    } else {
        Verdict::Missed
    };
    Ok(Row {
        id: "B11",
        measure: format!(
            "SDK in-process check (`Evaluator::check_at` on an evaluator opened from a snapshot \
             file) ÷ the raw index check (B1's A), {} accounts × {} grants, rotating; time per \
             check, A ÷ B {:.2}×",
            thousands(ACCOUNTS as f64),
            synthetic::GRANTS_PER_ACCOUNT,
            a_ns.median / b_ns.median
        ),
        a: format!(
            "SDK: median {:.0} ns/check, {} allocations in {total} checks",
            a_ns.median,
            allocations(&a)
        ),
        b: format!(
            "index: median {:.0} ns/check, {} allocations in {total} checks",
            b_ns.median,
            allocations(&b)
        ),
        summary: Some(a_ns),
        unit: " ns",
        cpu: "(in-process)".into(),
        target: "≤ 1 µs median, 0 allocations".into(),
        verdict,
    })
}

/// Starts `tenantry agent` on `snapshot` with the service unreachable; returns (time to
/// `/readyz` 200, VmRSS bytes a second after).
async fn cold_start(dir: &Path, snapshot: &Path, name: &'static str) -> Result<(Duration, u64)> {
    let port = tenantry_common::testing::free_port();
    let env = HashMap::from([
        (
            "TENANTRY_DATA_DIR".to_owned(),
            dir.join(name).display().to_string(),
        ),
        (
            "TENANTRY_AGENT_SNAPSHOT_FILE".to_owned(),
            snapshot.display().to_string(),
        ),
        // Nothing listens there: the agent must answer from its file.
        (
            "TENANTRY_ENTITLEMENT_SERVICE_URL".to_owned(),
            "http://127.0.0.1:9".to_owned(),
        ),
        (
            "TENANTRY_AGENT_HTTP_ADDR".to_owned(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "TENANTRY_AGENT_GRPC_ADDR".to_owned(),
            format!("127.0.0.1:{}", tenantry_common::testing::free_port()),
        ),
        ("TENANTRY_LOG_FORMAT".to_owned(), "json".to_owned()),
    ]);
    let mut agent = Process::new(name, tenantry_tests::binary("tenantry"), env, dir);
    agent.set_args(&["agent"]);
    let http = reqwest::Client::new();
    let started = Instant::now();
    agent.start();
    let pid = agent.pid().context("agent has no PID")?;
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("agent not ready within 120 s:\n{}", agent.logs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = procfs::rss_bytes(pid).context("read VmRSS")?;
    agent.terminate().await;
    Ok((ready, rss))
}

/// B12.
pub async fn b12(pairs: usize, quick: bool) -> Result<Row> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let (big_accounts, small_accounts) = if quick {
        (20_000, 1_000)
    } else {
        (100_000, 1_000)
    };
    let big = dir.path().join("big.snapshot");
    let small = dir.path().join("small.snapshot");
    let big_grants = tokio::task::block_in_place(|| write_world(&big, big_accounts))?;
    let small_grants = tokio::task::block_in_place(|| write_world(&small, small_accounts))?;
    let file_mb = std::fs::metadata(&big)?.len() as f64 / 1e6;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for pair in 0..pairs {
        if pair % 2 == 0 {
            a.push(cold_start(dir.path(), &big, "b12-big").await?);
            b.push(cold_start(dir.path(), &small, "b12-small").await?);
        } else {
            b.push(cold_start(dir.path(), &small, "b12-small").await?);
            a.push(cold_start(dir.path(), &big, "b12-big").await?);
        }
    }
    let per_grant: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|((_, big), (_, small))| {
            big.saturating_sub(*small) as f64 / (big_grants - small_grants) as f64
        })
        .collect();
    let secs = |runs: &[(Duration, u64)]| {
        summarize(&runs.iter().map(|r| r.0.as_secs_f64()).collect::<Vec<_>>())
            .map_or(f64::NAN, |s| s.median)
    };
    let mib = |runs: &[(Duration, u64)]| {
        summarize(
            &runs
                .iter()
                .map(|r| r.1 as f64 / 1_048_576.0)
                .collect::<Vec<_>>(),
        )
        .map_or(f64::NAN, |s| s.median)
    };
    let Some(bytes) = summarize(&per_grant) else {
        bail!("no runs");
    };
    let ready = secs(&a);
    let verdict = if ready <= 2.0 && bytes.median <= 256.0 && big_grants >= 1_000_000 {
        Verdict::Met
    } else if big_grants < 1_000_000 {
        Verdict::Report
    } else {
        Verdict::Missed
    };
    Ok(Row {
        id: "B12",
        measure: format!(
            "agent cold start from its snapshot file, the service unreachable: spawn → /readyz \
             200, and VmRSS once ready, {} grants ({} accounts; file {file_mb:.0} MB) − {} \
             grants, per grant; {pairs} starts each",
            thousands(big_grants as f64),
            thousands(big_accounts as f64),
            thousands(small_grants as f64),
        ),
        a: format!(
            "{} grants: ready in {ready:.2} s (median), {:.0} MiB",
            thousands(big_grants as f64),
            mib(&a)
        ),
        b: format!(
            "{} grants: ready in {:.2} s, {:.0} MiB",
            thousands(small_grants as f64),
            secs(&b),
            mib(&b)
        ),
        summary: Some(bytes),
        unit: " B",
        cpu: "(start-up)".into(),
        target: "ready ≤ 2 s, ≤ 256 bytes per grant".into(),
        verdict,
    })
}
