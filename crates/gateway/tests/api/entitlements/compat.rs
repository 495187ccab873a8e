//! The compatibility surfaces: seed-003 user grants and seed-004 tenant entitlements in their exact
//! shapes.

use super::*;

const SEED_003_REQUIRED: &[&str] = &[
    "id",
    "external_id",
    "user_id",
    "product_key",
    "status",
    "granted_at",
    "expires_at",
    "revoked_at",
    "source",
    "brand_id",
    "granted_by",
    "created_at",
    "updated_at",
];

/// Checks one grant against the seed-003 schema: exactly its properties (the required ones
/// and the optional `metadata`), each with the schema's type.
fn assert_seed_003_grant(g: &Value) {
    let mut allowed = set(SEED_003_REQUIRED);
    allowed.insert("metadata");
    let present = keys(g);
    assert!(set(SEED_003_REQUIRED).is_subset(&present), "{g}");
    assert!(present.is_subset(&allowed), "{g}");
    for k in SEED_003_REQUIRED {
        match *k {
            "expires_at" | "revoked_at" => {
                assert!(g[k].is_string() || g[k].is_null(), "{k}: {g}");
            }
            _ => assert!(g[k].is_string(), "{k}: {g}"),
        }
    }
    assert!(
        ["active", "revoked", "expired"].contains(&g["status"].as_str().unwrap()),
        "{g}"
    );
    for k in ["granted_at", "created_at", "updated_at"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(g[k].as_str().unwrap()).is_ok(),
            "{k}: {g}"
        );
    }
}

