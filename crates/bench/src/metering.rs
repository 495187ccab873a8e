//! B14: usage ingestion through `RecordUsage` (1,000-event calls) ÷ raw `COPY` of the same rows
//! into `ent_usage_event`; B15: `ConsumeUsage` ÷ the empty RPC (GetRevision) on the same
//! server, the same concurrency.
//!
//! Each measure defines a metered feature of its own (SUM, monthly) and a plan issuing it a
//! period allowance far beyond what the run draws, granted to the accounts it uses, so every
//! event is counted and every consumption allowed: both measure the accepted path.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::entitlement::v1::{
    Aggregation, Allocation, AllocationType, BatchCreateGrantsRequest, ConsumeUsageRequest,
    CreateFeatureRequest, CreatePlanRequest, GetRevisionRequest, MaxCountAllocation, Metering,
    NewGrant, PlanFeatureInput, RecordUsageRequest, Treatment, UsageEvent, UsageOutcome,
    allocation::Kind, feature_service_client::FeatureServiceClient,
    metering_service_client::MeteringServiceClient, new_grant::Plan,
    plan_service_client::PlanServiceClient,
};

use crate::{
    ab::{Pairs, interleaved},
    fixture::{Fixture, Lcg},
    procfs::CpuMeter,
    report::{Row, Verdict, thousands},
    stats::{self, summarize},
};

/// Events per B14 side: `CALLS` × `CALL` events.
pub const EVENTS: usize = 5_000;
/// Events per RecordUsage call (the API's maximum).
pub const CALL: usize = 1_000;
/// Accounts B14's events spread over: each 1,000-event call touches about this many meters.
pub const B14_ACCOUNTS: usize = 100;
/// Meters B15's consumptions rotate over (request i consumes on account i mod this): with 16
/// in flight, the requests in flight are on distinct meter rows.
pub const B15_METERS: usize = 64;
/// As B5: one side lasts ~0.1–0.3 s, so more pairs make the median an estimate, not a draw.
const PAIRS_FACTOR: usize = 3;
/// Each period's allowance: far more than a run draws, so nothing is refused.
const ALLOWANCE: u64 = 1_000_000_000_000;

fn metering_client(fixture: &Fixture) -> MeteringServiceClient<ClientChannel> {
    MeteringServiceClient::new(fixture.entitlement.clone())
}

