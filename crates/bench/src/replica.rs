//! B6: a grant written on entitlement replica A becomes visible to checks on replica B (a
//! second entitlement-service process on the same database, following its change log).
//!
//! Writes alternate between two observers: checks on replica B (the measure) and checks on
//! the writing replica A itself (the baseline: visible at once, read-your-writes). Each write
//! is a user-level grant of a fresh (account, user) pair to a plan made for this measure, so
//! "visible" means the first check answering true; checks poll every millisecond.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::entitlement::v1::{
    AllocationType, CreateFeatureRequest, CreateGrantRequest, CreatePlanRequest,
    GetRevisionRequest, IsEntitledToRequest, NewGrant, PlanFeatureInput, Treatment,
    entitlement_service_client::EntitlementServiceClient,
    feature_service_client::FeatureServiceClient, new_grant::Plan,
    plan_service_client::PlanServiceClient,
};

use crate::{
    fixture::{Fixture, channel, query},
    procfs::CpuMeter,
    report::{Row, Verdict},
    stats::{self, Latency, ms, summarize},
};

const FEATURE: &str = "bench-b6-feature";
const PLAN: &str = "bench-b6-plan";
/// Writes observed on replica B (and as many on A).
pub const WRITES: usize = 200;
const GIVE_UP: Duration = Duration::from_secs(10);

async fn visible_after(
    checks: &mut EntitlementServiceClient<ClientChannel>,
    tenant: &str,
    user: &str,
) -> Result<Instant> {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let answer = checks
            .is_entitled_to(IsEntitledToRequest {
                query: Some(query(tenant, Some(user), FEATURE)),
                min_revision: 0,
            })
            .await?
            .into_inner();
        if answer.decision.is_some_and(|d| d.result) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("grant for {tenant}/{user} not visible within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn b6(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let (mut replica, replica_url) = fixture.stack.entitlement_replica("entitlement-replica-b");
    replica.start();
    let mut on_b = EntitlementServiceClient::new(channel(&replica_url)?);
    let deadline = Instant::now() + Duration::from_secs(120);
    while on_b.get_revision(GetRevisionRequest {}).await.is_err() {
        if Instant::now() > deadline {
            bail!("replica B did not answer within 120 s:\n{}", replica.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut on_a = fixture.checks_client();
    FeatureServiceClient::new(fixture.entitlement.clone())
        .create_feature(CreateFeatureRequest {
            key: FEATURE.into(),
            name: FEATURE.into(),
            allocation_type: AllocationType::Bool.into(),
            ..Default::default()
        })
        .await
        .context("create the B6 feature")?;
    PlanServiceClient::new(fixture.entitlement.clone())
        .create_plan(CreatePlanRequest {
            key: Some(PLAN.into()),
            name: PLAN.into(),
            features: vec![PlanFeatureInput {
                feature_key: FEATURE.into(),
                allocation: None,
            }],
            default_treatment: Treatment::False.into(),
            ..Default::default()
        })
        .await
        .context("create the B6 plan")?;
    let mut writer = fixture.grants_client();
    let mut pids = fixture.server_pids().await?;
    pids.extend(replica.pid());

    let blocks = s.pairs.max(1);
    let per_block = WRITES.div_ceil(blocks);
    let mut b_blocks = vec![stats::histogram(); blocks];
    let mut a_all = stats::histogram();
    let mut b_all = stats::histogram();
    let mut b_from_send = stats::histogram();
    let warm_up = 10;
    let total = warm_up + 2 * per_block * blocks;
    let meter = CpuMeter::start(&pids);
    let mut measured_writes = 0_u64;
    for i in 0..total {
        let tenant = &fixture.accounts[i % fixture.accounts.len()];
        let user = format!("b6-user-{i}");
        let sent = Instant::now();
        writer
            .create_grant(CreateGrantRequest {
                grant: Some(NewGrant {
                    plan: Some(Plan::PlanKey(PLAN.into())),
                    tenant_id: tenant.clone(),
                    user_id: Some(user.clone()),
                    ..Default::default()
                }),
                idempotency_key: None,
            })
            .await
            .context("create grant on replica A")?;
        let acked = Instant::now();
        let observe_on_b = i % 2 == 0;
        let seen = if observe_on_b {
            visible_after(&mut on_b, tenant, &user).await?
        } else {
            visible_after(&mut on_a, tenant, &user).await?
        };
        if i < warm_up {
            continue;
        }
        measured_writes += 1;
        let j = i - warm_up;
        if observe_on_b {
            stats::record(&mut b_blocks[(j / 2) / per_block], seen - acked);
            stats::record(&mut b_all, seen - acked);
            stats::record(&mut b_from_send, seen - sent);
        } else {
            stats::record(&mut a_all, seen - acked);
        }
    }
    let cpu = meter.stop();
    drop(replica);

    let block_p99_ms: Vec<f64> = b_blocks
        .iter()
        .map(|h| Latency::of(h).p99.as_secs_f64() * 1e3)
        .collect();
    let b = Latency::of(&b_all);
    let a = Latency::of(&a_all);
    let from_send = Latency::of(&b_from_send);
    Ok(Row {
        id: "B6",
        measure: format!(
            "write (CreateGrant) acknowledged by replica A → first check answering true on replica B; {} writes per observer, interleaved; min/median/max over {blocks} blocks of the B p99",
            b.count
        ),
        a: format!(
            "on B: p50 {} / p99 {} / max {} ms (from sending the write: p99 {} ms)",
            ms(b.p50),
            ms(b.p99),
            ms(b.max),
            ms(from_send.p99)
        ),
        b: format!(
            "on A (the writer): p50 {} / p99 {} / max {} ms",
            ms(a.p50),
            ms(a.p99),
            ms(a.max)
        ),
        summary: summarize(&block_p99_ms),
        unit: " ms",
        verdict: Verdict::at_most(b.p99.as_secs_f64() * 1e3, 100.0),
        cpu: format!(
            "{:.0} per write (incl. 1 ms polling)",
            cpu.as_secs_f64() * 1e6 / measured_writes.max(1) as f64
        ),
        target: "p99 ≤ 100 ms".into(),
    })
}
