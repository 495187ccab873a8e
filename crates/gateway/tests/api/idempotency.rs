//! `Idempotency-Key` on the account-side creates, through real HTTP against the real tenant
//! service on PostgreSQL: a retry with the key answers the first status and body and writes
//! nothing more, the key with another body is 409 IDEMPOTENCY_KEY_REUSED, no key behaves as
//! it always did, concurrent twins create once, and a user's key is its own.

use serde_json::{Value, json};

use crate::accounts::spawn_stack;
use crate::helpers::{Reply, TestApp, assert_error_shape, user_claims, user_token};

const ACCOUNTS: &str = "/tenants/resources/tenants/v1";
const ACCOUNTS_V2: &str = "/tenants/resources/tenants/v2";
const SUB_ACCOUNTS: &str = "/tenants/resources/sub-tenants/v1";
const HIERARCHY: &str = "/tenants/resources/hierarchy/v1";
const MIGRATIONS: &str = "/tenants/resources/migrations/v1/tenants";

async fn post_keyed(
    app: &TestApp,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    app.request("POST", path, &headers, Some(body.to_string().into_bytes()))
        .await
}

/// Asserts a retry answered exactly as the first request did.
#[track_caller]
fn assert_replayed(first: &Reply, again: &Reply) {
    assert_eq!(again.status, first.status, "{:?}", again.body);
    assert_eq!(again.body, first.body);
}

#[track_caller]
fn assert_reused(r: &Reply) {
    assert_error_shape(r, 409);
    assert_eq!(r.body["reason"], "IDEMPOTENCY_KEY_REUSED", "{:?}", r.body);
}

async fn account_total(app: &TestApp, env: &str) -> u64 {
    let r = app.get(ACCOUNTS_V2, Some(env)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["_metadata"]["totalItems"].as_u64().expect("total")
}

/// The case: an account create whose answer was lost. Without a key its retry is a
/// 409 (or, without an ID, a second account); with one it is the first 201.
#[tokio::test]
async fn a_retried_account_create_answers_201_with_the_first_body() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    let body = json!({"tenantId": "acme", "name": "Acme", "metadata": {"tier": "gold"}});
    let first = post_keyed(app, ACCOUNTS, &env, Some("create-acme"), &body).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = post_keyed(app, ACCOUNTS, &env, Some("create-acme"), &body).await;
    assert_replayed(&first, &again);
    assert_reused(
        &post_keyed(
            app,
            ACCOUNTS,
            &env,
            Some("create-acme"),
            &json!({"tenantId": "acme", "name": "Other"}),
        )
        .await,
    );
    // No key: today's behaviour.
    assert_error_shape(&post_keyed(app, ACCOUNTS, &env, None, &body).await, 409);

    // A generated ID: the retry names the account the first call made, and makes no other.
    let unnamed = json!({"name": "Globex"});
    let first = post_keyed(app, ACCOUNTS, &env, Some("create-globex"), &unnamed).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = post_keyed(app, ACCOUNTS, &env, Some("create-globex"), &unnamed).await;
    assert_replayed(&first, &again);
    assert_eq!(account_total(app, &env).await, 2);

    // Malformed keys are 400 naming the header.
    for key in ["", "tab\there", &"k".repeat(256)] {
        let r = post_keyed(app, ACCOUNTS, &env, Some(key), &unnamed).await;
        assert_error_shape(&r, 400);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{:?}",
            r.body
        );
    }
    assert_eq!(account_total(app, &env).await, 2);
}

#[tokio::test]
async fn concurrent_account_creates_with_one_key_create_once() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    let body = json!({"name": "Twin"});
    let replies = futures::future::join_all(
        (0..8).map(|_| post_keyed(app, ACCOUNTS, &env, Some("twin"), &body)),
    )
    .await;
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty());
    for r in &replies {
        // A twin may be told to retry; it never creates another account.
        assert!(r.status == 201 || r.status == 503, "{:?}", r.body);
    }
    for r in &created {
        assert_eq!(r.body, created[0].body);
    }
    assert_eq!(account_total(app, &env).await, 1);
}