/// Defines metered feature `key` (SUM, monthly) and plan `key`-plan issuing [`ALLOWANCE`] per
/// period, granted to `accounts`.
async fn metered_feature(fixture: &Fixture, key: &str, accounts: &[String]) -> Result<()> {
    FeatureServiceClient::new(fixture.entitlement.clone())
        .create_feature(CreateFeatureRequest {
            key: key.to_owned(),
            name: key.to_owned(),
            allocation_type: AllocationType::Metered.into(),
            metering: Some(Metering {
                unit: "call".into(),
                aggregation: Aggregation::Sum.into(),
                recurrence: "MONTH".into(),
                anchor: Some(prost_types::Timestamp {
                    seconds: 1_767_225_600, // 2026-01-01T00:00:00Z
                    nanos: 0,
                }),
                soft_limit: false,
                carry_overage: false,
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("create metered feature {key}"))?;
    let plan = format!("{key}-plan");
    PlanServiceClient::new(fixture.entitlement.clone())
        .create_plan(CreatePlanRequest {
            key: Some(plan.clone()),
            name: plan.clone(),
            features: vec![PlanFeatureInput {
                feature_key: key.to_owned(),
                allocation: Some(Allocation {
                    kind: Some(Kind::MaxCountAllocation(MaxCountAllocation {
                        value: ALLOWANCE,
                        unlimited: false,
                    })),
                }),
            }],
            default_treatment: Treatment::False.into(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("create plan {plan}"))?;
    fixture
        .grants_client()
        .batch_create_grants(BatchCreateGrantsRequest {
            grants: accounts
                .iter()
                .map(|a| NewGrant {
                    plan: Some(Plan::PlanKey(plan.clone())),
                    tenant_id: a.clone(),
                    ..Default::default()
                })
                .collect(),
            idempotency_key: None,
        })
        .await
        .with_context(|| format!("grant {plan}"))?;
    Ok(())
}

struct Run {
    rows_per_second: f64,
    cpu_us_per_row: f64,
}

fn run_of(rows: usize, elapsed: Duration, cpu: Duration) -> Run {
    Run {
        rows_per_second: rows as f64 / elapsed.as_secs_f64().max(1e-9),
        cpu_us_per_row: cpu.as_secs_f64() * 1e6 / rows as f64,
    }
}

/// One B14 service side: `EVENTS` fresh events (ids never sent before) in `CALL`-event calls,
/// one after another, each acknowledged only once durable.
async fn ingest(
    fixture: &Fixture,
    client: &mut MeteringServiceClient<ClientChannel>,
    accounts: &[String],
    rng: &mut Lcg,
    seq: &mut u64,
) -> Result<(Run, Vec<(String, String)>)> {
    let events: Vec<UsageEvent> = (0..EVENTS)
        .map(|_| {
            *seq += 1;
            UsageEvent {
                id: format!("b14-{seq:09}"),
                tenant_id: accounts[rng.below(accounts.len())].clone(),
                feature_key: B14_FEATURE.into(),
                amount: 1 + rng.below(100) as i64,
                ..Default::default()
            }
        })
        .collect();
    let keys = events
        .iter()
        .map(|e| (e.tenant_id.clone(), e.id.clone()))
        .collect();
    let meter = CpuMeter::start(&fixture.server_pids().await?);
    let started = Instant::now();
    let mut recorded = 0;
    for chunk in events.chunks(CALL) {
        let answer = client
            .record_usage(RecordUsageRequest {
                events: chunk.to_vec(),
            })
            .await
            .context("record usage")?
            .into_inner();
        recorded += answer
            .outcomes
            .iter()
            .filter(|o| **o == i32::from(UsageOutcome::Recorded))
            .count();
    }
    let run = run_of(EVENTS, started.elapsed(), meter.stop());
    ensure!(recorded == EVENTS, "recorded {recorded} of {EVENTS} events");
    Ok((run, keys))
}

/// One B14 COPY side: the rows the service wrote last, exported, deleted (untimed), then timed
/// going back in through `COPY ent_usage_event FROM STDIN` (its primary key and the
/// account-feature-time index maintained as for the service).
async fn copy(
    fixture: &Fixture,
    db: &DatabaseConnection,
    keys: &[(String, String)],
) -> Result<Run> {
    let list = keys
        .iter()
        .map(|(tenant, id)| format!("('{tenant}','{id}')"))
        .collect::<Vec<_>>()
        .join(",");
    let filter = format!("(tenant_id, event_id) IN ({list})");
    let pool = db.get_postgres_connection_pool();
    let mut conn = pool.acquire().await?;
    let mut data = Vec::new();
    {
        let mut out = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM ent_usage_event WHERE {filter}) TO STDOUT"
            ))
            .await?;
        while let Some(chunk) = out.next().await {
            data.extend_from_slice(&chunk?);
        }
    }
    let deleted = db
        .execute_unprepared(&format!("DELETE FROM ent_usage_event WHERE {filter}"))
        .await?
        .rows_affected();
    ensure!(
        deleted == EVENTS as u64,
        "deleted {deleted} of {EVENTS} rows"
    );
    let meter = CpuMeter::start(&fixture.server_pids().await?);
    let started = Instant::now();
    let mut sink = conn.copy_in_raw("COPY ent_usage_event FROM STDIN").await?;
    sink.send(data).await?;
    let copied = sink.finish().await?;
    let run = run_of(EVENTS, started.elapsed(), meter.stop());
    ensure!(copied == EVENTS as u64, "copied {copied} of {EVENTS} rows");
    Ok(run)
}

const B14_FEATURE: &str = "bench-meter-b14";
const B15_FEATURE: &str = "bench-meter-b15";

/// B14: batched usage ingestion ÷ COPY of the same rows.
pub async fn b14(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let accounts = &fixture.accounts[..B14_ACCOUNTS.min(fixture.accounts.len())];
    metered_feature(fixture, B14_FEATURE, accounts).await?;
    let db = fixture.entitlement_db(2).await?;
    let mut client = metering_client(fixture);
    let mut rng = Lcg::new(14);
    let mut seq = 0;
    // Warm-up: one batch each way.
    let (_, mut latest) = ingest(fixture, &mut client, accounts, &mut rng, &mut seq).await?;
    copy(fixture, &db, &latest).await?;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for pair in 0..s.pairs * PAIRS_FACTOR {
        if pair % 2 == 0 {
            let (run, keys) = ingest(fixture, &mut client, accounts, &mut rng, &mut seq).await?;
            a.push(run);
            latest = keys;
            b.push(copy(fixture, &db, &latest).await?);
        } else {
            b.push(copy(fixture, &db, &latest).await?);
            let (run, keys) = ingest(fixture, &mut client, accounts, &mut rng, &mut seq).await?;
            a.push(run);
            latest = keys;
        }
    }
    db.close().await?;

    let pairs: Vec<(f64, f64)> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| (a.rows_per_second, b.rows_per_second))
        .collect();
    let ratio = summarize(&stats::ratios(&pairs));
    let median = |runs: &[Run], f: fn(&Run) -> f64| {
        summarize(&runs.iter().map(f).collect::<Vec<_>>()).map_or(0.0, |s| s.median)
    };
    Ok(Row {
        id: "B14",
        measure: format!(
            "RecordUsage of {} events ({} × {}-event calls, one after another, over {} \
             accounts' meters of a SUM feature; events/s) ÷ raw COPY of the same rows into \
             ent_usage_event",
            thousands(EVENTS as f64),
            EVENTS / CALL,
            thousands(CALL as f64),
            accounts.len()
        ),
        a: format!("{} events/s", thousands(median(&a, |r| r.rows_per_second))),
        b: format!("{} rows/s", thousands(median(&b, |r| r.rows_per_second))),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_least(r.median, 0.5)),
        summary: ratio,
        unit: "",
        cpu: format!(
            "A {:.1} / B {:.1} per row",
            median(&a, |r| r.cpu_us_per_row),
            median(&b, |r| r.cpu_us_per_row)
        ),
        target: "≥ 0.5".into(),
    })
}

