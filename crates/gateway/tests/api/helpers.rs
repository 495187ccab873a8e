//! `spawn_app()`: the gateway on port 0 with test credentials and keys, and a small HTTP client.

use std::{net::SocketAddr, path::PathBuf};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tenantry_common::{CancellationToken, Config, Secret};

pub const CLIENT_ID: &str = "vendor";
pub const CLIENT_SECRET: &str = "vendor-secret-0123456789";
pub const USER_SECRET: &str = "user-jwt-secret-0123456789abcdef0123";
pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "tenantry-tests";

pub struct TestApp {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A config whose services point at a closed port (readiness false, routes 503).
pub fn test_config(data_dir: PathBuf) -> Config {
    let closed = format!("http://127.0.0.1:{}", tenantry_common::testing::free_port());
    Config {
        data_dir,
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
        client_credentials: Some(Secret::new("second:second-secret-0123")),
        user_jwt_hs256_secret: Some(Secret::new(USER_SECRET)),
        user_jwt_issuer: Some(ISSUER.into()),
        user_jwt_audience: Some(AUDIENCE.into()),
        tenant_service_url: Some(closed.clone()),
        entitlement_service_url: Some(closed),
        http_body_limit_bytes: 16 * 1024,
        request_timeout_ms: 5_000,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    tenantry_common::telemetry::init_for_tests();
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(data.path().to_path_buf());
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        tenantry_gateway::serve(&config, listener, signal)
            .await
            .expect("gateway serves");
    });
    TestApp {
        addr,
        shutdown,
        _data: data,
    }
}

/// A response: status, headers and the body parsed as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let (status, headers, bytes) = self.request_raw(method, path, headers, body).await;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request whose answer's body is kept as sent (e.g. NDJSON).
    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (u16, http::HeaderMap, Vec<u8>) {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(axum::body::Bytes::from(body.unwrap_or_default())))
            .expect("request");
        let res = sender.send_request(req).await.expect("response");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (status, headers, bytes.to_vec())
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.request("GET", path, &headers, None).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_json("POST", path, token, body).await
    }

    pub async fn send_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        self.request(method, path, &headers, Some(body.to_string().into_bytes()))
            .await
    }

    /// An environment token from `POST /auth/vendor`.
    pub async fn vendor_token(&self) -> String {
        let r = self
            .post_json(
                "/auth/vendor",
                None,
                &json!({"clientId": CLIENT_ID, "secret": CLIENT_SECRET}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["token"].as_str().expect("token").to_owned()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a valid user token, to be altered by tests.
pub fn user_claims(tenant: &str, user: &str, permissions: &[&str]) -> Value {
    json!({
        "sub": user,
        "tenantId": tenant,
        "permissions": permissions,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now() + 600,
        "iat": now(),
    })
}

/// A user token signed with the configured HS256 secret.
pub fn user_token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(USER_SECRET.as_bytes()),
    )
    .expect("sign")
}

/// Asserts the gateway's one error shape.
pub fn assert_error_shape(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["statusCode"], json!(status), "{:?}", r.body);
    assert!(
        r.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{:?}",
        r.body
    );
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{:?}",
        r.body
    );
}
