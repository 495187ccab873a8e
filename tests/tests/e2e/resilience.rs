//! Failures: the entitlement service killed mid-way resumes the tenant change feed with nothing
//! lost or applied twice; a PostgreSQL outage answers 503 (never 500) and the stack recovers.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_common::testing::DedicatedPostgres;
use tenantry_tests::{Stack, StackOptions};

use crate::support::{
    assert_decision, check_feature, create_account, create_feature, create_plan, eventually,
    expect, grant_batch, grants,
};

const DEADLINE: Duration = Duration::from_secs(45);

/// Waits until `tenant_id` holds exactly one signup grant, and returns it.
async fn signup_grant(stack: &Stack, env: &str, tenant_id: &str) -> Value {
    eventually(
        DEADLINE,
        &format!("signup grant of {tenant_id}"),
        || async {
            let found = grants(stack, env, &format!("tenantIds={tenant_id}&sources=signup")).await;
            match found.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err("none yet".to_owned()),
                many => panic!("{tenant_id} has {} signup grants: {many:?}", many.len()),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlement_service_killed_midway_resumes_the_change_feed() {
    let mut stack = Stack::start().await;
    let env = stack.env_token().await;
    let env = env.as_str();
    create_feature(&stack, env, "basic", "bool", &[]).await;
    create_feature(&stack, env, "gold-feature", "bool", &[]).await;
    create_plan(
        &stack,
        env,
        json!({"name": "Starter", "key": "starter", "featureKeys": ["basic"], "assignOnSignup": true}),
    )
    .await;
    create_plan(
        &stack,
        env,
        json!({"name": "Gold", "key": "gold", "featureKeys": ["gold-feature"]}),
    )
    .await;

    // Accounts created while the service runs receive the signup plan once.
    create_account(&stack, env, "early", "Early").await;
    create_account(&stack, env, "doomed", "Doomed").await;
    let early = signup_grant(&stack, env, "early").await;
    assert_eq!(early["planKey"], "starter", "{early}");
    assert_eq!(early["status"], "active", "{early}");
    signup_grant(&stack, env, "doomed").await;
    let gold = grant_batch(
        &stack,
        env,
        vec![json!({"planKey": "gold", "tenantId": "doomed"})],
    )
    .await;
    let doomed_user = stack.user_token("doomed", "u-doomed", &[]);
    let answer = check_feature(&stack, &doomed_user, "doomed", "gold-feature", json!({})).await;
    assert_decision(&answer, true, None, "gold before the crash");

    // Crash. Checks fail with 503 while the service is away.
    stack.entitlement.kill();
    let (status, body) = stack
        .call(
            Method::POST,
            "/entitlements/api/v1/is-entitled-to",
            Some(&doomed_user),
            Some(json!({"subject": {"tenantId": "doomed"}, "feature": {"featureKey": "basic"}})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "UNAVAILABLE", "{body}");
    // The gateway is alive but not ready.
    let (status, _) = stack.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "liveness with a service down");
    let (status, body) = stack.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "readiness: {body}");

    // The tenant service goes on changing accounts meanwhile.
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        "/tenants/resources/tenants/v1/doomed",
        Some(env),
        None,
    )
    .await;
    create_account(&stack, env, "late", "Late").await;

    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;

    // Events missed while down are applied: the deleted account's grants are revoked ...
    let revoked = eventually(DEADLINE, "doomed's grants revoked", || async {
        let all = grants(&stack, env, "tenantIds=doomed").await;
        if all.len() == 2 && all.iter().all(|g| g["status"] == "revoked") {
            Ok(all)
        } else {
            Err(Value::from(all).to_string())
        }
    })
    .await;
    for grant in &revoked {
        assert_eq!(grant["revokeReason"], "tenant_deleted", "{grant}");
    }
    assert!(revoked.iter().any(|g| g["id"] == gold[0]));
    let answer = check_feature(&stack, &doomed_user, "doomed", "gold-feature", json!({})).await;
    assert_eq!(answer["result"], false, "deleted account: {answer}");
    // ... and the account created meanwhile gets its signup plan.
    let late = signup_grant(&stack, env, "late").await;
    let late_user = stack.user_token("late", "u-late", &[]);
    let answer = check_feature(&stack, &late_user, "late", "basic", json!({})).await;
    assert_decision(&answer, true, None, "late account's signup plan");

    // Nothing applied twice. The feed is ordered: once an account created now has its signup
    // grant, every earlier event (replayed or not) has been applied.
    let once = [(&early, "early"), (&late, "late")];
    assert_signups_exactly_once(&stack, env, &once, &["sentinel-1"]).await;

    // A clean restart resumes from the stored cursor too.
    let status = stack.entitlement.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;
    assert_signups_exactly_once(&stack, env, &once, &["sentinel-1", "sentinel-2"]).await;
}

/// Creates the last of `sentinels` and waits for its signup grant; then every account holds
/// exactly one signup grant, and the accounts of `unchanged` still hold only the grant seen
/// before.
async fn assert_signups_exactly_once(
    stack: &Stack,
    env: &str,
    unchanged: &[(&Value, &str)],
    sentinels: &[&str],
) {
    let newest = sentinels.last().expect("a sentinel");
    create_account(stack, env, newest, newest).await;
    signup_grant(stack, env, newest).await;
    let signups = grants(stack, env, "sources=signup").await;
    let mut tenants: Vec<&str> = signups
        .iter()
        .filter_map(|g| g["tenantId"].as_str())
        .collect();
    tenants.sort_unstable();
    let mut expected = vec!["doomed", "early", "late"];
    expected.extend(sentinels);
    expected.sort_unstable();
    assert_eq!(
        tenants, expected,
        "one signup grant per account: {signups:?}"
    );
    for (grant, tenant) in unchanged {
        let now = grants(stack, env, &format!("tenantIds={tenant}")).await;
        assert_eq!(now.len(), 1, "{tenant}: {now:?}");
        assert_eq!(now[0]["id"], grant["id"], "{tenant}: {now:?}");
        assert_eq!(now[0]["status"], "active", "{tenant}: {now:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_the_stack_recovers() {
    let pg = DedicatedPostgres::start();
    let stack = Stack::start_on(&pg.server(), StackOptions::default()).await;
    let env = stack.env_token().await;
    let env = env.as_str();
    create_account(&stack, env, "steady", "Steady").await;
    create_feature(&stack, env, "core", "bool", &[]).await;
    create_feature(&stack, env, "extra", "bool", &[]).await;
    create_plan(
        &stack,
        env,
        json!({"name": "Core", "key": "core-plan", "featureKeys": ["core"]}),
    )
    .await;
    create_plan(
        &stack,
        env,
        json!({"name": "Extra", "key": "extra-plan", "featureKeys": ["extra"]}),
    )
    .await;
    grant_batch(
        &stack,
        env,
        vec![json!({"planKey": "core-plan", "tenantId": "steady"})],
    )
    .await;
    let user = stack.user_token("steady", "u-steady", &[]);

    pg.stop();
    // Every request that needs the database fails with 503, twice in a row (a broken pooled
    // connection first, then a refused one).
    let needs_database = [
        (
            Method::GET,
            "/tenants/resources/tenants/v2".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/tenants/resources/tenants/v2/steady".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/tenants/resources/tenants/v1".to_owned(),
            Some(json!({"tenantId": "during-outage", "name": "During"})),
        ),
        (
            Method::POST,
            "/entitlements/resources/features/v1".to_owned(),
            Some(json!({"name": "late", "key": "late-feature"})),
        ),
        (
            Method::POST,
            "/entitlements/resources/entitlements/v2/batch".to_owned(),
            Some(json!({"entitlements": [{"planKey": "extra-plan", "tenantId": "steady"}]})),
        ),
    ];
    for round in 0..2 {
        for (method, path, body) in &needs_database {
            let (status, answer) = stack
                .call(method.clone(), path, Some(env), body.clone())
                .await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "round {round}: {method} {path} during the outage: {answer}\n{}",
                stack.log_tails()
            );
            assert_eq!(answer["error"], "UNAVAILABLE", "{answer}");
        }
    }
    // Liveness never depends on the database.
    let (status, _) = stack.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "liveness during the outage");
    // Checks are answered from memory and never touch the database.
    let answer = check_feature(&stack, &user, "steady", "core", json!({})).await;
    assert_decision(&answer, true, None, "check during the outage");

    pg.restart();
    // Back again: requests succeed (503 allowed only until the pools reconnect, 500 never).
    for (method, path, body, expected) in [
        (
            Method::GET,
            "/tenants/resources/tenants/v2/steady",
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/tenants/resources/tenants/v1",
            Some(json!({"tenantId": "after-outage", "name": "After"})),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/entitlements/resources/features/v1",
            Some(json!({"name": "late", "key": "late-feature"})),
            StatusCode::CREATED,
        ),
    ] {
        eventually(
            DEADLINE,
            &format!("{method} {path} after the outage"),
            || async {
                let (status, answer) = stack
                    .call(method.clone(), path, Some(env), body.clone())
                    .await;
                match status {
                    s if s == expected => Ok(()),
                    StatusCode::SERVICE_UNAVAILABLE => Err(answer.to_string()),
                    other => panic!("{method} {path} after the outage: {other} {answer}"),
                }
            },
        )
        .await;
    }
    let ids = grant_batch(
        &stack,
        env,
        vec![json!({"planKey": "extra-plan", "tenantId": "after-outage"})],
    )
    .await;
    let after_user = stack.user_token("after-outage", "u-after", &[]);
    let answer = check_feature(&stack, &after_user, "after-outage", "extra", json!({})).await;
    assert_decision(&answer, true, None, "a grant written after the outage");
    assert_eq!(answer["provenance"]["grantId"], ids[0], "{answer}");

    // The change feed is followed again too: deleting an account revokes its grants.
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        "/tenants/resources/tenants/v1/after-outage",
        Some(env),
        None,
    )
    .await;
    eventually(DEADLINE, "grant of a deleted account revoked", || async {
        let found = grants(&stack, env, "tenantIds=after-outage").await;
        if found.len() == 1 && found[0]["status"] == "revoked" {
            Ok(())
        } else {
            Err(Value::from(found).to_string())
        }
    })
    .await;
}
