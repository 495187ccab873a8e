//! The gateway's edge against abusive clients, over real sockets: slow headers and bodies,
//! credential guessing on `/auth/vendor`, forged tokens.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tenantry_common::{CancellationToken, Config};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{
    CLIENT_ID, CLIENT_SECRET, TestApp, USER_SECRET, assert_error_shape, spawn_with, user_claims,
};

/// How long a test waits for an answer that must come promptly.
const BOUND: Duration = Duration::from_secs(5);

/// The real tenant service on SQLite in `dir`; returns its URL.
async fn tenant_service(dir: &std::path::Path, shutdown: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tenantry_tenant::serve(&config, listener, shutdown)
            .await
            .expect("tenant service serves");
    });
    url
}

/// Opens a connection and sends a request's headers and the first byte of its body.
async fn slow_body(app: &TestApp, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Everything the server sends until it closes the connection (bounded).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection in time")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_anonymous_bodies_do_not_starve_clients_with_a_token() {
    let data = tempfile::tempdir().unwrap();
    let services = CancellationToken::new();
    let tenant = tenant_service(data.path(), &services).await;
    // Few permits and a long request deadline: before the fix, a handful of slow bodies
    // held every permit until the deadline.
    let app = spawn_with(|c| {
        c.tenant_service_url = Some(tenant);
        c.concurrency_limit = 4;
        c.request_timeout_ms = 60_000;
        c.http_body_idle_timeout_ms = 60_000;
        c.http_body_read_timeout_ms = 60_000;
    })
    .await;
    let token = app.vendor_token().await;
    let mut slow = Vec::new();
    for _ in 0..32 {
        slow.push(slow_body(&app, "/auth/vendor").await);
    }
    for _ in 0..10 {
        let r = tokio::time::timeout(
            BOUND,
            app.get("/tenants/resources/tenants/v2", Some(&token)),
        )
        .await
        .expect("a client with a token is answered while slow bodies are pending");
        assert_eq!(r.status, 200, "{:?}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The slow clients are still connected, unanswered.
    let mut buf = [0_u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(50), slow[0].read(&mut buf))
            .await
            .is_err()
    );
    services.cancel();
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_its_connection_closed() {
    let app = spawn_with(|c| {
        c.http_body_idle_timeout_ms = 300;
        c.http_body_read_timeout_ms = 60_000;
        c.request_timeout_ms = 60_000;
    })
    .await;
    let mut stream = slow_body(&app, "/auth/vendor").await;
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("BODY_TIMEOUT"), "{response}");

    // A body that trickles (never idle) is still bounded by the total timeout.
    let app = spawn_with(|c| {
        c.http_body_idle_timeout_ms = 60_000;
        c.http_body_read_timeout_ms = 500;
        c.request_timeout_ms = 60_000;
    })
    .await;
    let mut stream = slow_body(&app, "/auth/vendor").await;
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(BOUND, trickle).await.ok();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    let app = spawn_with(|c| c.http_header_read_timeout_ms = 300).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(!response.contains("200"), "{response}");
}

#[tokio::test]
async fn repeated_wrong_secrets_lock_the_client_id_out_even_for_the_right_one() {
    let app = spawn_with(|_| {}).await;
    let attempt = |secret: &'static str| {
        let app = &app;
        async move {
            app.post_json(
                "/auth/vendor",
                None,
                &json!({"clientId": CLIENT_ID, "secret": secret}),
            )
            .await
        }
    };
    for _ in 0..6 {
        assert_error_shape(&attempt("guess-0123456789abcdef").await, 401);
    }
    // Locked: the right secret is refused too, with a typed 429 and when to retry.
    let r = attempt(CLIENT_SECRET).await;
    assert_error_shape(&r, 429);
    assert_eq!(r.body["reason"], json!("CLIENT_LOCKED_OUT"), "{:?}", r.body);
    assert!(r.body.get("token").is_none());
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    // Another client ID is not locked.
    let r = app
        .post_json(
            "/auth/vendor",
            None,
            &json!({"clientId": "second", "secret": "second-secret-0123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Once the lock ends the right secret works again (the first lock is short).
    let unlocked = async {
        loop {
            if attempt(CLIENT_SECRET).await.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(BOUND, unlocked)
        .await
        .expect("the lock ends");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A user token with any header, signed with the configured HS256 secret.
fn signed(header: &Value, claims: &Value) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(USER_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn forged_tokens_with_crit_or_an_issuer_array_are_refused() {
    // A self-service route: an accepted token reaches the (down) service, 503.
    const ROUTE: &str = "/tenants/resources/account-settings/v1";
    let app = spawn_with(|_| {}).await;
    let claims = user_claims("tenant-a", "alice", &[]);
    let header = json!({"alg": "HS256", "typ": "JWT"});
    assert_eq!(
        app.get(ROUTE, Some(&signed(&header, &claims))).await.status,
        503
    );

    for crit in [
        json!({"alg": "HS256", "typ": "JWT", "crit": ["exp-ext"], "exp-ext": 1}),
        json!({"alg": "HS256", "typ": "JWT", "crit": ["b64"], "b64": false}),
        json!({"alg": "HS256", "typ": "JWT", "crit": []}),
    ] {
        let r = app.get(ROUTE, Some(&signed(&crit, &claims))).await;
        assert_error_shape(&r, 401);
    }

    let mut iss_array = claims.clone();
    iss_array["iss"] = json!([crate::helpers::ISSUER, "https://evil.test/"]);
    let r = app.get(ROUTE, Some(&signed(&header, &iss_array))).await;
    assert_error_shape(&r, 401);
    iss_array["iss"] = json!([crate::helpers::ISSUER]);
    let r = app.get(ROUTE, Some(&signed(&header, &iss_array))).await;
    assert_error_shape(&r, 401);
}

/// `{"a": {"a": … 1}}`, `levels` objects deep.
fn nested(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "a": v });
    }
    v
}

#[tokio::test]
async fn over_limit_bodies_are_400_naming_the_field_before_any_service_call() {
    // The services are down: whatever passes the gateway's checks is 503, so a 400 shows the
    // gateway refused it itself.
    let app = spawn_with(|c| c.http_body_limit_bytes = 1024 * 1024).await;
    let token = app.vendor_token().await;
    let accounts = "/tenants/resources/tenants/v1";
    let many_keys: serde_json::Map<String, Value> =
        (0..1_001).map(|i| (format!("k{i}"), json!(i))).collect();
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            accounts.into(),
            json!({"tenantId": "t", "name": "T", "metadata": nested(11)}),
            "metadata",
        ),
        (
            "POST",
            accounts.into(),
            json!({"tenantId": "t", "name": "T", "metadata": nested(11).to_string()}),
            "metadata",
        ),
        (
            "POST",
            accounts.into(),
            json!({"tenantId": "t", "name": "T", "metadata": many_keys}),
            "metadata",
        ),
        (
            "POST",
            accounts.into(),
            json!({"tenantId": "t", "name": "T", "metadata": {"k": "x".repeat(70 * 1024)}}),
            "metadata",
        ),
        (
            "POST",
            format!("{accounts}/t/metadata"),
            json!({"metadata": nested(11)}),
            "metadata",
        ),
        (
            "POST",
            "/entitlements/resources/features/v1".into(),
            json!({"key": "k", "name": "K", "metadata": nested(11)}),
            "metadata",
        ),
        (
            "POST",
            "/entitlements/api/v1/is-entitled-to".into(),
            json!({"subject": {"tenantId": "acme", "attributes": nested(11)},
                   "feature": {"featureKey": "sso"}}),
            "subject.attributes",
        ),
        (
            "POST",
            "/entitlements/api/v1/is-entitled-to".into(),
            json!({"subject": {"tenantId": "acme", "attributes": {"k": "x".repeat(17 * 1024)}},
                   "feature": {"featureKey": "sso"}}),
            "subject.attributes",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = app.send_json(method, &path, Some(&token), &body).await;
        assert_error_shape(&r, 400);
        assert_eq!(
            r.body["fieldViolations"][0]["field"],
            json!(field),
            "{method} {path}: {:?}",
            r.body
        );
    }
    // Nesting past the body limit is refused before deserialising, wherever it is.
    let r = app
        .send_json(
            "POST",
            accounts,
            Some(&token),
            &json!({"tenantId": "t", "name": "T", "metadata": nested(40)}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["reason"], json!("BODY_TOO_DEEP"), "{:?}", r.body);
    // Within every limit: passed on (and the down service answers 503).
    let r = app
        .send_json(
            "POST",
            accounts,
            Some(&token),
            &json!({"tenantId": "t", "name": "T", "metadata": nested(10)}),
        )
        .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
}
