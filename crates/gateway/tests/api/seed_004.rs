//! Seed 004's route (`GET /tenants/{tenant_id}/entitlements`) authenticates with the seed's
//! `X-Auth-Email` + `X-Auth-Key` pair as well as a bearer token, and answers every error in
//! its `{success, errors, messages, result}` envelope — including those the gateway's layers
//! make (401, 405, 408, 429, 504), not only its handler's.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{CLIENT_ID, CLIENT_SECRET, Reply, TestApp, assert_error_shape, spawn_with};

const ROUTE: &str = "/tenants/acme/entitlements";

fn assert_envelope(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{:?}", r.body);
    let keys: BTreeSet<&str> = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("an object: {:?}", r.body))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["success", "errors", "messages", "result"]),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["result"], Value::Null);
    assert_eq!(r.body["messages"], json!([]));
    assert_eq!(r.body["errors"][0]["code"], json!(1000 + u64::from(status)));
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{:?}",
        r.body
    );
}

async fn with_pair(app: &TestApp, email: &str, key: &str) -> Reply {
    app.request(
        "GET",
        ROUTE,
        &[("x-auth-email", email), ("x-auth-key", key)],
        None,
    )
    .await
}

#[tokio::test]
async fn seed_004_api_key_pair_is_an_environment_credential_under_the_same_lockout() {
    // No services behind this gateway: an authenticated call reaches the handler and gets 503.
    let app = spawn_with(|_| {}).await;
    // The right pair is accepted (the handler runs: 503 for the missing service, not 401).
    assert_envelope(&with_pair(&app, CLIENT_ID, CLIENT_SECRET).await, 503);
    assert_envelope(
        &with_pair(&app, CLIENT_ID, "wrong-secret-0123456789").await,
        401,
    );
    assert_envelope(&with_pair(&app, "nobody", CLIENT_SECRET).await, 401);
    let r = app
        .request("GET", ROUTE, &[("x-auth-email", CLIENT_ID)], None)
        .await;
    assert_envelope(&r, 401);
    assert_envelope(&app.get(ROUTE, None).await, 401);
    // The pair opens this route only.
    let r = app
        .request(
            "GET",
            "/tenants/resources/tenants/v2",
            &[("x-auth-email", CLIENT_ID), ("x-auth-key", CLIENT_SECRET)],
            None,
        )
        .await;
    assert_error_shape(&r, 401);

    // Wrong keys count towards the lockout of `POST /auth/vendor`, and the other way round.
    for _ in 0..6 {
        assert_envelope(
            &with_pair(&app, "second", "guess-0123456789abcdef").await,
            401,
        );
    }
    let r = with_pair(&app, "second", "second-secret-0123").await;
    assert_envelope(&r, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    let r = app
        .post_json(
            "/auth/vendor",
            None,
            &json!({"clientId": "second", "secret": "second-secret-0123"}),
        )
        .await;
    assert_error_shape(&r, 429);
    // The other client ID is not locked.
    assert_envelope(&with_pair(&app, CLIENT_ID, CLIENT_SECRET).await, 503);

    // The router's 405 too (the `allow` header kept).
    let r = app
        .request(
            "POST",
            ROUTE,
            &[("x-auth-email", CLIENT_ID), ("x-auth-key", CLIENT_SECRET)],
            None,
        )
        .await;
    assert_envelope(&r, 405);
    assert!(r.headers.contains_key("allow"), "{:?}", r.headers);
}

#[tokio::test]
async fn seed_004_errors_of_the_rate_limit_deadline_and_body_timeout_come_in_the_envelope() {
    // 429 from the rate limit, with its `retry-after`.
    let app = spawn_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    assert_envelope(&app.get(ROUTE, None).await, 401);
    assert_envelope(&app.get(ROUTE, None).await, 401);
    let r = app.get(ROUTE, None).await;
    assert_envelope(&r, 429);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);

    // 504 from the deadline: the entitlement service accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let app = spawn_with(|c| {
        c.entitlement_service_url = Some(silent_url);
        c.request_timeout_ms = 300;
    })
    .await;
    assert_envelope(&with_pair(&app, CLIENT_ID, CLIENT_SECRET).await, 504);
    held.abort();

    // 408 from the body reader: a body that stalls.
    let app = spawn_with(|c| {
        c.http_body_idle_timeout_ms = 300;
        c.http_body_read_timeout_ms = 60_000;
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "GET {ROUTE} HTTP/1.1\r\nhost: {}\r\ncontent-length: 100\r\n\r\n{{",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the server answers and closes in time")
        .ok();
    let response = String::from_utf8_lossy(&out);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{response}"));
    assert_eq!(body["success"], false, "{response}");
    assert_eq!(body["errors"][0]["code"], 1408, "{response}");
}
