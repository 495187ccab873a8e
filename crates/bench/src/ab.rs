//! Interleaved A/B runs: pair i runs A then B when i is even, B then A when odd, so drift in
//! the machine (other tenants, thermal, caches) falls on both sides alike. Each side of each
//! pair is one bounded load run with the server-side CPU time it cost.

use std::{future::Future, time::Duration};

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::{
    fixture::Fixture,
    load::{self, Bounds, LoadResult},
    procfs::CpuMeter,
    report::thousands,
    stats::{self, Latency, Summary},
};

/// One side of one pair.
#[derive(Debug)]
pub struct Side {
    pub load: LoadResult,
    /// Server-side CPU time (services + PostgreSQL backends) during the run.
    pub cpu: Duration,
}

impl Side {
    /// Server CPU microseconds per successful request.
    pub fn cpu_us_per_request(&self) -> f64 {
        if self.load.ok == 0 {
            0.0
        } else {
            self.cpu.as_secs_f64() * 1e6 / self.load.ok as f64
        }
    }
}

/// Runs `op` under `bounds`, metering the server processes.
pub async fn measure<F, Fut, E>(fixture: &Fixture, bounds: Bounds, op: F) -> Result<Side>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    measure_on(fixture, None, bounds, op).await
}

/// Runs `op` under `bounds`, metering `pids` (the server processes when `None`).
pub async fn measure_on<F, Fut, E>(
    fixture: &Fixture,
    pids: Option<&[u32]>,
    bounds: Bounds,
    op: F,
) -> Result<Side>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let pids = match pids {
        Some(pids) => pids.to_vec(),
        None => fixture.server_pids().await?,
    };
    let meter = CpuMeter::start(&pids);
    let load = load::run(bounds, op).await;
    let cpu = meter.stop();
    load.ensure_no_errors()?;
    Ok(Side { load, cpu })
}

/// The pairs of one measure.
#[derive(Debug, Default)]
pub struct Pairs {
    pub a: Vec<Side>,
    pub b: Vec<Side>,
}

/// Runs `pairs` interleaved A/B pairs after one short warm-up run of each side.
pub async fn interleaved<FA, FutA, EA, FB, FutB, EB>(
    fixture: &Fixture,
    pairs: usize,
    bounds: Bounds,
    a: FA,
    b: FB,
) -> Result<Pairs>
where
    FA: Fn(u64) -> FutA,
    FutA: Future<Output = Result<(), EA>>,
    EA: std::fmt::Display,
    FB: Fn(u64) -> FutB,
    FutB: Future<Output = Result<(), EB>>,
    EB: std::fmt::Display,
{
    interleaved_on(fixture, pairs, bounds, (None, a), (None, b)).await
}

/// As [`interleaved`], each side metering its own processes (the server processes when
/// `None`): for sides served by different processes, e.g. the agent against the gateway.
pub async fn interleaved_on<FA, FutA, EA, FB, FutB, EB>(
    fixture: &Fixture,
    pairs: usize,
    bounds: Bounds,
    (a_pids, a): (Option<&[u32]>, FA),
    (b_pids, b): (Option<&[u32]>, FB),
) -> Result<Pairs>
where
    FA: Fn(u64) -> FutA,
    FutA: Future<Output = Result<(), EA>>,
    EA: std::fmt::Display,
    FB: Fn(u64) -> FutB,
    FutB: Future<Output = Result<(), EB>>,
    EB: std::fmt::Display,
{
    let warm = Bounds {
        requests: (bounds.requests / 10).max(1),
        duration: bounds.duration / 5,
        ..bounds
    };
    measure_on(fixture, a_pids, warm, &a).await?;
    measure_on(fixture, b_pids, warm, &b).await?;
    let mut out = Pairs::default();
    for i in 0..pairs {
        if i % 2 == 0 {
            out.a.push(measure_on(fixture, a_pids, bounds, &a).await?);
            out.b.push(measure_on(fixture, b_pids, bounds, &b).await?);
        } else {
            out.b.push(measure_on(fixture, b_pids, bounds, &b).await?);
            out.a.push(measure_on(fixture, a_pids, bounds, &a).await?);
        }
    }
    Ok(out)
}

fn merged(sides: &[Side]) -> Histogram<u64> {
    let mut h = stats::histogram();
    for s in sides {
        h.add(&s.load.histogram).expect("same histogram bounds");
    }
    h
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    stats::summarize(&v).map_or(0.0, |s| s.median)
}

impl Pairs {
    /// Per-pair throughput ratios A ÷ B.
    pub fn throughput_ratio(&self) -> Option<Summary> {
        let pairs: Vec<(f64, f64)> = self
            .a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| (a.load.throughput(), b.load.throughput()))
            .collect();
        stats::summarize(&stats::ratios(&pairs))
    }

    /// Per-pair ratios of server CPU per request, A ÷ B.
    pub fn cpu_ratio(&self) -> Option<Summary> {
        let pairs: Vec<(f64, f64)> = self
            .a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| (a.cpu_us_per_request(), b.cpu_us_per_request()))
            .collect();
        stats::summarize(&stats::ratios(&pairs))
    }

    /// "12,345 req/s, p50 0.512 ms, p99 1.901 ms" for one side (median throughput over pairs,
    /// percentiles over every request of every pair).
    pub fn describe(sides: &[Side], unit: &str) -> String {
        let rate = median(sides.iter().map(|s| s.load.throughput()));
        let l = Latency::of(&merged(sides));
        format!(
            "{} {unit}, p50 {} ms, p99 {} ms",
            thousands(rate),
            stats::ms(l.p50),
            stats::ms(l.p99)
        )
    }

    pub fn describe_a(&self, unit: &str) -> String {
        Self::describe(&self.a, unit)
    }

    pub fn describe_b(&self, unit: &str) -> String {
        Self::describe(&self.b, unit)
    }

    /// "A 41.2 / B 39.8": median server CPU µs per request of each side.
    pub fn cpu(&self) -> String {
        let a = median(self.a.iter().map(Side::cpu_us_per_request));
        let b = median(self.b.iter().map(Side::cpu_us_per_request));
        format!("A {a:.1} / B {b:.1}")
    }
}
