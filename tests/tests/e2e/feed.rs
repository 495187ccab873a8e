//! The tenant change feed under attack and over time: one user's large logo updates cannot
//! stall it, and an entitlement service away for longer than the feed's retention
//! resynchronises instead of missing what happened meanwhile.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantry_common::testing;
use tenantry_tests::{Stack, StackOptions, TENANT_SCHEMA};

use crate::support::{
    check_feature, create_account, create_feature, create_plan, eventually, expect, grant_batch,
};

const DEADLINE: Duration = Duration::from_secs(45);

/// Waits until `tenant_id`'s check of `feature` answers `result`.
async fn check_becomes(stack: &Stack, env: &str, tenant_id: &str, feature: &str, result: bool) {
    eventually(
        DEADLINE,
        &format!("{tenant_id} entitled to {feature}: {result}"),
        || async {
            let answer = check_feature(stack, env, tenant_id, feature, json!({})).await;
            if answer["result"] == result {
                Ok(())
            } else {
                Err(answer.to_string())
            }
        },
    )
    .await;
}

/// Features `gold`, `basic` and `family`, plans for the first and the last (`family` reaches
/// sub-accounts), accounts `doomed` (gold), `parent` (family) and `child` (a root for now).
async fn accounts_and_grants(stack: &Stack, env: &str) {
    for key in ["gold", "basic", "family"] {
        create_feature(stack, env, key, "bool", &[]).await;
    }
    create_plan(
        stack,
        env,
        json!({"name": "Gold", "key": "gold", "featureKeys": ["gold"]}),
    )
    .await;
    create_plan(
        stack,
        env,
        json!({"name": "Family", "key": "family", "featureKeys": ["family"], "inheritToSubAccounts": true}),
    )
    .await;
    for id in ["doomed", "parent", "child"] {
        create_account(stack, env, id, id).await;
    }
    grant_batch(
        stack,
        env,
        vec![
            json!({"planKey": "gold", "tenantId": "doomed"}),
            json!({"planKey": "family", "tenantId": "parent"}),
        ],
    )
    .await;
    check_becomes(stack, env, "doomed", "gold", true).await;
    check_becomes(stack, env, "parent", "family", true).await;
}

/// A deletion, a sign-up plan and a new account, a hierarchy change; then waits until the
/// entitlement service has applied each.
async fn changes_propagate(stack: &Stack, env: &str) {
    expect(
        stack,
        StatusCode::OK,
        Method::DELETE,
        "/tenants/resources/tenants/v1/doomed",
        Some(env),
        None,
    )
    .await;
    create_plan(
        stack,
        env,
        json!({"name": "Starter", "key": "starter", "featureKeys": ["basic"], "assignOnSignup": true}),
    )
    .await;
    create_account(stack, env, "late", "Late").await;
    expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/tenants/resources/hierarchy/v1",
        Some(env),
        Some(json!({"parentTenantId": "parent", "childTenantId": "child"})),
    )
    .await;
    check_becomes(stack, env, "doomed", "gold", false).await;
    check_becomes(stack, env, "late", "basic", true).await;
    check_becomes(stack, env, "child", "family", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_largest_logos_from_one_user_do_not_stall_the_feed() {
    let mut stack = Stack::start().await;
    let env = stack.env_token().await;
    let env = env.as_str();
    accounts_and_grants(&stack, env).await;
    create_account(&stack, env, "branded", "Branded").await;

    // One user allowed to write their account's settings sends 12 of the largest logos allowed at once, while
    // the entitlement service is behind (here: restarting), so it replays them together: the
    // replay used to be one message of 12 events carrying the logo twice each, over the 4 MiB
    // limit, retried from the same cursor forever.
    let status = stack.entitlement.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    let user = stack.user_token("branded", "u-brand", &["fe.account-settings.write.account"]);
    let updates = (0..12).map(|i| {
        let largest = tenantry_common::limits::MAX_LOGO_BYTES;
        let logo = format!("{i:04}{}", "A".repeat(largest - 4));
        let user = user.clone();
        let stack = &stack;
        async move {
            stack
                .call(
                    Method::PUT,
                    "/tenants/resources/account-settings/v1",
                    Some(&user),
                    Some(json!({ "logo": logo })),
                )
                .await
        }
    });
    for (status, body) in join_all(updates).await {
        assert_eq!(status, StatusCode::OK, "logo update: {body}");
    }
    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;

    // The feed still carries everything after them.
    changes_propagate(&stack, env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entitlement_service_away_past_the_feed_retention_resynchronises() {
    let mut stack =
        Stack::start_configured(testing::postgres(), StackOptions::default(), |process| {
            if process.name() == "tenant-service" {
                process.set_env("TENANTRY_FEED_RETENTION_SECS", "1");
            }
        })
        .await;
    let env = stack.env_token().await;
    let env = env.as_str();
    accounts_and_grants(&stack, env).await;
    create_plan(
        &stack,
        env,
        json!({"name": "Starter", "key": "starter", "featureKeys": ["basic"], "assignOnSignup": true}),
    )
    .await;

    let status = stack.entitlement.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    // Changes while it is away, then their events outlive the retention and are pruned.
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
    expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/tenants/resources/hierarchy/v1",
        Some(env),
        Some(json!({"parentTenantId": "parent", "childTenantId": "child"})),
    )
    .await;
    let admin = sea_orm::Database::connect(stack.admin_db_url.clone())
        .await
        .expect("connect as admin");
    eventually(DEADLINE, "the outbox pruned", || async {
        use sea_orm::ConnectionTrait;
        let row = admin
            .query_one_raw(sea_orm::Statement::from_string(
                admin.get_database_backend(),
                format!("SELECT COUNT(*)::BIGINT AS n FROM {TENANT_SCHEMA}.change_events"),
            ))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no row")?;
        match row.try_get::<i64>("", "n").map_err(|e| e.to_string())? {
            0 => Ok(()),
            n => Err(format!("{n} events left")),
        }
    })
    .await;

    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;
    check_becomes(&stack, env, "doomed", "gold", false).await;
    check_becomes(&stack, env, "late", "basic", true).await;
    check_becomes(&stack, env, "child", "family", true).await;
    let logs = stack.entitlement.logs();
    assert!(
        logs.contains("resynchronised with the tenant service"),
        "no resynchronisation in the logs:\n{}",
        stack.log_tails()
    );
}
