//! B17: write throughput with the audit log on ÷ off. Side A is the fixture's tenant and
//! entitlement services (`audit_enabled` at its default, on); side B a second tenant-service
//! and entitlement-service process on the same database and schemas with
//! `TENANTRY_AUDIT_ENABLED=false`, on the same CPUs. Both sides get the same write mix over
//! gRPC, interleaved as every A/B measure: half account creates (tenant service), half
//! user-level grant creates (entitlement service), each a fresh item, so every write records
//! one audit entry on A and none on B.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::entitlement::v1::{
    CreateGrantRequest, GetRevisionRequest, NewGrant,
    entitlement_service_client::EntitlementServiceClient, grant_service_client::GrantServiceClient,
    new_grant::Plan,
};
use tenantry_proto::tenant::v1::{
    CreateAccountRequest, GetAccountRequest, NewAccount, tenant_service_client::TenantServiceClient,
};
use tenantry_tests::Process;

use crate::{
    ab::{self, Pairs},
    fixture::{Fixture, channel, plan_key},
    report::{Row, Verdict},
};

/// The target: audit on keeps at least this share of the throughput.
const TARGET: f64 = 0.8;

/// One side's services.
struct Side {
    tenant: ClientChannel,
    entitlement: ClientChannel,
}

/// Starts `process` and waits until `ready` answers.
async fn start<F, Fut>(process: &mut Process, ready: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    process.start();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready().await {
        if Instant::now() > deadline {
            bail!(
                "{} did not answer within 120 s:\n{}",
                process.name(),
                process.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One write of the mix: `i` even creates an account, odd a grant; `n` makes the item fresh.
async fn write(side: &Side, fixture: &Fixture, label: &str, i: u64, n: u64) -> Result<()> {
    if i.is_multiple_of(2) {
        TenantServiceClient::new(side.tenant.clone())
            .create_account(CreateAccountRequest {
                account: Some(NewAccount {
                    tenant_id: Some(format!("b17-{label}-{n}")),
                    name: format!("B17 account {n}"),
                    ..Default::default()
                }),
                idempotency_key: None,
            })
            .await?;
    } else {
        let tenant = &fixture.accounts[(n as usize) % fixture.accounts.len()];
        GrantServiceClient::new(side.entitlement.clone())
            .create_grant(CreateGrantRequest {
                grant: Some(NewGrant {
                    plan: Some(Plan::PlanKey(plan_key(0))),
                    tenant_id: tenant.clone(),
                    user_id: Some(format!("b17-{label}-user-{n}")),
                    ..Default::default()
                }),
                idempotency_key: None,
            })
            .await?;
    }
    Ok(())
}

pub async fn b17(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let off = [("TENANTRY_AUDIT_ENABLED", "false")];
    let (mut tenant_b, tenant_b_url) = fixture.stack.tenant_variant("tenant-audit-off", &off);
    let (mut entitlement_b, entitlement_b_url) = fixture
        .stack
        .entitlement_variant("entitlement-audit-off", &off);
    let b = Side {
        tenant: channel(&tenant_b_url)?,
        entitlement: channel(&entitlement_b_url)?,
    };
    start(&mut tenant_b, || async {
        let mut client = TenantServiceClient::new(b.tenant.clone());
        // NOT_FOUND is an answer: the service is up.
        match client
            .get_account(GetAccountRequest {
                tenant_id: "b17-probe".into(),
            })
            .await
        {
            Ok(_) => true,
            Err(status) => status.code() == tonic::Code::NotFound,
        }
    })
    .await?;
    start(&mut entitlement_b, || async {
        EntitlementServiceClient::new(b.entitlement.clone())
            .get_revision(GetRevisionRequest {})
            .await
            .is_ok()
    })
    .await?;
    let a = Side {
        tenant: fixture.tenant.clone(),
        entitlement: fixture.entitlement.clone(),
    };
    let backends = fixture.backend_pids().await?;
    let a_pids: Vec<u32> = [&fixture.stack.tenant, &fixture.stack.entitlement]
        .iter()
        .filter_map(|p| p.pid())
        .chain(backends.iter().copied())
        .collect();
    let b_pids: Vec<u32> = [tenant_b.pid(), entitlement_b.pid()]
        .into_iter()
        .flatten()
        .chain(backends.iter().copied())
        .collect();
    // Fresh items across every run of both sides.
    let counter = AtomicU64::new(0);
    let pairs: Pairs = ab::interleaved_on(
        fixture,
        s.pairs,
        s.bounds(),
        (Some(&a_pids), |i| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let a = &a;
            async move { write(a, fixture, "on", i, n).await }
        }),
        (Some(&b_pids), |i| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let b = &b;
            async move { write(b, fixture, "off", i, n).await }
        }),
    )
    .await
    .context("B17 writes")?;
    drop((tenant_b, entitlement_b));
    let ratio = pairs.throughput_ratio();
    Ok(Row {
        id: "B17",
        measure: format!(
            "write throughput, audit log on ÷ off: the same write mix (half CreateAccount on the \
             tenant service, half CreateGrant on the entitlement service, each a fresh item; \
             gRPC, {} in flight) on the stack's services (audit on: one entry per write, in its \
             transaction) and on a second tenant and entitlement service over the same \
             database with `audit_enabled = false`",
            s.concurrency
        ),
        a: pairs.describe_a("writes/s"),
        b: pairs.describe_b("writes/s"),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_least(r.median, TARGET)),
        summary: ratio,
        unit: "",
        cpu: format!(
            "{} (each side's two services, PostgreSQL backends)",
            pairs.cpu()
        ),
        target: format!("≥ {TARGET}"),
    })
}
