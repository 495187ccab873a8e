//! Metering across processes: a usage stream through an entitlement service killed with
//! SIGKILL loses no acknowledged event and counts none twice; usage recorded through one
//! replica is what checks on another replica answer.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_tests::Stack;
use tokio::sync::Mutex;

use crate::support::{create_account, create_plan, eventually, expect, grant_batch};

const DEADLINE: Duration = Duration::from_secs(60);
const USAGE: &str = "/entitlements/api/v1/usage";
/// Events per batch, and batches the stream sends.
const BATCH: usize = 50;
const BATCHES: usize = 120;

/// `acme` on a plan issuing plenty of `calls` a month.
async fn metered_account(stack: &Stack, env: &str) {
    expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/features/v1",
        Some(env),
        Some(
            json!({"name": "API calls", "key": "calls", "type": "metered",
                    "metering": {"unit": "call", "recurrence": "MONTH",
                                 "anchor": "2026-01-01T00:00:00Z"}}),
        ),
    )
    .await;
    create_plan(
        stack,
        env,
        json!({"name": "API", "key": "api",
               "features": [{"featureKey": "calls",
                             "allocation": {"type": "max_count", "value": 10_000_000}}]}),
    )
    .await;
    create_account(stack, env, "acme", "Acme").await;
    grant_batch(
        stack,
        env,
        vec![json!({"planKey": "api", "tenantId": "acme"})],
    )
    .await;
}

/// Batch `n`: events `b{n}-{i}`, amounts 1..=BATCH (a double count changes the sum).
fn batch(n: usize) -> Value {
    let events: Vec<Value> = (0..BATCH)
        .map(|i| {
            json!({"id": format!("b{n}-{i}"), "tenantId": "acme", "featureKey": "calls",
                   "amount": i + 1})
        })
        .collect();
    json!({ "events": events })
}

/// Acknowledged batches with their events' outcomes.
type Acked = Arc<Mutex<Vec<(usize, Vec<String>)>>>;

fn batch_sum() -> i64 {
    (1..=BATCH as i64).sum()
}

