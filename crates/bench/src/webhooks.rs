//! B16: commit → webhook received, on loopback, under a steady write load. The three services
//! on PostgreSQL (pinned as the fixture's) with one webhook endpoint for
//! `tenantry.feature.changed.v1`, served by a receiver in this process; feature creates go
//! through the REST gateway at a steady rate, each its own task on a fixed tick, and each is
//! announced by one signed event. Latency runs from the create's 201 (the commit happened
//! before it) to the arrival of the event naming that feature, its signature checked; the
//! median, min and max are over windows of each window's p99.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::{Router, extract::State, http::HeaderMap, http::StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use tenantry_common::testing;
use tenantry_entitlement::domain::webhook;
use tenantry_tests::{Stack, StackOptions};

use crate::fixture::Settings;
use crate::procfs::CpuMeter;
use crate::report::{Row, Verdict, thousands};
use crate::stats::{Latency, histogram, ms, record, summarize};

/// The target: p99 from the write's answer to the event's arrival.
const TARGET_MS: f64 = 200.0;
/// How long after a window's last write its events may still arrive.
const GRACE: Duration = Duration::from_secs(10);

/// What the receiver saw: feature key → when its event arrived; and events whose signature
/// did not verify.
#[derive(Default)]
struct Received {
    arrivals: HashMap<String, Instant>,
    bad_signatures: u64,
}

#[derive(Clone)]
struct Receiver {
    secret: Arc<Mutex<String>>,
    received: Arc<Mutex<Received>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let now = Instant::now();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let secret = r.secret.lock().expect("secret").clone();
    let signed = timestamp
        .parse::<i64>()
        .ok()
        .and_then(|t| webhook::sign(&secret, &id, t, &body).ok())
        .is_some_and(|expected| signatures.split(' ').any(|s| s == expected));
    let mut received = r.received.lock().expect("received");
    if !signed {
        received.bad_signatures += 1;
        return StatusCode::BAD_REQUEST;
    }
    if let Ok(event) = serde_json::from_str::<Value>(&body)
        && let Some(key) = event["data"]["item"]["key"].as_str()
    {
        received.arrivals.entry(key.to_owned()).or_insert(now);
    }
    StatusCode::NO_CONTENT
}