#[tokio::test]
async fn sub_account_attach_membership_and_import_creates_replay() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    for id in ["parent", "loner", "rival"] {
        let r = post_keyed(
            app,
            ACCOUNTS,
            &env,
            None,
            &json!({"tenantId": id, "name": id}),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }

    // Sub-account, by a user of the parent.
    let user = user_token(&user_claims(
        "parent",
        "u1",
        &["fe.account-hierarchy.write.subAccount"],
    ));
    let sub = json!({"tenantId": "child", "name": "Child", "parentTenantId": "parent"});
    let first = post_keyed(app, SUB_ACCOUNTS, &user, Some("sub"), &sub).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_replayed(
        &first,
        &post_keyed(app, SUB_ACCOUNTS, &user, Some("sub"), &sub).await,
    );
    assert_reused(
        &post_keyed(
            app,
            SUB_ACCOUNTS,
            &user,
            Some("sub"),
            &json!({"tenantId": "child2", "name": "C2", "parentTenantId": "parent"}),
        )
        .await,
    );
    assert_error_shape(&post_keyed(app, SUB_ACCOUNTS, &user, None, &sub).await, 409);
    // Another tenant's user with the same key neither reads that answer nor is blocked by it.
    let rival = user_token(&user_claims(
        "rival",
        "u2",
        &["fe.account-hierarchy.write.subAccount"],
    ));
    let theirs = json!({"tenantId": "rival-child", "name": "Theirs", "parentTenantId": "rival"});
    let r = post_keyed(app, SUB_ACCOUNTS, &rival, Some("sub"), &theirs).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["tenantId"], "rival-child");
    assert_eq!(account_total(app, &env).await, 5);

    // Attach.
    let link = json!({"parentTenantId": "parent", "childTenantId": "loner"});
    let first = post_keyed(app, HIERARCHY, &env, Some("attach"), &link).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_replayed(
        &first,
        &post_keyed(app, HIERARCHY, &env, Some("attach"), &link).await,
    );
    assert_ne!(
        post_keyed(app, HIERARCHY, &env, None, &link).await.status,
        201
    );

    // Membership.
    let users = "/tenants/resources/tenants/v1/parent/users";
    let member = json!({"userId": "u9"});
    let first = post_keyed(app, users, &env, Some("member"), &member).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_replayed(
        &first,
        &post_keyed(app, users, &env, Some("member"), &member).await,
    );
    assert_reused(&post_keyed(app, users, &env, Some("member"), &json!({"userId": "u8"})).await);
    assert_error_shape(&post_keyed(app, users, &env, None, &member).await, 409);
    let r = app.get(users, Some(&env)).await;
    assert_eq!(r.body["_metadata"]["totalItems"], 1, "{:?}", r.body);

    // Import: one job whatever the retries.
    let import = json!({"tenants": ["m1", "m2"]});
    let first = post_keyed(app, MIGRATIONS, &env, Some("import"), &import).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_replayed(
        &first,
        &post_keyed(app, MIGRATIONS, &env, Some("import"), &import).await,
    );
    assert_reused(
        &post_keyed(
            app,
            MIGRATIONS,
            &env,
            Some("import"),
            &json!({"tenants": ["m3"]}),
        )
        .await,
    );
    let unkeyed = post_keyed(app, MIGRATIONS, &env, None, &import).await;
    assert_eq!(unkeyed.status, 202, "{:?}", unkeyed.body);
    assert_ne!(unkeyed.body["migrationId"], first.body["migrationId"]);
}

/// Every create that takes the key says so in the served OpenAPI document, as a header.
#[tokio::test]
async fn openapi_declares_the_header_on_every_keyed_create() {
    let app = crate::helpers::spawn_app().await;
    let doc = app.get("/openapi.json", None).await.body;
    for (method, path) in [
        ("post", ACCOUNTS),
        ("post", SUB_ACCOUNTS),
        ("post", HIERARCHY),
        ("post", "/tenants/resources/tenants/v1/{tenantId}/users"),
        ("post", MIGRATIONS),
        ("post", "/entitlements/resources/entitlements/v2"),
        ("post", "/entitlements/resources/entitlements/v2/batch"),
        ("post", "/entitlements/resources/features/v1"),
        ("post", "/entitlements/resources/features/v2"),
        ("post", "/entitlements/resources/plans/v1"),
        ("post", "/entitlements/resources/feature-flags/v1"),
        ("post", "/entitlements/resources/routes/v1"),
    ] {
        let params = doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no parameters"));
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
            "{method} {path}: {params:?}"
        );
    }
}