/// The server's `fsync` and `synchronous_commit`: whether each commit waits for its WAL to be
/// flushed to disk (the suite's own PostgreSQL runs with both off; `TEST_DATABASE_URL` points
/// the suite at another).
async fn commit_durability(fixture: &Fixture) -> Result<(String, String)> {
    let mut values = Vec::new();
    for name in ["fsync", "synchronous_commit"] {
        let row = fixture
            .admin
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT current_setting('{name}') AS value"),
            ))
            .await?
            .with_context(|| format!("SHOW {name}"))?;
        values.push(row.try_get::<String>("", "value")?);
    }
    let synchronous = values.pop().unwrap_or_default();
    Ok((values.pop().unwrap_or_default(), synchronous))
}

/// B15: ConsumeUsage ÷ the empty RPC, on whatever durability the server is set to (said in
/// the row).
pub async fn b15(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let accounts = &fixture.accounts[..B15_METERS.min(fixture.accounts.len())];
    metered_feature(fixture, B15_FEATURE, accounts).await?;
    let (fsync, synchronous) = commit_durability(fixture).await?;
    let pairs = consume_vs_empty(fixture, accounts).await?;
    let ratio = pairs.throughput_ratio();
    Ok(Row {
        id: "B15",
        measure: format!(
            "ConsumeUsage RPC (amount 1, a fresh id each, rotating over {} accounts' meters: \
             the calls in flight hold distinct meter rows; those arriving together share one \
             transaction) ÷ empty RPC (GetRevision), gRPC, {} in flight; PostgreSQL \
             fsync={fsync}, synchronous_commit={synchronous}",
            accounts.len(),
            s.concurrency
        ),
        a: pairs.describe_a("consumptions/s"),
        b: pairs.describe_b("calls/s"),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_least(r.median, 0.5)),
        summary: ratio,
        unit: "",
        cpu: pairs.cpu(),
        target: "≥ 0.5 (group commit: consumptions arriving during a transaction go together in \
                 the next)"
            .into(),
    })
}

/// ConsumeUsage (distinct ids; request i on account i mod [`B15_METERS`]) ÷ GetRevision, the
/// same channel and concurrency.
async fn consume_vs_empty(fixture: &Fixture, accounts: &[String]) -> Result<Pairs> {
    let s = &fixture.settings;
    let metering = metering_client(fixture);
    let checks = fixture.checks_client();
    // Ids unique across every run of the measure (the load generator restarts i at 0).
    let seq = AtomicU64::new(0);
    let consume = |i: u64| {
        let mut c = metering.clone();
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let request = ConsumeUsageRequest {
            id: format!("b15-{n:09}"),
            tenant_id: accounts[i as usize % accounts.len()].clone(),
            user_id: None,
            feature_key: B15_FEATURE.into(),
            amount: 1,
        };
        async move {
            let answer = c
                .consume_usage(request)
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if answer.consumed && !answer.replayed {
                Ok(())
            } else {
                Err(format!(
                    "not consumed: {:?} (replayed {})",
                    answer.justification(),
                    answer.replayed
                ))
            }
        }
    };
    let empty = |_| {
        let mut c = checks.clone();
        async move { c.get_revision(GetRevisionRequest {}).await.map(drop) }
    };
    interleaved(fixture, s.pairs, s.bounds(), consume, empty).await
}
