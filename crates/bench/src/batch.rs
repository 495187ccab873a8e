//! B5: batch create of 5,000 grants through `BatchCreateGrants` (1,000-item calls) ÷ raw `COPY`
//! of the same rows into the same table and indexes.
//!
//! The COPY side re-loads exactly the rows the service wrote: they are exported with
//! `COPY … TO STDOUT`, deleted (untimed), then timed going back in with `COPY ent_grant FROM
//! STDIN` over a connection of the sqlx pool underneath sea-orm, as the entitlement role.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::entitlement::v1::{
    BatchCreateGrantsRequest, NewGrant, grant_service_client::GrantServiceClient, new_grant::Plan,
};

use crate::{
    fixture::{Fixture, Lcg, PLANS, plan_key},
    procfs::CpuMeter,
    report::{Row, Verdict, thousands},
    stats::{self, summarize},
};

pub const ROWS: usize = 5_000;
pub const CALL: usize = 1_000;
/// B5 runs this many times the suite's pairs: one side of a pair lasts ~0.1 s here (the
/// service and COPY each write 5,000 rows once), and five pairs gave medians of 0.48 and 0.57
/// in two runs of the same binaries; more pairs make the median an estimate, not a draw.
const PAIRS_FACTOR: usize = 3;

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

async fn service(
    fixture: &Fixture,
    client: &mut GrantServiceClient<ClientChannel>,
    rng: &mut Lcg,
) -> Result<(Run, Vec<String>)> {
    let grants: Vec<NewGrant> = (0..ROWS)
        .map(|_| NewGrant {
            plan: Some(Plan::PlanKey(plan_key(rng.below(PLANS)))),
            tenant_id: fixture.accounts[rng.below(fixture.accounts.len())].clone(),
            ..Default::default()
        })
        .collect();
    let meter = CpuMeter::start(&fixture.server_pids().await?);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(ROWS);
    for chunk in grants.chunks(CALL) {
        let answer = client
            .batch_create_grants(BatchCreateGrantsRequest {
                grants: chunk.to_vec(),
                idempotency_key: None,
            })
            .await
            .context("batch create grants")?
            .into_inner();
        ids.extend(answer.grant_ids);
    }
    let run = run_of(ROWS, started.elapsed(), meter.stop());
    ensure!(ids.len() == ROWS, "created {} grants", ids.len());
    Ok((run, ids))
}

async fn copy(fixture: &Fixture, db: &DatabaseConnection, ids: &[String]) -> Result<Run> {
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let pool = db.get_postgres_connection_pool();
    let mut conn = pool.acquire().await?;
    let mut data = Vec::new();
    {
        let mut out = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM ent_grant WHERE id IN ({list})) TO STDOUT"
            ))
            .await?;
        while let Some(chunk) = out.next().await {
            data.extend_from_slice(&chunk?);
        }
    }
    let deleted = db
        .execute_unprepared(&format!("DELETE FROM ent_grant WHERE id IN ({list})"))
        .await?
        .rows_affected();
    ensure!(deleted == ROWS as u64, "deleted {deleted} of {ROWS} rows");
    let meter = CpuMeter::start(&fixture.server_pids().await?);
    let started = Instant::now();
    let mut sink = conn.copy_in_raw("COPY ent_grant FROM STDIN").await?;
    sink.send(data).await?;
    let copied = sink.finish().await?;
    let run = run_of(ROWS, started.elapsed(), meter.stop());
    ensure!(copied == ROWS as u64, "copied {copied} of {ROWS} rows");
    Ok(run)
}

pub async fn b5(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let db = fixture.entitlement_db(2).await?;
    let mut client = fixture.grants_client();
    let mut rng = Lcg::new(55);
    // Warm-up: one batch each way.
    let (_, mut latest) = service(fixture, &mut client, &mut rng).await?;
    copy(fixture, &db, &latest).await?;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for pair in 0..s.pairs * PAIRS_FACTOR {
        if pair % 2 == 0 {
            let (run, ids) = service(fixture, &mut client, &mut rng).await?;
            a.push(run);
            latest = ids;
            b.push(copy(fixture, &db, &latest).await?);
        } else {
            b.push(copy(fixture, &db, &latest).await?);
            let (run, ids) = service(fixture, &mut client, &mut rng).await?;
            a.push(run);
            latest = ids;
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
        id: "B5",
        measure: format!(
            "BatchCreateGrants of {} grants ({} × {}-item calls, rows/s) ÷ raw COPY of the same rows into ent_grant",
            thousands(ROWS as f64),
            ROWS / CALL,
            thousands(CALL as f64)
        ),
        a: format!("{} rows/s", thousands(median(&a, |r| r.rows_per_second))),
        b: format!("{} rows/s", thousands(median(&b, |r| r.rows_per_second))),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_least(r.median, 0.5)),
        summary: ratio,
        unit: "",
        cpu: format!(
            "A {:.1} / B {:.1} per row",
            median(&a, |r| r.cpu_us_per_row),
            median(&b, |r| r.cpu_us_per_row)
        ),
        target: "≥ 0.5 (the service inserts with unnest, not COPY)".into(),
    })
}
