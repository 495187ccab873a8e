//! Seed 002 (Frontegg account management) as its document describes it, at the REST level:
//! the hierarchy attach's refusals are 400s, an unknown account reads as an empty array, a
//! create needs no field, and an account read can be sent back as its update.

use serde_json::{Value, json};

use crate::accounts::spawn_stack;
use crate::helpers::{TestApp, assert_error_shape};

const ACCOUNTS: &str = "/tenants/resources/tenants/v1";
const ACCOUNT_V2: &str = "/tenants/resources/tenants/v2";
const HIERARCHY: &str = "/tenants/resources/hierarchy/v1";

async fn create(app: &TestApp, env: &str, id: &str) {
    let r = app
        .post_json(ACCOUNTS, Some(env), &json!({"tenantId": id, "name": id}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

async fn attach(app: &TestApp, env: &str, parent: &str, child: &str) -> crate::helpers::Reply {
    app.post_json(
        HIERARCHY,
        Some(env),
        &json!({"parentTenantId": parent, "childTenantId": child}),
    )
    .await
}

/// "400 When: a) given parameters do not pass validation b) or parent and child account are
/// equal c) or child account is already a sub-account in other organization's hierarchy" —
/// and a cycle with them.
#[tokio::test]
async fn seed_002_hierarchy_attach_refusals_are_400() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    for id in ["s2-a", "s2-b", "s2-c"] {
        create(app, &env, id).await;
    }
    assert_eq!(attach(app, &env, "s2-a", "s2-b").await.status, 201);
    assert_eq!(attach(app, &env, "s2-b", "s2-c").await.status, 201);

    for (parent, child, reason) in [
        ("s2-a", "s2-a", "SELF_PARENT"),
        ("s2-a", "s2-c", "ALREADY_HAS_PARENT"),
        // `s2-a` has no parent, but it is an ancestor of `s2-c`.
        ("s2-c", "s2-a", "CYCLE"),
    ] {
        let r = attach(app, &env, parent, child).await;
        assert_error_shape(&r, 400);
        assert_eq!(r.body["reason"], reason, "{:?}", r.body);
    }
    // Nothing moved.
    let r = app.get(&format!("{ACCOUNT_V2}/s2-c"), Some(&env)).await;
    assert_eq!(r.body["parentTenantId"], "s2-b", "{:?}", r.body);
}

#[tokio::test]
async fn seed_002_accounts_need_no_field_read_empty_when_missing_and_round_trip() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;

    // CreateTenantRequest has no required field: the ID is generated and the account is
    // named after it.
    let r = app.post_json(ACCOUNTS, Some(&env), &json!({})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["tenantId"].as_str().expect("an ID").to_owned();
    assert!(!id.is_empty());
    assert_eq!(r.body["name"], id.as_str());
    // A blank name is still refused.
    assert_error_shape(
        &app.post_json(ACCOUNTS, Some(&env), &json!({"name": "  "}))
            .await,
        400,
    );

    // "If the account (tenant) cannot be found, an empty array is returned."
    let r = app
        .get(&format!("{ACCOUNT_V2}/no-such-account"), Some(&env))
        .await;
    assert_eq!((r.status, r.body), (200, json!([])));

    // GET → PUT of the object as read: nothing changes, 200 with the account as it is.
    let r = app
        .post_json(
            ACCOUNTS,
            Some(&env),
            &json!({"tenantId": "s2-round", "name": "Round", "website": "https://round.test",
                    "metadata": {"tier": "gold"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let path = format!("{ACCOUNT_V2}/s2-round");
    let read = app.get(&path, Some(&env)).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    for version in ["v1", "v2"] {
        let put_path = format!("/tenants/resources/tenants/{version}/s2-round");
        let r = app
            .send_json("PUT", &put_path, Some(&env), &read.body)
            .await;
        assert_eq!(r.status, 200, "{version}: {:?}", r.body);
        assert_eq!(r.body, read.body, "{version}: a no-op writes nothing");
    }

    // The object as read with one field changed: that field changes, nothing else.
    let mut changed: Value = read.body.clone();
    changed["name"] = json!("Round Corp");
    let r = app.send_json("PUT", &path, Some(&env), &changed).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Round Corp");
    assert_eq!(r.body["website"], "https://round.test");
    assert_eq!(r.body["metadata"], json!({"tier": "gold"}));
    assert_eq!(app.get(&path, Some(&env)).await.body["name"], "Round Corp");

    // An account's ID cannot change through its body.
    let mut other = changed.clone();
    other["tenantId"] = json!("someone-else");
    let r = app.send_json("PUT", &path, Some(&env), &other).await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "tenantId");
}
