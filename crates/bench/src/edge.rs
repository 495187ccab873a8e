//! Decisions where the application runs, against a live stack (issue 17).
//!
//! - **B9d** (the B9; the soak already held that ID): a grant written on the
//!   entitlement service → the first check answering true on `tenantry agent` (its REST
//!   listener, polled every millisecond) and in the SDK's embedded evaluator in this process
//!   (checked on each revision it receives). Writes alternate between the two observers, each a
//!   user-level grant of a fresh (account, user) pair, as in B6.
//! - **B10**: the same account-level feature checks through the agent's REST listener and
//!   through the gateway's (environment token), interleaved; server CPU per check of the agent
//!   process ÷ that of the gateway, the entitlement and tenant services and their PostgreSQL
//!   backends.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tenantry_client::{
    ClientConfig, EntitlementApi, Evaluator, EvaluatorConfig,
    index::{CheckRequest, Subject, Target},
};
use tenantry_proto::entitlement::v1::{
    AllocationType, CreateFeatureRequest, CreateGrantRequest, CreatePlanRequest, NewGrant,
    PlanFeatureInput, Treatment, feature_service_client::FeatureServiceClient, new_grant::Plan,
    plan_service_client::PlanServiceClient,
};
use tenantry_tests::{Process, SERVICE_TOKEN};

use crate::{
    ab::interleaved_on,
    fixture::Fixture,
    procfs::CpuMeter,
    report::{Row, Verdict},
    stats::{self, Latency, ms, summarize},
};

const FEATURE: &str = "bench-b9d-feature";
const PLAN: &str = "bench-b9d-plan";
/// Writes observed by each of the agent and the SDK.
const WRITES: usize = 200;
const GIVE_UP: Duration = Duration::from_secs(10);
const CHECK_PATH: &str = "/entitlements/api/v1/is-entitled-to";

/// Starts `tenantry agent` beside the stack, on the server CPUs; returns it with its HTTP URL
/// once it holds a snapshot.
async fn start_agent(fixture: &Fixture, name: &'static str) -> Result<(Process, String)> {
    let (mut agent, url, _) = fixture.stack.agent(name);
    agent.set_cpu_list(fixture.settings.server_cpus.as_deref());
    agent.set_env("TENANTRY_LOG_LEVEL", "warn");
    agent.start();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !fixture
        .stack
        .http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("the agent was not ready within 120 s:\n{}", agent.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((agent, url))
}

fn http_client(in_flight: usize) -> Result<reqwest::Client> {
    // The workspace's reqwest has rustls without a built-in crypto provider: a plain client
    // needs the process default set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .tcp_nodelay(true)
        .build()?)
}

