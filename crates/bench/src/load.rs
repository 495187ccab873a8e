//! A closed-loop load generator: `concurrency` requests in flight, bounded by a request count
//! and a wall-clock limit (whichever comes first), latencies in an HDR histogram.
//!
//! All workers run inside one task (a `FuturesUnordered`), so the operation needs neither
//! `Send` nor `'static`; the bench process is pinned to its own core(s) anyway.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::FuturesUnordered};
use hdrhistogram::Histogram;

use crate::stats::{self, Latency};

/// How much load one run applies.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Stop after this many requests…
    pub requests: u64,
    /// …or after this long, whichever comes first.
    pub duration: Duration,
}

/// What one run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Latency of successful requests, nanoseconds.
    pub histogram: Histogram<u64>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    pub fn latency(&self) -> Latency {
        Latency::of(&self.histogram)
    }

    /// Fails the measure if any request failed: a figure with failures in it measures nothing.
    pub fn ensure_no_errors(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.errors == 0,
            "{} of {} requests failed; first: {}",
            self.errors,
            self.errors + self.ok,
            self.first_error.as_deref().unwrap_or("?")
        );
        Ok(())
    }
}

/// Runs `op(i)` for i = 0, 1, 2, … with `bounds.concurrency` calls in flight.
pub async fn run<F, Fut, E>(bounds: Bounds, op: F) -> LoadResult
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let next = Cell::new(0_u64);
    let errors = Cell::new(0_u64);
    let first_error: RefCell<Option<String>> = RefCell::new(None);
    let started = Instant::now();
    let deadline = started + bounds.duration;
    let worker = || async {
        let mut histogram = stats::histogram();
        loop {
            let i = next.get();
            if i >= bounds.requests || Instant::now() >= deadline {
                break;
            }
            next.set(i + 1);
            let t = Instant::now();
            match op(i).await {
                Ok(()) => stats::record(&mut histogram, t.elapsed()),
                Err(e) => {
                    errors.set(errors.get() + 1);
                    first_error
                        .borrow_mut()
                        .get_or_insert_with(|| e.to_string());
                }
            }
        }
        histogram
    };
    let mut workers: FuturesUnordered<_> =
        (0..bounds.concurrency.max(1)).map(|_| worker()).collect();
    let mut histogram = stats::histogram();
    while let Some(h) = workers.next().await {
        histogram.add(&h).expect("same histogram bounds");
    }
    let elapsed = started.elapsed();
    LoadResult {
        ok: histogram.len(),
        errors: errors.get(),
        first_error: first_error.borrow_mut().take(),
        elapsed,
        histogram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_at_the_request_count() {
        let bounds = Bounds {
            concurrency: 4,
            requests: 100,
            duration: Duration::from_secs(60),
        };
        let r = run(bounds, |i| async move {
            if i % 10 == 0 {
                Err("every tenth fails")
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(r.ok + r.errors, 100);
        assert_eq!(r.errors, 10);
        assert_eq!(r.first_error.as_deref(), Some("every tenth fails"));
        assert!(r.throughput() > 0.0);
    }

    #[tokio::test]
    async fn stops_at_the_time_limit() {
        let bounds = Bounds {
            concurrency: 2,
            requests: u64::MAX,
            duration: Duration::from_millis(100),
        };
        let r = run(bounds, |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<(), String>(())
        })
        .await;
        assert!(r.elapsed >= Duration::from_millis(100));
        assert!(r.elapsed < Duration::from_secs(5));
        // Two in flight, ~5 ms each, for ~100 ms: about 40 requests.
        assert!((10..=60).contains(&r.ok), "{} requests", r.ok);
        assert!(r.latency().p50 >= Duration::from_millis(5));
    }
}
