//! B8: index memory at 1,000,000 grants: the entitlement service's resident set after it built
//! its index at start, with and without the grants.
//!
//! The grants (10 per account, over 100,000 accounts of the service's local hierarchy copy)
//! are seeded with `COPY` straight into `ent_account` and `ent_grant`, as the service's role;
//! then the service is restarted so it builds its index from the database at start. VmRSS is
//! read from `/proc/PID/status` once a check on a seeded account answers (the index is
//! loaded). Baseline: the same restart before seeding. RSS also holds whatever the allocator
//! kept from the start-up load (rows read, then dropped), so bytes per grant is an upper
//! bound of the index's own footprint.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenantry_proto::entitlement::v1::IsEntitledToRequest;

use crate::{
    fixture::{Fixture, PLANS, feature_key, plan_features, query},
    procfs,
    report::{Row, Verdict, thousands},
    stats::summarize,
};

pub const GRANTS_PER_ACCOUNT: u64 = 10;
/// Rows per `COPY` message.
const CHUNK: u64 = 20_000;

fn account(i: u64) -> String {
    format!("b8-{i:07}")
}

/// Restarts the entitlement service and waits until a check on `probe` answers `true`;
/// returns (RSS bytes, CPU time of the whole start, start time).
async fn restart(fixture: &mut Fixture, probe: Option<&str>) -> Result<(u64, Duration, Duration)> {
    fixture.stack.entitlement.terminate().await;
    let started = Instant::now();
    fixture.stack.entitlement.start();
    let pid = fixture
        .stack
        .entitlement
        .pid()
        .context("entitlement service has no PID")?;
    let mut client = fixture.checks_client();
    let (tenant, feature) = match probe {
        Some(t) => (t.to_owned(), feature_key(plan_features(0)[0])),
        None => fixture.checks[0].clone(),
    };
    let deadline = started + Duration::from_secs(600);
    loop {
        let answer = client
            .is_entitled_to(IsEntitledToRequest {
                query: Some(query(&tenant, None, &feature)),
                min_revision: 0,
            })
            .await;
        match answer {
            Ok(a) if probe.is_none() || a.get_ref().decision.as_ref().is_some_and(|d| d.result) => {
                break;
            }
            Ok(_) | Err(_) if Instant::now() > deadline => {
                bail!(
                    "entitlement service not ready with its index within 600 s:\n{}",
                    fixture.stack.entitlement.logs()
                );
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let ready = started.elapsed();
    // Let start-up work (the tenant feed catching up, allocator trimming) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = procfs::rss_bytes(pid).context("read VmRSS")?;
    let cpu = procfs::cpu_time(pid).context("read CPU time")?;
    Ok((rss, cpu, ready))
}

pub async fn b8(fixture: &mut Fixture) -> Result<Row> {
    let s = fixture.settings.clone();
    let n = s.b8_grants;
    let accounts = n.div_ceil(GRANTS_PER_ACCOUNT);
    let db = fixture.entitlement_db(2).await?;
    let existing: i64 = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM ent_grant",
        ))
        .await?
        .context("count grants")?
        .try_get("", "n")?;

    let mut before = Vec::new();
    for _ in 0..2 {
        before.push(restart(fixture, None).await?.0 as f64);
    }
    let before = summarize(&before).map_or(0.0, |s| s.median);

    // Seed: accounts of the local hierarchy copy, then the grants, both with COPY.
    let started = Instant::now();
    let plan_ids: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id::text AS id FROM ent_plan WHERE key LIKE 'bench-plan-%' ORDER BY key",
        ))
        .await?
        .iter()
        .map(|r| r.try_get::<String>("", "id"))
        .collect::<Result<_, _>>()?;
    if plan_ids.len() != PLANS {
        bail!("found {} bench plans", plan_ids.len());
    }
    // bench-plan-0 sorts first: it holds the probe's feature.
    let pool = db.get_postgres_connection_pool();
    let mut conn = pool.acquire().await?;
    let mut sink = conn
        .copy_in_raw("COPY ent_account (tenant_id, parent_id, deleted, updated_at) FROM STDIN")
        .await?;
    let mut buf = String::new();
    for i in 0..accounts {
        buf.push_str(&account(i));
        buf.push_str("\t\\N\tf\t2025-01-01 00:00:00+00\n");
        if (i + 1) % CHUNK == 0 {
            sink.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    sink.send(std::mem::take(&mut buf).into_bytes()).await?;
    sink.finish().await?;
    let mut sink = conn
        .copy_in_raw(
            "COPY ent_grant (id, plan_id, tenant_id, user_id, starts_at, expires_at, revoked_at, \
             revoked_by, revoke_reason, source, external_id, granted_by, metadata, created_at, \
             updated_at) FROM STDIN",
        )
        .await?;
    for g in 0..n {
        let id = uuid::Uuid::now_v7();
        // Account i holds plans i, i+1, … (mod PLANS): the probe account b8-0000000 holds plan 0.
        let a = g / GRANTS_PER_ACCOUNT;
        let plan = &plan_ids[((a + g % GRANTS_PER_ACCOUNT) % PLANS as u64) as usize];
        buf.push_str(&format!(
            "{id}\t{plan}\t{}\t\\N\t2025-01-01 00:00:00+00\t\\N\t\\N\t\\N\t\\N\tmigration\t\\N\t\\N\tnull\t2025-01-01 00:00:00+00\t2025-01-01 00:00:00+00\n",
            account(a)
        ));
        if (g + 1) % CHUNK == 0 {
            sink.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    sink.send(buf.into_bytes()).await?;
    let copied = sink.finish().await?;
    drop(conn);
    db.execute_unprepared("VACUUM ANALYZE ent_grant").await?;
    db.execute_unprepared("VACUUM ANALYZE ent_account").await?;
    db.close().await?;
    eprintln!(
        "B8: copied {} grants over {} accounts in {:.1} s",
        thousands(copied as f64),
        thousands(accounts as f64),
        started.elapsed().as_secs_f64()
    );

    let mut per_grant = Vec::new();
    let mut after = Vec::new();
    let mut cpu = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..s.pairs {
        let (rss, c, r) = restart(fixture, Some(&account(0))).await?;
        per_grant.push((rss as f64 - before) / n as f64);
        after.push(rss as f64);
        cpu.push(c.as_secs_f64() * 1e6 / n as f64);
        ready.push(r.as_secs_f64());
    }
    let summary = summarize(&per_grant);
    let median = |v: &[f64]| summarize(v).map_or(0.0, |s| s.median);
    Ok(Row {
        id: "B8",
        measure: format!(
            "index memory: entitlement-service VmRSS after start with +{} grants (COPY-seeded, {} accounts) − without, per grant; {} restarts",
            thousands(n as f64),
            thousands(accounts as f64),
            s.pairs
        ),
        a: format!(
            "{:.0} MiB with {} grants (ready in {:.1} s)",
            median(&after) / 1_048_576.0,
            thousands((n as i64 + existing) as f64),
            median(&ready)
        ),
        b: format!(
            "{:.0} MiB with {} grants",
            before / 1_048_576.0,
            thousands(existing as f64)
        ),
        verdict: summary.map_or(Verdict::Missed, |s| Verdict::at_most(s.median, 256.0)),
        summary,
        unit: " B",
        cpu: format!("{:.1} start-up CPU per grant", median(&cpu)),
        target: "≤ 256 bytes per grant".into(),
    })
}
