//! The platform part: health, readiness, tokens, the auth matrix, the error shape, request
//! IDs, limits, CORS, compression and the OpenAPI document.

use std::collections::BTreeSet;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{
    CLIENT_ID, TestApp, assert_error_shape, spawn_app, spawn_with, user_claims, user_token,
};

/// A self-service route: user tokens pass authentication and reach the (down) service.
const SELF_SERVICE: &str = "/tenants/resources/account-settings/v1";
/// A management route.
const MANAGEMENT: &str = "/tenants/resources/tenants/v2";

#[tokio::test]
async fn healthz_answers_and_request_ids_are_generated_or_echoed() {
    let app = spawn_app().await;
    let r = app.get("/healthz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"status": "ok"}));
    let generated = r.headers.get("x-request-id").expect("generated request id");
    assert!(!generated.is_empty());

    let r = app
        .request(
            "GET",
            "/healthz",
            &[("x-request-id", "my-request-42")],
            None,
        )
        .await;
    assert_eq!(r.headers.get("x-request-id").unwrap(), "my-request-42");
    // Errors carry it too.
    let r = app
        .request("GET", "/nowhere", &[("x-request-id", "req-err")], None)
        .await;
    assert_error_shape(&r, 404);
    assert_eq!(r.headers.get("x-request-id").unwrap(), "req-err");
}

#[tokio::test]
async fn readyz_is_false_while_the_services_are_down() {
    let app = spawn_app().await;
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["status"], "not_ready");
    assert_eq!(r.body["services"]["tenant"], "UNREACHABLE");
    assert_eq!(r.body["services"]["entitlement"], "UNREACHABLE");
}

#[tokio::test]
async fn a_service_outage_is_503_in_the_error_shape() {
    let app = spawn_app().await;
    let token = app.vendor_token().await;
    let r = app.get(MANAGEMENT, Some(&token)).await;
    assert_error_shape(&r, 503);
    assert_eq!(r.body["error"], "UNAVAILABLE");
}