#[tokio::test]
async fn seed_003_user_grants_in_the_exact_schema() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    s.account("globex", None).await;
    let pro = s.plan(json!({"name": "Pro", "key": "pro"})).await;
    let addon = s.plan(json!({"name": "Add-on", "key": "addon"})).await;
    let soon = (s.clock.now_for_tests() + chrono::Duration::hours(1)).to_rfc3339();
    let (ids, _) = s
        .grant(json!([
            {"planId": id(&pro), "tenantId": "acme", "userId": "alice",
             "externalId": "order-1", "metadata": {"channel": "web"}},
            {"planId": id(&addon), "tenantId": "acme", "userId": "alice"},
            {"planId": id(&addon), "tenantId": "acme", "userId": "alice", "expirationDate": soon},
            {"planId": id(&pro), "tenantId": "globex", "userId": "alice"},
            {"planId": id(&pro), "tenantId": "acme"},
            {"planId": id(&pro), "tenantId": "acme", "userId": "bob"},
            {"planId": id(&pro), "tenantId": "acme", "userId": "alice",
             "startsAt": "2999-01-01T00:00:00Z"}
        ]))
        .await;
    let r = s
        .post(&format!("{GRANTS}/{}/revoke", ids[1]), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.clock.advance(chrono::Duration::hours(2));

    // An environment token reads the user's grants in every account.
    let r = s.get("/v1/entitlements/alice").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(keys(&r.body), set(&["grants"]));
    let grants = r.body["grants"].as_array().unwrap();
    for g in grants {
        assert_seed_003_grant(g);
        assert_eq!(g["user_id"], "alice");
    }
    let by_id = |id: &str| {
        grants
            .iter()
            .find(|g| g["id"] == id)
            .unwrap_or_else(|| panic!("grant {id} listed: {grants:?}"))
    };
    // Account-wide grants, other users' and scheduled ones are not listed.
    assert_eq!(grants.len(), 4, "{grants:?}");
    let active = by_id(&ids[0]);
    assert_eq!(active["status"], "active");
    assert_eq!(active["external_id"], "order-1");
    assert_eq!(active["product_key"], "pro");
    assert_eq!(active["brand_id"], "acme");
    assert_eq!(active["source"], "batch");
    assert_eq!(active["granted_by"], "environment:vendor");
    assert_eq!(active["metadata"], json!({"channel": "web"}));
    assert_eq!(active["expires_at"], Value::Null);
    assert_eq!(active["revoked_at"], Value::Null);
    let revoked = by_id(&ids[1]);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        revoked["external_id"], "",
        "the seed requires the key: empty when none"
    );
    let expired = by_id(&ids[2]);
    assert_eq!(expired["status"], "expired");
    assert!(expired["expires_at"].is_string());
    assert_eq!(by_id(&ids[3])["brand_id"], "globex");
    let statuses: BTreeSet<&str> = grants
        .iter()
        .map(|g| g["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, set(&["active", "revoked", "expired"]));

    // A user token reads its own grants, within its account.
    let alice = user_token(&user_claims("acme", "alice", &[]));
    let r = s.app.get("/v1/entitlements/alice", Some(&alice)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let own = r.body["grants"].as_array().unwrap();
    assert_eq!(own.len(), 3);
    assert!(own.iter().all(|g| g["brand_id"] == "acme"));
    // An unknown user has no grants.
    let r = s.get("/v1/entitlements/nobody").await;
    assert_eq!(r.body, json!({"grants": []}));

    // Errors in the seed's `{"error", "message"}`: a 400 for an invalid user ID, and the
    // refusals in the same shape.
    let seed_error = |r: &Reply, status: u16| {
        assert_eq!(r.status, status, "{:?}", r.body);
        assert_eq!(keys(&r.body), set(&["error", "message"]), "{:?}", r.body);
        assert!(r.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(r.body["message"].as_str().is_some_and(|e| !e.is_empty()));
    };
    let long = "u".repeat(300);
    let r = s.get(&format!("/v1/entitlements/{long}")).await;
    seed_error(&r, 400);
    assert_eq!(r.body["error"], "validation_error");
    seed_error(
        &s.app
            .get(&format!("/v1/entitlements/{long}"), Some(&alice))
            .await,
        403,
    );
    seed_error(&s.app.get("/v1/entitlements/bob", Some(&alice)).await, 403);
    seed_error(&s.app.get("/v1/entitlements/alice", None).await, 401);
    seed_error(
        &s.app.get("/v1/entitlements/alice", Some("junk")).await,
        401,
    );
}

#[tokio::test]
async fn seed_004_tenant_entitlements_in_the_exact_envelope() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    s.account("globex", None).await;
    s.feature(
        json!({"name": "Certificates", "key": "mhs_certificate_count",
                     "type": "max_count", "mergePolicy": "sum"}),
    )
    .await;
    s.feature(json!({"name": "Subdomains", "key": "allow_add_subdomain"}))
        .await;
    s.feature(json!({"name": "Seats", "key": "seats", "type": "max_count"}))
        .await;
    s.feature(json!({"name": "Unlimited", "key": "unlimited", "type": "max_count"}))
        .await;
    // A feature named like a fixed `bool` key but counted: listed as custom only.
    s.feature(json!({"name": "Partial", "key": "partial_setup_allowed", "type": "max_count"}))
        .await;
    let certs = s
        .plan(json!({"name": "Certs", "key": "certs", "features": [
            {"featureKey": "mhs_certificate_count", "allocation": {"type": "max_count", "value": 3}},
            {"featureKey": "allow_add_subdomain"},
            {"featureKey": "seats", "allocation": {"type": "max_count", "value": 10}},
            {"featureKey": "unlimited", "allocation": {"type": "max_count", "value": null}},
            {"featureKey": "partial_setup_allowed",
             "allocation": {"type": "max_count", "value": 2}}]}))
        .await;
    // Two grants: SUM merges the certificate counts.
    let (_, rev) = s
        .grant(json!([{"planId": id(&certs), "tenantId": "acme"},
                      {"planId": id(&certs), "tenantId": "acme"}]))
        .await;
    s.eventually("the grants reached the index", || async {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "seats"},
                        "minRevision": rev}),
            )
            .await;
        r.body["result"] == true
    })
    .await;

    let r = s.get("/tenants/acme/entitlements").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        keys(&r.body),
        set(&["success", "errors", "messages", "result"])
    );
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["errors"], json!([]));
    assert_eq!(r.body["messages"], json!([]));
    let result = &r.body["result"];
    assert_eq!(
        keys(result),
        set(&[
            "allow_add_subdomain",
            "allow_auto_accept_invites",
            "cname_setup_allowed",
            "custom_entitlements",
            "mhs_certificate_count",
            "partial_setup_allowed"
        ])
    );
    assert_eq!(
        result["mhs_certificate_count"],
        json!({"type": "max_count", "value": 6})
    );
    assert_eq!(
        result["allow_add_subdomain"],
        json!({"type": "bool", "value": true})
    );
    assert_eq!(
        result["cname_setup_allowed"],
        json!({"type": "bool", "value": false})
    );
    assert_eq!(
        result["allow_auto_accept_invites"],
        json!({"type": "bool", "value": false})
    );
    assert_eq!(
        result["partial_setup_allowed"],
        json!({"type": "bool", "value": false})
    );
    let custom = result["custom_entitlements"].as_array().unwrap();
    for e in custom {
        assert_eq!(keys(e), set(&["allocation", "feature"]), "{e}");
        assert_eq!(keys(&e["feature"]), set(&["key"]), "{e}");
        assert_eq!(keys(&e["allocation"]), set(&["type", "value"]), "{e}");
        match e["allocation"]["type"].as_str().unwrap() {
            "bool" => assert!(e["allocation"]["value"].is_boolean(), "{e}"),
            "max_count" => assert!(e["allocation"]["value"].is_number(), "{e}"),
            other => panic!("allocation type {other}: {e}"),
        }
    }
    let by_key = |k: &str| {
        custom
            .iter()
            .find(|e| e["feature"]["key"] == k)
            .unwrap_or_else(|| panic!("{k} listed: {custom:?}"))["allocation"]
            .clone()
    };
    assert_eq!(by_key("seats"), json!({"type": "max_count", "value": 10}));
    assert_eq!(
        by_key("mhs_certificate_count"),
        json!({"type": "max_count", "value": 6})
    );
    assert_eq!(
        by_key("allow_add_subdomain"),
        json!({"type": "bool", "value": true})
    );
    // Unlimited is still a number here (`Number.MAX_SAFE_INTEGER`), never null.
    assert_eq!(
        by_key("unlimited"),
        json!({"type": "max_count", "value": 9_007_199_254_740_991_u64})
    );
    assert_eq!(
        by_key("partial_setup_allowed"),
        json!({"type": "max_count", "value": 2})
    );
    assert_eq!(custom.len(), 5);

    // No grants: the fixed keys are off/zero, the custom list empty.
    let r = s.get("/tenants/globex/entitlements").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["result"]["custom_entitlements"], json!([]));
    assert_eq!(
        r.body["result"]["mhs_certificate_count"],
        json!({"type": "max_count", "value": 0})
    );

    // A user token reads its own account.
    let alice = user_token(&user_claims("acme", "alice", &[]));
    let r = s.app.get("/tenants/acme/entitlements", Some(&alice)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["result"]["custom_entitlements"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // Errors in the same envelope, with codes ≥ 1000.
    let envelope_error = |r: &Reply, status: u16| {
        assert_eq!(r.status, status, "{:?}", r.body);
        assert_eq!(
            keys(&r.body),
            set(&["success", "errors", "messages", "result"])
        );
        assert_eq!(r.body["success"], false);
        assert_eq!(r.body["result"], Value::Null);
        assert_eq!(r.body["messages"], json!([]));
        let errors = r.body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{:?}", r.body);
        assert_eq!(keys(&errors[0]), set(&["code", "message"]));
        assert!(errors[0]["code"].as_u64().unwrap() >= 1000);
        assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    envelope_error(&s.get("/tenants/nobody/entitlements").await, 404);
    envelope_error(&s.app.get("/tenants/acme/entitlements", None).await, 401);
    envelope_error(
        &s.app
            .get("/tenants/globex/entitlements", Some(&alice))
            .await,
        403,
    );
}
