//! A migration imports a few thousand accounts in the background: 202 at once, status polled to
//! completion, every account listed exactly once when paging; a retry is idempotent and a
//! differing account is reported, not overwritten.

use std::{collections::BTreeSet, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_tests::Stack;

use crate::support::{create_account, eventually, expect};

const BARE: usize = 2_000;
const FULL: usize = 1_000;
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_imports_thousands_of_accounts() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    let env = env.as_str();
    create_account(&stack, env, "legacy-root", "Legacy root").await;

    let bare: Vec<String> = (0..BARE).map(|i| format!("mig-{i:05}")).collect();
    let full: Vec<String> = (0..FULL).map(|i| format!("mig-full-{i:04}")).collect();
    let mut items: Vec<Value> = bare.iter().map(|id| json!(id)).collect();
    items.extend(full.iter().enumerate().map(|(i, id)| {
        json!({
            "tenantId": id,
            "name": format!("Imported {i}"),
            "parentTenantId": "legacy-root",
            "metadata": {"source": "legacy", "index": i.to_string()},
        })
    }));

    let started = submit(&stack, env, items).await;
    assert_eq!(started["totalItems"], BARE + FULL, "{started}");
    let status = finished(&stack, env, &started).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["totalItems"], BARE + FULL, "{status}");
    assert_eq!(status["processedItems"], BARE + FULL, "{status}");
    assert_eq!(status["createdItems"], BARE + FULL, "{status}");
    assert_eq!(status["skippedItems"], 0, "{status}");
    assert_eq!(status["failedItems"], 0, "{status}");

    // Every imported account appears exactly once across the pages of the list, in order.
    let mut listed = Vec::new();
    let mut total_pages = None;
    for page in 0.. {
        let path = format!(
            "/tenants/resources/tenants/v2?_filter=MIG-&_sortBy=tenantId&_order=ASC&_limit=200&_offset={}",
            page * 200
        );
        let body = expect(&stack, StatusCode::OK, Method::GET, &path, Some(env), None).await;
        assert_eq!(body["_metadata"]["totalItems"], BARE + FULL, "{path}");
        total_pages = body["_metadata"]["totalPages"].as_u64();
        let items = body["items"].as_array().expect("items").clone();
        if items.is_empty() {
            break;
        }
        listed.extend(
            items
                .iter()
                .map(|a| a["tenantId"].as_str().expect("id").to_owned()),
        );
    }
    assert_eq!(total_pages, Some(15));
    let mut expected: Vec<String> = bare.iter().chain(&full).cloned().collect();
    expected.sort();
    assert_eq!(
        listed.len(),
        expected.len(),
        "no account listed twice or skipped"
    );
    assert_eq!(listed, expected);

    // Full account objects keep their profile, parent and metadata.
    let account = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2/mig-full-0007",
        Some(env),
        None,
    )
    .await;
    assert_eq!(account["name"], "Imported 7", "{account}");
    assert_eq!(account["parentTenantId"], "legacy-root", "{account}");
    assert_eq!(
        account["metadata"],
        json!({"source": "legacy", "index": "7"}),
        "{account}"
    );
    // The sub-account listing is paged: every imported child is on one of its pages.
    let mut children = 0;
    loop {
        let (status, _, page) = stack
            .call_with(
                Method::GET,
                &format!(
                    "/tenants/resources/hierarchy/v1?directOnly=true&_limit=200&_offset={children}"
                ),
                Some(env),
                &[("frontegg-tenant-id", "legacy-root")],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().map_or(0, Vec::len);
        children += items;
        if items == 0 || children >= FULL {
            break;
        }
    }
    assert_eq!(children, FULL);

    // Submitting again is idempotent; an account that differs from the stored one is reported.
    let mut again: Vec<Value> = bare[..100].iter().map(|id| json!(id)).collect();
    again.push(json!({"tenantId": "mig-full-0001", "name": "Renamed elsewhere"}));
    let retry = submit(&stack, env, again).await;
    let status = finished(&stack, env, &retry).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["createdItems"], 0, "{status}");
    assert_eq!(status["skippedItems"], 100, "{status}");
    assert_eq!(status["failedItems"], 1, "{status}");
    let errors = status["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{status}");
    assert_eq!(errors[0]["index"], 100, "{status}");
    let account = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2/mig-full-0001",
        Some(env),
        None,
    )
    .await;
    assert_eq!(account["name"], "Imported 1", "not overwritten: {account}");
    let body = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2?_filter=mig-&_limit=1",
        Some(env),
        None,
    )
    .await;
    assert_eq!(body["_metadata"]["totalItems"], BARE + FULL, "{body}");
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), BARE + FULL);
}

async fn submit(stack: &Stack, env: &str, tenants: Vec<Value>) -> Value {
    let count = tenants.len();
    let started = expect(
        stack,
        StatusCode::ACCEPTED,
        Method::POST,
        "/tenants/resources/migrations/v1/tenants",
        Some(env),
        Some(json!({ "tenants": tenants })),
    )
    .await;
    assert!(
        started["migrationId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{started}"
    );
    assert_eq!(started["totalItems"], count, "{started}");
    started
}

/// Polls the migration's status until it is `completed` or `failed`.
async fn finished(stack: &Stack, env: &str, started: &Value) -> Value {
    let path = format!(
        "/tenants/resources/migrations/v1/tenants/status/{}",
        started["migrationId"].as_str().expect("migration ID")
    );
    eventually(DEADLINE, "migration finished", || async {
        let status = expect(stack, StatusCode::OK, Method::GET, &path, Some(env), None).await;
        match status["status"].as_str() {
            Some("completed" | "failed") => Ok(status),
            Some("pending" | "running") => Err(status.to_string()),
            _ => panic!("unknown migration status: {status}"),
        }
    })
    .await
}