#[tokio::test]
async fn vendor_tokens_are_issued_for_every_configured_pair_only() {
    let app = spawn_app().await;
    let r = app
        .post_json(
            "/auth/vendor",
            None,
            &json!({"clientId": CLIENT_ID, "secret": crate::helpers::CLIENT_SECRET}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert_eq!(r.body["expiresIn"], json!(3600));

    let r = app
        .post_json(
            "/auth/vendor",
            None,
            &json!({"clientId": "second", "secret": "second-secret-0123"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let r = app
        .post_json(
            "/auth/vendor",
            None,
            &json!({"clientId": CLIENT_ID, "secret": "wrong"}),
        )
        .await;
    assert_error_shape(&r, 401);
    assert!(!r.body.to_string().contains("vendor-secret"));
    // Pairs do not mix.
    let r = app
        .post_json(
            "/auth/vendor",
            None,
            &json!({"clientId": "second", "secret": crate::helpers::CLIENT_SECRET}),
        )
        .await;
    assert_error_shape(&r, 401);
}

#[tokio::test]
async fn dev_mode_generates_credentials_that_work() {
    let app_dir = tempfile::tempdir().unwrap();
    let data_dir = app_dir.path().to_path_buf();
    let config = tenantry_common::Config {
        data_dir: data_dir.clone(),
        ..tenantry_common::Config::default()
    };
    let creds = tenantry_gateway::environment_credentials(&config).unwrap();
    assert!(creds.generated);
    let app = spawn_with(|c| {
        c.data_dir = data_dir;
        c.client_id = None;
        c.client_secret = None;
        c.client_credentials = None;
    })
    .await;
    let r = app
        .post_json(
            "/auth/vendor",
            None,
            &json!({"clientId": creds.client_id, "secret": creds.secret.expose()}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap().to_owned();
    // The token opens management routes (the service is down: 503, not 401/403).
    assert_eq!(app.get(MANAGEMENT, Some(&token)).await.status, 503);
}

fn sign_hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn the_auth_matrix() {
    let app = spawn_app().await;
    let valid = user_claims("tenant-a", "alice", &[]);

    // A valid user token is accepted on a self-service route (then the service is down).
    let r = app.get(SELF_SERVICE, Some(&user_token(&valid))).await;
    assert_eq!(r.status, 503, "{:?}", r.body);

    // No token.
    assert_error_shape(&app.get(SELF_SERVICE, None).await, 401);
    assert_error_shape(&app.get(MANAGEMENT, None).await, 401);

    // Expired.
    let mut expired = valid.clone();
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    let r = app.get(SELF_SERVICE, Some(&user_token(&expired))).await;
    assert_error_shape(&r, 401);
    assert!(r.body["message"].as_str().unwrap().contains("expired"));

    // No exp at all.
    let mut no_exp = valid.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_error_shape(
        &app.get(SELF_SERVICE, Some(&user_token(&no_exp))).await,
        401,
    );

    // Wrong issuer, wrong audience.
    let mut wrong_iss = valid.clone();
    wrong_iss["iss"] = json!("https://evil.test/");
    assert_error_shape(
        &app.get(SELF_SERVICE, Some(&user_token(&wrong_iss))).await,
        401,
    );
    let mut wrong_aud = valid.clone();
    wrong_aud["aud"] = json!("someone-else");
    assert_error_shape(
        &app.get(SELF_SERVICE, Some(&user_token(&wrong_aud))).await,
        401,
    );

    // `alg: none`.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(valid.to_string().as_bytes())
    );
    assert_error_shape(&app.get(SELF_SERVICE, Some(&none)).await, 401);

    // Tampered payload under the original signature.
    let token = user_token(&valid);
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged_claims = valid.clone();
    forged_claims["tenantId"] = json!("tenant-b");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged_claims.to_string().as_bytes()),
        parts[2]
    );
    assert_error_shape(&app.get(SELF_SERVICE, Some(&tampered)).await, 401);

    // Signed with another secret.
    let other = sign_hs256(&valid, "another-secret-that-is-long-enough-000");
    assert_error_shape(&app.get(SELF_SERVICE, Some(&other)).await, 401);

    // Algorithm confusion: HS512 with the right secret is still refused (pinned HS256).
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &valid,
        &EncodingKey::from_secret(crate::helpers::USER_SECRET.as_bytes()),
    )
    .unwrap();
    assert_error_shape(&app.get(SELF_SERVICE, Some(&hs512)).await, 401);

    // Garbage and a wrong scheme.
    assert_error_shape(&app.get(SELF_SERVICE, Some("not-a-jwt")).await, 401);
    let r = app
        .request(
            "GET",
            SELF_SERVICE,
            &[("authorization", "Basic dXNlcjpwYXNz")],
            None,
        )
        .await;
    assert_error_shape(&r, 401);

    // A valid user token on a management route: 403, not 401.
    let r = app.get(MANAGEMENT, Some(&user_token(&valid))).await;
    assert_error_shape(&r, 403);

    // A tampered environment token.
    let env = app.vendor_token().await;
    let mut chars: Vec<char> = env.chars().collect();
    let last = chars.len() - 2;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let bad_env: String = chars.into_iter().collect();
    assert_error_shape(&app.get(MANAGEMENT, Some(&bad_env)).await, 401);

    // An environment token on a self-service route needs frontegg-tenant-id.
    let r = app.get(SELF_SERVICE, Some(&env)).await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "frontegg-tenant-id");
}

#[tokio::test]
async fn a_user_cannot_name_another_users_subject_or_grants() {
    let app = spawn_app().await;
    let alice = user_token(&user_claims("tenant-a", "alice", &[]));
    // Seed 003: another user's grants is 403 in the seed's error shape.
    let r = app.get("/v1/entitlements/bob", Some(&alice)).await;
    assert_eq!(r.status, 403);
    assert!(r.body["error"].is_string() && r.body["message"].is_string());
    assert!(r.body.get("statusCode").is_none());
    // Seed 003 without a token: 401, same shape.
    let r = app.get("/v1/entitlements/bob", None).await;
    assert_eq!(r.status, 401);
    assert!(r.body["error"].is_string());
    // Seed 004 without a token: the envelope with a code ≥ 1000.
    let r = app.get("/tenants/tenant-a/entitlements", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["success"], json!(false));
    assert!(r.body["errors"][0]["code"].as_u64().unwrap() >= 1000);
    assert_eq!(r.body["result"], Value::Null);
    // A check naming another user of the same tenant.
    let r = app
        .post_json(
            "/entitlements/api/v1/is-entitled-to",
            Some(&alice),
            &json!({"subject": {"tenantId": "tenant-a", "userId": "bob"},
                    "feature": {"featureKey": "reports"}}),
        )
        .await;
    assert_error_shape(&r, 403);
}

#[tokio::test]
async fn bad_bodies_are_4xx_in_the_error_shape() {
    let app = spawn_app().await;
    let token = app.vendor_token().await;
    let auth = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let path = "/tenants/resources/tenants/v1";

    // Malformed JSON.
    let r = app
        .request("POST", path, &headers, Some(b"{\"name\": ".to_vec()))
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["reason"], "MALFORMED_JSON");

    // Unknown field (a server-owned one).
    let r = app
        .post_json(
            path,
            Some(&token),
            &json!({"name": "x", "createdAt": "2020-01-01"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert!(r.body["message"].as_str().unwrap().contains("createdAt"));

    // Wrong type.
    let r = app
        .post_json(path, Some(&token), &json!({"name": 42}))
        .await;
    assert_error_shape(&r, 400);

    // Oversized (the test limit is 16 KiB).
    let big = json!({"name": "x".repeat(20 * 1024)});
    let r = app.post_json(path, Some(&token), &big).await;
    assert_error_shape(&r, 413);

    // No content type.
    let r = app
        .request(
            "POST",
            path,
            &[("authorization", auth.as_str())],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_error_shape(&r, 415);

    // Too many batch items, refused before any service call.
    let items: Vec<Value> = (0..1001)
        .map(|_| json!({"planId": "p", "tenantId": "t"}))
        .collect();
    let r = app
        .post_json(
            "/entitlements/resources/entitlements/v2/batch",
            Some(&token),
            &json!({"entitlements": items}),
        )
        .await;
    // 1,001 small items stay under the body limit only if small enough; either way a 4xx.
    assert!((400..500).contains(&r.status), "{:?}", r.status);
    assert_eq!(r.body["statusCode"], json!(r.status));

    // Bad query parameters.
    let r = app
        .get("/tenants/resources/tenants/v2?_limit=ten", Some(&token))
        .await;
    assert_error_shape(&r, 400);
    let r = app
        .get("/tenants/resources/tenants/v2?_sortBy=color", Some(&token))
        .await;
    assert_error_shape(&r, 400);

    // Wrong method on a known path.
    let r = app.request("PATCH", "/healthz", &[], None).await;
    assert_error_shape(&r, 405);

    // Unparsable dates in a batch name the item.
    let r = app
        .post_json(
            "/entitlements/resources/entitlements/v2/batch",
            Some(&token),
            &json!({"entitlements": [
                {"planId": "p", "tenantId": "t", "expirationDate": "2030-01-01T00:00:00"},
                {"planId": "p", "tenantId": "t", "expirationDate": "soon"}
            ]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        r.body["fieldViolations"][0]["field"],
        "entitlements[1].expirationDate"
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let app = spawn_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    assert_eq!(app.get("/healthz", None).await.status, 200);
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let r = app.get("/healthz", None).await;
    assert_error_shape(&r, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
}

#[tokio::test]
async fn cors_allows_configured_origins_only_and_responses_compress() {
    let app = spawn_with(|c| c.cors_allowed_origins = vec!["https://app.example.com".into()]).await;
    let r = app
        .request(
            "GET",
            "/healthz",
            &[("origin", "https://app.example.com")],
            None,
        )
        .await;
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let r = app
        .request(
            "GET",
            "/healthz",
            &[("origin", "https://evil.example.com")],
            None,
        )
        .await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = app
        .request(
            "OPTIONS",
            "/tenants/resources/tenants/v2",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
            None,
        )
        .await;
    assert!(r.status < 300, "{}", r.status);
    assert!(r.headers.contains_key("access-control-allow-methods"));

    let r = app
        .request("GET", "/openapi.json", &[("accept-encoding", "gzip")], None)
        .await;
    assert_eq!(r.headers["content-encoding"], "gzip");
}

/// Every (method, path) the router serves; the document must list exactly these.
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/auth/vendor"),
    ("post", "/tenants/resources/tenants/v1"),
    ("delete", "/tenants/resources/tenants/v1"),
    ("get", "/tenants/resources/tenants/v1/{tenantId}"),
    ("put", "/tenants/resources/tenants/v1/{tenantId}"),
    ("delete", "/tenants/resources/tenants/v1/{tenantId}"),
    ("post", "/tenants/resources/tenants/v1/{tenantId}/metadata"),
    (
        "delete",
        "/tenants/resources/tenants/v1/{tenantId}/metadata/{key}",
    ),
    ("get", "/tenants/resources/tenants/v2"),
    ("get", "/tenants/resources/tenants/v2/{tenantId}"),
    ("put", "/tenants/resources/tenants/v2/{tenantId}"),
    ("get", "/tenants/resources/tenants/v2/alias/{alias}"),
    ("get", "/tenants/resources/tenants/v1/{tenantId}/users"),
    ("post", "/tenants/resources/tenants/v1/{tenantId}/users"),
    (
        "delete",
        "/tenants/resources/tenants/v1/{tenantId}/users/{userId}",
    ),
    ("get", "/tenants/resources/users/v1/{userId}/tenants"),
    ("get", "/tenants/resources/account-settings/v1"),
    ("put", "/tenants/resources/account-settings/v1"),
    ("get", "/tenants/resources/account-settings/v1/public"),
    ("post", "/tenants/resources/migrations/v1/tenants"),
    (
        "get",
        "/tenants/resources/migrations/v1/tenants/status/{migrationId}",
    ),
    ("post", "/tenants/resources/sub-tenants/v1"),
    ("delete", "/tenants/resources/sub-tenants/v1/{tenantId}"),
    (
        "put",
        "/tenants/resources/sub-tenants/v1/{tenantId}/management",
    ),
    (
        "get",
        "/tenants/resources/sub-tenants/v1/{tenantId}/hierarchy-settings",
    ),
    (
        "put",
        "/tenants/resources/sub-tenants/v1/{tenantId}/hierarchy-settings",
    ),
    ("get", "/tenants/resources/hierarchy/v1"),
    ("post", "/tenants/resources/hierarchy/v1"),
    ("delete", "/tenants/resources/hierarchy/v1"),
    ("get", "/tenants/resources/hierarchy/v1/parents"),
    ("get", "/tenants/resources/hierarchy/v1/tree"),
    ("get", "/entitlements/resources/features/v1"),
    ("post", "/entitlements/resources/features/v1"),
    ("get", "/entitlements/resources/features/v1/{featureId}"),
    ("patch", "/entitlements/resources/features/v1/{featureId}"),
    ("delete", "/entitlements/resources/features/v1/{featureId}"),
    ("post", "/entitlements/resources/features/v2"),
    ("patch", "/entitlements/resources/features/v2/{featureId}"),
    ("get", "/entitlements/resources/plans/v1"),
    ("post", "/entitlements/resources/plans/v1"),
    ("get", "/entitlements/resources/plans/v1/{planId}"),
    ("patch", "/entitlements/resources/plans/v1/{planId}"),
    ("delete", "/entitlements/resources/plans/v1/{planId}"),
    ("get", "/entitlements/resources/plans/v1/{planId}/features"),
    (
        "patch",
        "/entitlements/resources/plans/v1/{planId}/features/link",
    ),
    (
        "patch",
        "/entitlements/resources/plans/v1/{planId}/features/unlink",
    ),
    ("get", "/entitlements/resources/plans/v1/tenant/{tenantId}"),
    ("get", "/entitlements/resources/feature-flags/v1"),
    ("post", "/entitlements/resources/feature-flags/v1"),
    ("get", "/entitlements/resources/feature-flags/v1/{flagId}"),
    ("patch", "/entitlements/resources/feature-flags/v1/{flagId}"),
    (
        "delete",
        "/entitlements/resources/feature-flags/v1/{flagId}",
    ),
    ("get", "/entitlements/resources/routes/v1"),
    ("post", "/entitlements/resources/routes/v1"),
    ("get", "/entitlements/resources/routes/v1/{routeId}"),
    ("patch", "/entitlements/resources/routes/v1/{routeId}"),
    ("delete", "/entitlements/resources/routes/v1/{routeId}"),
    ("get", "/entitlements/resources/entitlements/v2"),
    ("post", "/entitlements/resources/entitlements/v2"),
    ("post", "/entitlements/resources/entitlements/v2/batch"),
    ("patch", "/entitlements/resources/entitlements/v2/batch"),
    ("delete", "/entitlements/resources/entitlements/v2/batch"),
    ("get", "/entitlements/resources/entitlements/v2/{id}"),
    ("patch", "/entitlements/resources/entitlements/v2/{id}"),
    ("delete", "/entitlements/resources/entitlements/v2/{id}"),
    (
        "post",
        "/entitlements/resources/entitlements/v2/{id}/revoke",
    ),
    ("post", "/entitlements/api/v1/is-entitled-to"),
    ("post", "/entitlements/api/v1/is-entitled-to/batch"),
    ("get", "/audit/api/v1/events"),
    ("get", "/audit/api/v1/events/export"),
    ("get", "/entitlements/api/v1/stream"),
    (
        "get",
        "/entitlements/api/v1/vendor-entitlements-snapshot-offset",
    ),
    ("get", "/entitlements/api/v1/vendor-entitlements"),
    ("post", "/entitlements/api/v1/usage"),
    ("post", "/entitlements/api/v1/usage/cloudevents"),
    ("post", "/entitlements/api/v1/usage/consume"),
    ("post", "/entitlements/api/v1/reservations"),
    ("get", "/entitlements/api/v1/reservations/{reservationId}"),
    (
        "post",
        "/entitlements/api/v1/reservations/{reservationId}/commit",
    ),
    (
        "post",
        "/entitlements/api/v1/reservations/{reservationId}/release",
    ),
    ("get", "/entitlements/api/v1/credit-grants"),
    ("post", "/entitlements/api/v1/credit-grants"),
    (
        "post",
        "/entitlements/api/v1/credit-grants/{creditGrantId}/void",
    ),
    (
        "get",
        "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}",
    ),
    (
        "get",
        "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/usage",
    ),
    (
        "post",
        "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/reset",
    ),
    (
        "get",
        "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/periods",
    ),
    (
        "get",
        "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/balance",
    ),
    ("post", "/entitlements/api/v1/accounts/{tenantId}/what-if"),
    ("get", "/entitlements/api/v1/webhooks"),
    ("post", "/entitlements/api/v1/webhooks"),
    ("get", "/entitlements/api/v1/webhooks/{webhookId}"),
    ("patch", "/entitlements/api/v1/webhooks/{webhookId}"),
    ("delete", "/entitlements/api/v1/webhooks/{webhookId}"),
    (
        "post",
        "/entitlements/api/v1/webhooks/{webhookId}/rotate-secret",
    ),
    (
        "get",
        "/entitlements/api/v1/webhooks/{webhookId}/deliveries",
    ),
    (
        "post",
        "/entitlements/api/v1/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver",
    ),
    (
        "post",
        "/v1/data/e10s/features/is_entitled_to_input_feature",
    ),
    (
        "post",
        "/v1/data/e10s/permissions/is_entitled_to_input_permission",
    ),
    ("post", "/v1/data/e10s/routes/is_entitled_to_input_route"),
    ("get", "/v1/entitlements/{user_id}"),
    ("get", "/tenants/{tenant_id}/entitlements"),
    ("post", "/ofrep/v1/evaluate/flags/{key}"),
    ("post", "/ofrep/v1/evaluate/flags"),
    ("get", "/ofrep/v1/configuration"),
];

#[tokio::test]
async fn openapi_is_3x_and_lists_exactly_the_served_routes() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let doc = r.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if let Some(op) = item.get(method) {
                documented.insert((method.to_owned(), path.clone()));
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path}"
                );
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    // Every $ref resolves to a component schema.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }

    // Query parameters and enums match what the handlers take and return.
    let params = |method: &str, path: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let flags = params("get", "/entitlements/resources/feature-flags/v1");
    assert!(
        flags.contains("orderBy") && flags.contains("sortType"),
        "{flags:?}"
    );
    let tenant_plans = params("get", "/entitlements/resources/plans/v1/tenant/{tenantId}");
    assert!(tenant_plans.contains("minRevision"), "{tenant_plans:?}");
    assert_eq!(
        schemas["ProvenanceLevel"]["enum"],
        json!(["user", "account", "ancestor", "targeting"]),
        "{}",
        schemas["ProvenanceLevel"]
    );

    // The router serves every documented route (never 404/405 for it).
    for (method, path) in ROUTES {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let r = app
            .request(&method.to_ascii_uppercase(), &concrete, &[], None)
            .await;
        assert!(
            r.status != 404 && r.status != 405,
            "{method} {path} answered {}",
            r.status
        );
    }

    // And the reference page is there.
    let r = app.request("GET", "/docs/", &[], None).await;
    assert_eq!(r.status, 200);
}

/// Users verified through a JWKS URL (EdDSA), served here by a tiny HTTP server.
#[tokio::test]
async fn user_tokens_verify_against_a_jwks_url() {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7_u8; 32]);
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig",
        "x": b64(signing.verifying_key().as_bytes()),
    }]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = listener.local_addr().unwrap();
    let jwks_app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, jwks_app).await });

    let app: TestApp = spawn_with(|c| {
        c.user_jwt_hs256_secret = None;
        c.user_jwt_jwks_url = Some(format!("http://{jwks_addr}/.well-known/jwks.json"));
        c.user_jwt_algorithm = "EdDSA".into();
    })
    .await;
    let pem = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    let claims = user_claims("tenant-a", "alice", &[]);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let r = app.get(SELF_SERVICE, Some(&token)).await;
    assert_eq!(
        r.status, 503,
        "accepted, then the service is down: {:?}",
        r.body
    );

    // Unknown kid, and a symmetric token against the asymmetric pin.
    header.kid = Some("k2".into());
    let unknown = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_error_shape(&app.get(SELF_SERVICE, Some(&unknown)).await, 401);
    let hs = user_token(&claims);
    assert_error_shape(&app.get(SELF_SERVICE, Some(&hs)).await, 401);
}
