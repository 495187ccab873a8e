//! Helpers the journeys share: REST calls that must succeed, polling with a deadline, times.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_tests::Stack;

/// Polls `probe` until it returns `Ok`, or panics after `within` with the last `Err` message.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not reached within {within:?}; last observation: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An RFC 3339 UTC time `offset_secs` from now.
pub fn at(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::seconds(offset_secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A call that must answer `expected`; returns the body.
pub async fn expect(
    stack: &Stack,
    expected: StatusCode,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let shown = method.clone();
    let sent = body.clone();
    let (status, answer) = stack.call(method, path, token, body).await;
    assert_eq!(
        status,
        expected,
        "{shown} {path} with {}\nanswered {answer}\n{}",
        sent.unwrap_or(Value::Null),
        stack.log_tails()
    );
    answer
}

/// Creates a root account with the management API.
pub async fn create_account(stack: &Stack, env: &str, tenant_id: &str, name: &str) -> Value {
    let body = json!({"tenantId": tenant_id, "name": name});
    let account = expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/tenants/resources/tenants/v1",
        Some(env),
        Some(body),
    )
    .await;
    assert_eq!(account["tenantId"], tenant_id, "{account}");
    account
}

/// Creates a feature (`kind` = `bool` or `max_count`) linked to `permissions`; returns its ID.
pub async fn create_feature(
    stack: &Stack,
    env: &str,
    key: &str,
    kind: &str,
    permissions: &[&str],
) -> String {
    let body = json!({"name": key, "key": key, "type": kind, "permissions": permissions});
    let feature = expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/features/v1",
        Some(env),
        Some(body),
    )
    .await;
    assert_eq!(feature["key"], key, "{feature}");
    assert_eq!(feature["type"], kind, "{feature}");
    id_of(&feature)
}

/// Creates a plan from a body (`name` and `key` given by the caller); returns its ID.
pub async fn create_plan(stack: &Stack, env: &str, body: Value) -> String {
    let key = body["key"].clone();
    let plan = expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/plans/v1",
        Some(env),
        Some(body),
    )
    .await;
    assert_eq!(plan["key"], key, "{plan}");
    id_of(&plan)
}

/// Grants in one batch; returns the IDs in request order.
pub async fn grant_batch(stack: &Stack, env: &str, entitlements: Vec<Value>) -> Vec<String> {
    let count = entitlements.len();
    let answer = expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/entitlements/v2/batch",
        Some(env),
        Some(json!({ "entitlements": entitlements })),
    )
    .await;
    let ids: Vec<String> = answer["entitlementIds"]
        .as_array()
        .unwrap_or_else(|| panic!("no entitlementIds in {answer}"))
        .iter()
        .map(|id| id.as_str().expect("string ID").to_owned())
        .collect();
    assert_eq!(ids.len(), count, "{answer}");
    ids
}

/// The grants matching a query string of the entitlement list (all pages).
pub async fn grants(stack: &Stack, env: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut offset = 0;
    loop {
        let path =
            format!("/entitlements/resources/entitlements/v2?{query}&limit=100&offset={offset}");
        let (status, page) = stack.call(Method::GET, &path, Some(env), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {page}");
        let batch = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items in {page}"))
            .clone();
        offset += batch.len();
        let more = page["hasNext"] == true && !batch.is_empty();
        items.extend(batch);
        if !more {
            return items;
        }
    }
}

/// One `POST /entitlements/api/v1/is-entitled-to` for a feature; returns the whole answer.
pub async fn check_feature(
    stack: &Stack,
    token: &str,
    tenant_id: &str,
    feature_key: &str,
    extra: Value,
) -> Value {
    let mut body = json!({
        "subject": {"tenantId": tenant_id},
        "feature": {"featureKey": feature_key},
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    expect(
        stack,
        StatusCode::OK,
        Method::POST,
        "/entitlements/api/v1/is-entitled-to",
        Some(token),
        Some(body),
    )
    .await
}

/// Asserts a check answer: `result`, and `justification` when refused (null when allowed).
pub fn assert_decision(answer: &Value, result: bool, justification: Option<&str>, what: &str) {
    assert_eq!(answer["result"], result, "{what}: {answer}");
    match justification {
        Some(j) => assert_eq!(answer["justification"], j, "{what}: {answer}"),
        None => assert!(answer["justification"].is_null(), "{what}: {answer}"),
    }
}

/// The `id` of a created resource.
pub fn id_of(resource: &Value) -> String {
    resource["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no id in {resource}"))
        .to_owned()
}
