//! B2–B4: the check's throughput against an empty RPC, a hand-written SQL check, and the REST
//! gateway.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use sea_orm::{DbBackend, Statement};
use tenantry_proto::entitlement::v1::{GetRevisionRequest, IsEntitledToRequest};

use crate::{
    ab::{Pairs, interleaved},
    fixture::{Fixture, USER_ID, query},
    report::{Row, Verdict},
};

fn check_request(fixture: &Fixture, i: u64, user: Option<&str>) -> IsEntitledToRequest {
    let (tenant, feature) = &fixture.checks[i as usize % fixture.checks.len()];
    IsEntitledToRequest {
        query: Some(query(tenant, user, feature)),
        min_revision: 0,
    }
}

/// B2: isEntitledTo ÷ GetRevision (an RPC doing nothing) on the same server and channel.
pub async fn b2(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let client = fixture.checks_client();
    let check = |i| {
        let mut c = client.clone();
        let request = check_request(fixture, i, None);
        async move { c.is_entitled_to(request).await.map(drop) }
    };
    let empty = |_| {
        let mut c = client.clone();
        async move { c.get_revision(GetRevisionRequest {}).await.map(drop) }
    };
    let pairs = interleaved(fixture, s.pairs, s.bounds(), check, empty).await?;
    let ratio = pairs.throughput_ratio();
    Ok(Row {
        id: "B2",
        measure: format!(
            "isEntitledTo RPC ÷ empty RPC (GetRevision), gRPC, {} in flight",
            s.concurrency
        ),
        a: pairs.describe_a("checks/s"),
        b: pairs.describe_b("calls/s"),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_least(r.median, 0.9)),
        summary: ratio,
        unit: "",
        cpu: pairs.cpu(),
        target: "≥ 0.9".into(),
    })
}

/// The check a user would write by hand: one SQL query per check through sea-orm, joining
/// grants → plans → plan features → features, for the account and the feature key, filtering
/// out revoked, expired and not-yet-started grants and deleted plans.
pub const NAIVE_CHECK_SQL: &str = "SELECT EXISTS (
    SELECT 1
    FROM ent_grant g
    JOIN ent_plan p ON p.id = g.plan_id AND p.deleted_at IS NULL
    JOIN ent_plan_feature pf ON pf.plan_id = p.id
    JOIN ent_feature f ON f.id = pf.feature_id
    WHERE g.tenant_id = $1 AND g.user_id IS NULL AND f.key = $2
      AND g.revoked_at IS NULL
      AND g.starts_at <= now()
      AND (g.expires_at IS NULL OR g.expires_at > now())
) AS entitled";

/// B3: isEntitledTo (from the service's index, over gRPC) ÷ the naive SQL check (in this
/// process, through sea-orm, against the same schema and rows).
pub async fn b3(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let db = fixture
        .entitlement_db(u32::try_from(s.concurrency).unwrap_or(16))
        .await
        .context("connect to the entitlement schema")?;
    // The two must agree before their speed is compared.
    let mut client = fixture.checks_client();
    for i in 0..200 {
        let (tenant, feature) = &fixture.checks[i];
        let served = client
            .is_entitled_to(check_request(fixture, i as u64, None))
            .await?
            .into_inner()
            .decision
            .is_some_and(|d| d.result);
        let naive = naive_check(&db, tenant, feature).await?;
        if served != naive {
            bail!(
                "B3: the naive query says {naive} and the service {served} for {tenant}/{feature}"
            );
        }
    }
    let served = |i| {
        let mut c = client.clone();
        let request = check_request(fixture, i, None);
        async move { c.is_entitled_to(request).await.map(drop) }
    };
    let naive = |i: u64| {
        let (tenant, feature) = &fixture.checks[i as usize % fixture.checks.len()];
        let db = &db;
        async move { naive_check(db, tenant, feature).await.map(drop) }
    };
    let pairs = interleaved(fixture, s.pairs, s.bounds(), served, naive).await?;
    let ratio = pairs.throughput_ratio();
    db.close().await?;
    Ok(Row {
        id: "B3",
        measure: format!(
            "isEntitledTo (index, gRPC) ÷ naive check (one SQL query per check via sea-orm, in-process), {} in flight",
            s.concurrency
        ),
        a: pairs.describe_a("checks/s"),
        b: pairs.describe_b("checks/s"),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_least(r.median, 5.0)),
        summary: ratio,
        unit: "×",
        cpu: pairs.cpu(),
        target: "≥ 5×".into(),
    })
}