/// B16.
pub async fn b16(settings: &Settings) -> Result<Row> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (rate, window_secs) = if settings.quick { (20, 3) } else { (50, 10) };
    let windows = settings.pairs;
    let server_cpus = settings.server_cpus.clone();
    let stack = Stack::start_configured(testing::postgres(), StackOptions::default(), |p| {
        p.set_cpu_list(server_cpus.as_deref());
        p.set_env("TENANTRY_LOG_LEVEL", "warn");
        p.set_env("TENANTRY_RATE_LIMIT_PER_SECOND", "1000000");
        p.set_env("TENANTRY_RATE_LIMIT_BURST", "1000000");
        if p.name() == "entitlement-service" {
            // The receiver is on loopback.
            p.set_env("TENANTRY_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
        }
    })
    .await;
    let receiver = Receiver {
        secret: Arc::default(),
        received: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let env = stack.env_token().await;
    let (status, created) = stack
        .call(
            Method::POST,
            "/entitlements/api/v1/webhooks",
            Some(&env),
            Some(json!({"url": format!("http://127.0.0.1:{port}/hook"),
                        "eventTypes": ["tenantry.feature.changed.v1"]})),
        )
        .await;
    if !status.is_success() {
        bail!("register the webhook: {status} {created}");
    }
    *receiver.secret.lock().expect("secret") = created["secret"]
        .as_str()
        .context("the created webhook's secret")?
        .to_owned();
    let poll_ms = stack
        .entitlement
        .env("TENANTRY_WEBHOOK_POLL_MS")
        .unwrap_or("1000 (default)")
        .to_owned();
    let pids: Vec<u32> = [&stack.tenant, &stack.entitlement, &stack.gateway]
        .iter()
        .filter_map(|p| p.pid())
        .collect();
    let stack = Arc::new(stack);
    let env = Arc::new(env);
    let mut p99s = Vec::new();
    let mut all = histogram();
    let mut from_send = histogram();
    let mut missing = 0usize;
    let mut writes_total = 0u64;
    let meter = CpuMeter::start(&pids);
    for w in 0..windows {
        let acks: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
        // A tick late under load is sent late, not in a burst that would raise the rate.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut writes = Vec::new();
        for i in 0..rate * window_secs {
            ticks.tick().await;
            let (stack, env, acks) = (stack.clone(), env.clone(), acks.clone());
            let key = format!("b16-{w}-{i}");
            writes.push(tokio::spawn(async move {
                let body = json!({"name": key, "key": key, "type": "bool", "permissions": []});
                let sent = Instant::now();
                let (status, answer) = stack
                    .call(
                        Method::POST,
                        "/entitlements/resources/features/v1",
                        Some(&env),
                        Some(body),
                    )
                    .await;
                if status.is_success() {
                    acks.lock()
                        .expect("acks")
                        .insert(key, (sent, Instant::now()));
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("create a feature: {status} {answer}"))
                }
            }));
        }
        for write in writes {
            write.await.context("a write task")??;
        }
        let acks = std::mem::take(&mut *acks.lock().expect("acks"));
        writes_total += acks.len() as u64;
        // Every event of the window, or GRACE after its last write.
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            let complete = {
                let got = receiver.received.lock().expect("received");
                acks.keys().all(|k| got.arrivals.contains_key(k))
            };
            if complete {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = receiver.received.lock().expect("received");
        let mut h = histogram();
        for (key, (sent, acked)) in &acks {
            match got.arrivals.get(key) {
                Some(at) => {
                    // An event before the answer counts as 0.
                    let latency = at.saturating_duration_since(*acked);
                    record(&mut h, latency);
                    record(&mut all, latency);
                    record(&mut from_send, at.saturating_duration_since(*sent));
                }
                None => missing += 1,
            }
        }
        p99s.push(Latency::of(&h).p99.as_secs_f64() * 1e3);
    }
    let cpu = meter.stop();
    server.abort();
    let bad_signatures = receiver.received.lock().expect("received").bad_signatures;
    let overall = Latency::of(&all);
    let sent = Latency::of(&from_send);
    let Some(summary) = summarize(&p99s) else {
        bail!("no windows");
    };
    let verdict = if missing > 0 || bad_signatures > 0 {
        Verdict::Missed
    } else {
        Verdict::at_most(summary.median, TARGET_MS)
    };
    Ok(Row {
        id: "B16",
        measure: format!(
            "webhook latency: REST feature create answered (201) → its signed \
             `tenantry.feature.changed.v1` event received by a loopback endpoint in the bench \
             process (signature checked), the three services on PostgreSQL, {rate} creates/s \
             steadily (each its own request on a fixed tick) for {window_secs} s per window, \
             {windows} windows; `webhook_poll_ms` {poll_ms} (this replica's commits wake its \
             delivery loop); median/min/max of the windows' p99"
        ),
        a: format!(
            "{} events: p50 {} / p99 {} / max {} ms (from sending the write: p50 {} / p99 {} ms); \
             {missing} not received within {} s, {bad_signatures} bad signatures",
            thousands(overall.count as f64),
            ms(overall.p50),
            ms(overall.p99),
            ms(overall.max),
            ms(sent.p50),
            ms(sent.p99),
            GRACE.as_secs()
        ),
        b: "–".into(),
        summary: Some(summary),
        unit: " ms",
        cpu: format!(
            "{:.0} per write and its delivery (the three services; PostgreSQL not counted)",
            cpu.as_secs_f64() * 1e6 / writes_total.max(1) as f64
        ),
        target: format!("p99 ≤ {TARGET_MS:.0} ms, every event received, every signature valid"),
        verdict,
    })
}