async fn rest_check(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> Result<Value, String> {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

async fn visible_on_agent(
    http: &reqwest::Client,
    url: &str,
    tenant: &str,
    user: &str,
) -> Result<Instant> {
    let body = json!({"subject": {"tenantId": tenant, "userId": user},
                      "feature": {"featureKey": FEATURE}})
    .to_string();
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let answer = rest_check(http, url, None, &body)
            .await
            .map_err(anyhow::Error::msg)?;
        if answer["result"] == true {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("grant for {tenant}/{user} not visible on the agent within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn visible_in_sdk(evaluator: &Evaluator, tenant: &str, user: &str) -> Result<Instant> {
    // Subscribed before the first look, so no revision slips between a look and the wait.
    let mut revisions = evaluator.subscribe();
    let request = CheckRequest {
        subject: Subject::user(tenant, user),
        target: Target::Feature(FEATURE),
        requested: None,
    };
    let deadline = tokio::time::Instant::now() + GIVE_UP;
    loop {
        if evaluator.check(&request).is_ok_and(|d| d.result) {
            return Ok(Instant::now());
        }
        match tokio::time::timeout_at(deadline, revisions.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the SDK's evaluator stopped"),
            Err(_) => bail!("grant for {tenant}/{user} not visible in the SDK within {GIVE_UP:?}"),
        }
    }
}

async fn create_catalog(fixture: &Fixture) -> Result<()> {
    FeatureServiceClient::new(fixture.entitlement.clone())
        .create_feature(CreateFeatureRequest {
            key: FEATURE.into(),
            name: FEATURE.into(),
            allocation_type: AllocationType::Bool.into(),
            ..Default::default()
        })
        .await
        .context("create the B9d feature")?;
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
        .context("create the B9d plan")?;
    Ok(())
}

/// B9d.
pub async fn b9d(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    create_catalog(fixture).await?;
    let (mut agent, agent_url) = start_agent(fixture, "agent-b9d").await?;
    let agent_check = format!("{agent_url}{CHECK_PATH}");
    let api = EntitlementApi::connect(
        &fixture.entitlement_url,
        &ClientConfig::default().with_service_token(SERVICE_TOKEN),
    )?;
    let evaluator = Evaluator::start(&api, EvaluatorConfig::default());
    tokio::time::timeout(Duration::from_secs(120), evaluator.wait_ready())
        .await
        .context("the SDK's evaluator holds no snapshot after 120 s")?;
    let http = http_client(1)?;
    let mut writer = fixture.grants_client();
    let mut pids = fixture.server_pids().await?;
    pids.extend(agent.pid());

    let blocks = s.pairs.max(1);
    let per_block = WRITES.div_ceil(blocks);
    let mut agent_blocks = vec![stats::histogram(); blocks];
    let mut sdk_blocks = vec![stats::histogram(); blocks];
    let mut agent_all = stats::histogram();
    let mut sdk_all = stats::histogram();
    let warm_up = 10;
    let total = warm_up + 2 * per_block * blocks;
    let meter = CpuMeter::start(&pids);
    let mut measured = 0_u64;
    for i in 0..total {
        let tenant = &fixture.accounts[i % fixture.accounts.len()];
        let user = format!("b9d-user-{i}");
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
            .context("create grant")?;
        let acked = Instant::now();
        let on_agent = i % 2 == 0;
        let seen = if on_agent {
            visible_on_agent(&http, &agent_check, tenant, &user).await?
        } else {
            visible_in_sdk(&evaluator, tenant, &user).await?
        };
        if i < warm_up {
            continue;
        }
        measured += 1;
        let block = ((i - warm_up) / 2) / per_block;
        let (blocks, all) = if on_agent {
            (&mut agent_blocks, &mut agent_all)
        } else {
            (&mut sdk_blocks, &mut sdk_all)
        };
        stats::record(&mut blocks[block], seen - acked);
        stats::record(all, seen - acked);
    }
    let cpu = meter.stop();
    evaluator.shutdown().await;
    agent.terminate().await;

    // Per block, the slower follower's p99: the bound must hold for both.
    let block_p99_ms: Vec<f64> = agent_blocks
        .iter()
        .zip(&sdk_blocks)
        .map(|(a, b)| Latency::of(a).p99.max(Latency::of(b).p99).as_secs_f64() * 1e3)
        .collect();
    let on_agent = Latency::of(&agent_all);
    let in_sdk = Latency::of(&sdk_all);
    let worst = on_agent.p99.max(in_sdk.p99).as_secs_f64() * 1e3;
    Ok(Row {
        id: "B9d",
        measure: format!(
            "write (CreateGrant) acknowledged by the service → first check answering true on \
             the agent (REST, polled every 1 ms) and in the SDK's evaluator (checked on each \
             revision received); {} writes per follower, interleaved; min/median/max over \
             {blocks} blocks of the slower follower's p99",
            on_agent.count
        ),
        a: format!(
            "agent: p50 {} / p99 {} / max {} ms",
            ms(on_agent.p50),
            ms(on_agent.p99),
            ms(on_agent.max)
        ),
        b: format!(
            "SDK: p50 {} / p99 {} / max {} ms",
            ms(in_sdk.p50),
            ms(in_sdk.p99),
            ms(in_sdk.max)
        ),
        summary: summarize(&block_p99_ms),
        unit: " ms",
        verdict: Verdict::at_most(worst, 50.0),
        cpu: format!(
            "{:.0} per write (services, PostgreSQL, agent; incl. the agent's polling)",
            cpu.as_secs_f64() * 1e6 / measured.max(1) as f64
        ),
        target: "p99 ≤ 50 ms on both".into(),
    })
}

/// B10.
pub async fn b10(fixture: &Fixture) -> Result<Row> {
    let s = &fixture.settings;
    let (mut agent, agent_url) = start_agent(fixture, "agent-b10").await?;
    let agent_pids = [agent.pid().context("the agent has no PID")?];
    let token = fixture.stack.env_token().await;
    let bodies: Vec<String> = fixture
        .checks
        .iter()
        .map(|(tenant, feature)| {
            json!({"subject": {"tenantId": tenant}, "feature": {"featureKey": feature}}).to_string()
        })
        .collect();
    let http = http_client(s.concurrency)?;
    let on_agent = format!("{agent_url}{CHECK_PATH}");
    let on_gateway = format!("{}{CHECK_PATH}", fixture.stack.base_url);
    // Same answer both ways before comparing cost.
    for (i, body) in bodies.iter().enumerate().take(50) {
        let a = rest_check(&http, &on_agent, None, body)
            .await
            .map_err(anyhow::Error::msg)?;
        let b = rest_check(&http, &on_gateway, Some(&token), body)
            .await
            .map_err(anyhow::Error::msg)?;
        if a["result"] != b["result"] || a["justification"] != b["justification"] {
            bail!("B10: the agent answered {a} and the gateway {b} for check {i}");
        }
    }
    let side = |url: &str, token: Option<&str>| {
        let (http, bodies, url, token) = (&http, &bodies, url.to_owned(), token.map(str::to_owned));
        move |i: u64| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            let body = bodies[i as usize % bodies.len()].clone();
            async move {
                rest_check(&http, &url, token.as_deref(), &body)
                    .await
                    .map(drop)
            }
        }
    };
    let pairs = interleaved_on(
        fixture,
        s.pairs,
        s.bounds(),
        (Some(&agent_pids[..]), side(&on_agent, None)),
        (None, side(&on_gateway, Some(&token))),
    )
    .await;
    agent.terminate().await;
    let pairs = pairs?;
    let ratio = pairs.cpu_ratio();
    Ok(Row {
        id: "B10",
        measure: format!(
            "server CPU per check: the agent's REST listener (the agent process) ÷ the gateway's \
             (environment token; gateway, entitlement and tenant services, PostgreSQL backends), \
             account-level feature checks, {} in flight",
            s.concurrency
        ),
        a: pairs.describe_a("checks/s"),
        b: pairs.describe_b("checks/s"),
        verdict: ratio.map_or(Verdict::Missed, |r| Verdict::at_most(r.median, 0.5)),
        summary: ratio,
        unit: "",
        cpu: pairs.cpu(),
        target: "≤ 0.5".into(),
    })
}