async fn naive_check(
    db: &sea_orm::DatabaseConnection,
    tenant: &str,
    feature: &str,
) -> Result<bool, sea_orm::DbErr> {
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            NAIVE_CHECK_SQL,
            [tenant.into(), feature.into()],
        ))
        .await?;
    match row {
        Some(row) => row.try_get("", "entitled"),
        None => Ok(false),
    }
}

/// B4: the check through the REST gateway (user token, JSON) ÷ the same check over gRPC; then
/// the same through a second gateway that sends every check in its own call
/// (`check_coalesce_max = 1`), so the table shows what coalescing is worth.
pub async fn b4(fixture: &mut Fixture) -> Result<Vec<Row>> {
    let s = fixture.settings.clone();
    let base_url = fixture.stack.base_url.clone();
    let coalescing = rest_vs_grpc(fixture, &base_url).await?;
    let ratio = coalescing.throughput_ratio();
    let mut rows = vec![Row {
        id: "B4",
        measure: format!(
            "check via REST gateway (user token, HTTP/1.1 JSON) ÷ same check over gRPC, {} in flight",
            s.concurrency
        ),
        a: coalescing.describe_a("checks/s"),
        b: coalescing.describe_b("checks/s"),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_least(r.median, 0.5)),
        summary: ratio,
        unit: "",
        cpu: coalescing.cpu(),
        target: "≥ 0.5".into(),
    }];

    let (mut solo, solo_url) = fixture
        .stack
        .gateway_variant("gateway-solo", &[("TENANTRY_CHECK_COALESCE_MAX", "1")]);
    solo.start();
    let ready = format!("{solo_url}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fixture
        .stack
        .http
        .get(&ready)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!(
                "the second gateway was not ready within 60 s:\n{}",
                solo.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture.extra_pids.extend(solo.pid());
    let measured = rest_vs_grpc(fixture, &solo_url).await;
    fixture.extra_pids.retain(|pid| Some(*pid) != solo.pid());
    solo.terminate().await;
    let pairs = measured?;
    rows.push(Row {
        id: "B4′",
        measure: format!(
            "as B4, through a second gateway with `check_coalesce_max = 1` (every check its own \
             call), {} in flight",
            s.concurrency
        ),
        a: pairs.describe_a("checks/s"),
        b: pairs.describe_b("checks/s"),
        verdict: Verdict::Report,
        summary: pairs.throughput_ratio(),
        unit: "",
        cpu: pairs.cpu(),
        target: "report (what coalescing is worth)".into(),
    });
    Ok(rows)
}

/// REST checks through the gateway at `base_url` ÷ the same checks over gRPC, interleaved.
async fn rest_vs_grpc(fixture: &Fixture, base_url: &str) -> Result<Pairs> {
    let s = &fixture.settings;
    let tokens: HashMap<&str, String> = fixture
        .checks
        .iter()
        .map(|(tenant, _)| {
            (
                tenant.as_str(),
                fixture.stack.user_token(tenant, USER_ID, &[]),
            )
        })
        .collect();
    let bodies: Vec<(String, String)> = fixture
        .checks
        .iter()
        .map(|(tenant, feature)| {
            let body = serde_json::json!({
                "subject": {"tenantId": tenant},
                "feature": {"featureKey": feature},
            });
            (tokens[tenant.as_str()].clone(), body.to_string())
        })
        .collect();
    // The workspace's reqwest has rustls without a built-in crypto provider (the gateway's
    // JWKS client brings its own, ring): a plain client needs the process default set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(s.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let url = format!("{base_url}/entitlements/api/v1/is-entitled-to");
    // Same answer both ways before comparing speed.
    let mut client = fixture.checks_client();
    for (i, (token, body)) in bodies.iter().enumerate().take(50) {
        let rest: serde_json::Value = http
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let grpc = client
            .is_entitled_to(check_request(fixture, i as u64, Some(USER_ID)))
            .await?
            .into_inner()
            .decision
            .is_some_and(|d| d.result);
        let rest = rest["result"].as_bool();
        if rest != Some(grpc) {
            bail!("B4: REST answered {rest:?} and gRPC {grpc} for check {i}");
        }
    }
    let rest = |i: u64| {
        let (token, body) = &bodies[i as usize % bodies.len()];
        let request = http
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone());
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)))
            }
        }
    };
    let grpc = |i| {
        let mut c = client.clone();
        let request = check_request(fixture, i, Some(USER_ID));
        async move { c.is_entitled_to(request).await.map(drop) }
    };
    interleaved(fixture, s.pairs, s.bounds(), rest, grpc).await
}