/// The account's meter usage as the service answers it now.
async fn usage(stack: &Stack, env: &str, min_revision: u64) -> Result<i64, String> {
    let (status, body) = stack
        .call(
            Method::GET,
            &format!("/entitlements/api/v1/accounts/acme/meters/calls?minRevision={min_revision}"),
            Some(env),
            None,
        )
        .await;
    if status != StatusCode::OK {
        return Err(format!("{status}: {body}"));
    }
    body["meter"]["usage"]
        .as_i64()
        .ok_or_else(|| format!("no usage in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_acknowledged_before_a_sigkill_is_kept_and_retries_count_nothing_twice() {
    let mut stack = Stack::start().await;
    let env = stack.env_token().await;
    metered_account(&stack, &env).await;
    let http = reqwest::Client::new();
    let base = stack.base_url.clone();

    // Four senders stream the batches; each retries a batch until it is acknowledged, as an
    // at-least-once producer does. Acknowledged batches are noted with their outcomes.
    let acked: Acked = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (http, base, env, acked, next) = (
            http.clone(),
            base.clone(),
            env.clone(),
            acked.clone(),
            next.clone(),
        );
        senders.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= BATCHES {
                    return;
                }
                loop {
                    let sent = http
                        .post(format!("{base}{USAGE}"))
                        .bearer_auth(&env)
                        .json(&batch(n))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    if let Ok(response) = sent
                        && response.status() == StatusCode::OK
                    {
                        let body: Value = response.json().await.expect("usage answer");
                        let outcomes = body["outcomes"]
                            .as_array()
                            .expect("outcomes")
                            .iter()
                            .map(|o| o.as_str().unwrap_or_default().to_owned())
                            .collect();
                        acked.lock().await.push((n, outcomes));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    // Kill the service in the middle of the stream.
    eventually(DEADLINE, "a third of the stream acknowledged", || async {
        let n = acked.lock().await.len();
        if n >= BATCHES / 3 {
            Ok(())
        } else {
            Err(format!("{n} batches"))
        }
    })
    .await;
    stack.entitlement.kill();
    let before_kill: Vec<usize> = acked.lock().await.iter().map(|(n, _)| *n).collect();
    assert!(
        before_kill.len() < BATCHES,
        "the stream ended before the kill"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;
    while let Some(done) = senders.join_next().await {
        done.expect("sender");
    }

    let s = &stack;
    let acked = acked.lock().await;
    assert_eq!(acked.len(), BATCHES);
    // Every batch counted exactly once: a retry of one whose first answer was lost in the
    // crash answers DUPLICATE for what had committed.
    let total = eventually(DEADLINE, "the meter's usage", || usage(s, &env, 0)).await;
    assert_eq!(
        total,
        BATCHES as i64 * batch_sum(),
        "usage after the crash and the retries\n{}",
        s.log_tails()
    );
    for (n, outcomes) in acked.iter() {
        assert!(
            outcomes.iter().all(|o| o == "RECORDED") || outcomes.iter().all(|o| o == "DUPLICATE"),
            "a batch is one transaction: all of it counted, or none (batch {n}: {outcomes:?})"
        );
    }
    // Nothing acknowledged before the kill was lost: sent again, each of its events is known.
    for n in before_kill {
        let answer = expect(
            s,
            StatusCode::OK,
            Method::POST,
            USAGE,
            Some(&env),
            Some(batch(n)),
        )
        .await;
        assert!(
            answer["outcomes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o == "DUPLICATE"),
            "batch {n} acknowledged before the kill: {answer}"
        );
    }
    assert_eq!(
        usage(s, &env, 0).await.unwrap(),
        BATCHES as i64 * batch_sum()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_recorded_through_one_replica_is_what_another_replica_checks() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    metered_account(&stack, &env).await;
    // Replica B, on the same database, behind a gateway of its own.
    let (mut replica, replica_url) = stack.entitlement_replica("entitlement-b");
    replica.start();
    let (mut gateway_b, base_b) = stack.gateway_variant(
        "gateway-b",
        &[("TENANTRY_ENTITLEMENT_SERVICE_URL", replica_url.as_str())],
    );
    gateway_b.start();
    let http = reqwest::Client::new();
    eventually(DEADLINE, "gateway B ready", || async {
        match http.get(format!("{base_b}/readyz")).send().await {
            Ok(r) if r.status() == StatusCode::OK => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    // Gateway B signs its own environment tokens.
    let token_b: Value = http
        .post(format!("{base_b}/auth/vendor"))
        .json(&json!({"clientId": tenantry_tests::CLIENT_ID,
                      "secret": tenantry_tests::CLIENT_SECRET}))
        .send()
        .await
        .expect("token from B")
        .json()
        .await
        .expect("token answer");
    let env_b = token_b["token"].as_str().expect("token").to_owned();
    let check_b = |requested: i64, min_revision: u64| {
        let (http, base_b, env) = (http.clone(), base_b.clone(), env_b.clone());
        async move {
            let answer: Value = http
                .post(format!("{base_b}/entitlements/api/v1/is-entitled-to"))
                .bearer_auth(&env)
                .json(&json!({"subject": {"tenantId": "acme"},
                              "feature": {"featureKey": "calls"},
                              "requestedAmount": requested, "minRevision": min_revision}))
                .send()
                .await
                .expect("check on B")
                .json()
                .await
                .expect("check answer");
            answer
        }
    };
    let mut expected = 0;
    for round in 0..5 {
        // Through A (the stack's gateway) ...
        let recorded = expect(
            &stack,
            StatusCode::OK,
            Method::POST,
            USAGE,
            Some(&env),
            Some(batch(round)),
        )
        .await;
        expected += batch_sum();
        let revision = recorded["revision"].as_u64().expect("revision");
        // ... read on B: with the write's revision the first answer includes it ...
        let answer = check_b(1, revision).await;
        assert_eq!(
            answer["meter"]["usage"], expected,
            "round {round}: {answer}"
        );
        // ... and without one, B converges on its own (the stream from the database).
        expected += batch_sum();
        expect(
            &stack,
            StatusCode::OK,
            Method::POST,
            USAGE,
            Some(&env),
            Some(batch(100 + round)),
        )
        .await;
        eventually(DEADLINE, "B follows A's usage", || async {
            let answer = check_b(1, 0).await;
            if answer["meter"]["usage"] == expected {
                Ok(())
            } else {
                Err(answer.to_string())
            }
        })
        .await;
    }
    // A consumption on B sees A's usage: the balance left is what both replicas agree on.
    let left = 10_000_000 - expected;
    let refused = check_b(left + 1, 0).await;
    assert_eq!(refused["result"], false, "{refused}");
    assert_eq!(
        refused["justification"], "INSUFFICIENT_BALANCE",
        "{refused}"
    );
    gateway_b.kill();
    replica.kill();
}

/// An entitlement service that has written consumption groups on PostgreSQL (which keep one
/// pooled connection from one group to the next) still stops on SIGTERM: closing its pool
/// used to wait for that connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entitlement_service_that_consumed_stops_on_sigterm() {
    let mut stack = Stack::start().await;
    let env = stack.env_token().await;
    let env = env.as_str();
    metered_account(&stack, env).await;
    // The first creates the meter; those after it take the connection groups keep.
    for id in ["c1", "c2", "c3"] {
        let consumed = expect(
            &stack,
            StatusCode::OK,
            Method::POST,
            "/entitlements/api/v1/usage/consume",
            Some(env),
            Some(json!({"id": id, "tenantId": "acme", "featureKey": "calls"})),
        )
        .await;
        assert_eq!(consumed["consumed"], true, "{consumed}");
    }
    let status = stack.entitlement.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
}
