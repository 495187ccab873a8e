//! The seeds' own examples, sent as the seeds write them, at the REST level: past expiries,
//! Frontegg-style keys and plan names, the agent's documented justifications, and seed 004's
//! API-key pair and error envelope.

use super::*;

/// Seed 000's curl example grants with `"expirationDate": "2022-01-01T12:00:00"`, and its
/// batch PATCH sets one to end a grant now: both are accepted, and the grant is expired —
/// checks say so and seed 003 lists it as `expired`.
#[tokio::test]
async fn seed_000_past_expiry_creates_or_ends_an_expired_grant() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    s.feature(json!({"name": "Reports", "key": "reports"}))
        .await;
    let pro = s
        .plan(json!({"name": "Pro", "key": "pro", "featureKeys": ["reports"]}))
        .await;

    // The seed's POST, verbatim but for the IDs.
    let (ids, rev) = s
        .grant(
            json!([{"planId": id(&pro), "tenantId": "acme", "userId": "alice",
                       "expirationDate": "2022-01-01T12:00:00"}]),
        )
        .await;
    let grant = s.get(&format!("{GRANTS}/{}", ids[0])).await;
    assert_eq!(grant.status, 200, "{:?}", grant.body);
    assert_eq!(grant.body["status"], "expired", "{:?}", grant.body);
    assert_eq!(
        grant.body["expirationDate"].as_str().map(|d| &d[..19]),
        Some("2022-01-01T12:00:00"),
        "{:?}",
        grant.body
    );
    let check = |user: &'static str, rev: u64| {
        let body = json!({"subject": {"tenantId": "acme", "userId": user},
                          "feature": {"featureKey": "reports"}, "minRevision": rev});
        let s = &s;
        async move { s.post(CHECK, &body).await }
    };
    let r = check("alice", rev).await;
    assert_eq!(r.body["result"], false, "{:?}", r.body);
    assert_eq!(r.body["justification"], "PLAN_EXPIRED", "{:?}", r.body);
    let r = s.get("/v1/entitlements/alice").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["grants"][0]["id"], ids[0].as_str());
    assert_eq!(r.body["grants"][0]["status"], "expired", "{:?}", r.body);

    // The seed's PATCH ends a running grant now.
    let (ids, rev) = s
        .grant(json!([{"planId": id(&pro), "tenantId": "acme", "userId": "bob"}]))
        .await;
    assert_eq!(check("bob", rev).await.body["result"], true);
    let r = s
        .patch(
            BATCH,
            &json!({"entitlements": [{"expirationDate": "2022-01-01T12:00:00", "id": ids[0]}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = check("bob", revision(&r)).await;
    assert_eq!(r.body["result"], false, "{:?}", r.body);
    assert_eq!(r.body["justification"], "PLAN_EXPIRED", "{:?}", r.body);
    let r = s.get("/v1/entitlements/bob").await;
    assert_eq!(r.body["grants"][0]["status"], "expired", "{:?}", r.body);

    // A start and an expiry given together the wrong way round are still refused.
    let r = s
        .post(
            BATCH,
            &json!({"entitlements": [{"planId": id(&pro), "tenantId": "acme",
                     "startsAt": "2022-02-01T00:00:00Z", "expirationDate": "2022-01-01T12:00:00"}]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(item_errors(&r), vec![(0, "expirationDate".to_owned())]);
}

/// The agent paths answer only the justifications Frontegg documents; Tenantry's finer reason
/// rides beside them in `reason`.
#[tokio::test]
async fn agent_answers_documented_justifications_with_the_finer_reason_beside() {
    let s = spawn_stack().await;
    for tenant in ["revoked-co", "expired-co", "later-co"] {
        s.account(tenant, None).await;
    }
    s.feature(json!({"name": "Reports", "key": "reports", "permissions": ["reports.read"]}))
        .await;
    let pro = s
        .plan(json!({"name": "Pro", "key": "pro", "featureKeys": ["reports"]}))
        .await;
    let (ids, _) = s
        .grant(json!([
            {"planId": id(&pro), "tenantId": "revoked-co"},
            {"planId": id(&pro), "tenantId": "expired-co", "expirationDate": "2022-01-01T12:00:00"},
            {"planId": id(&pro), "tenantId": "later-co", "startsAt": "2999-01-01T00:00:00Z"}
        ]))
        .await;
    let r = s
        .post(&format!("{GRANTS}/{}/revoke", ids[0]), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rev = revision(&r);
    s.eventually("the revocation reached the index", || async {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "revoked-co"},
                        "feature": {"featureKey": "reports"}, "minRevision": rev}),
            )
            .await;
        r.body["justification"] == "PLAN_REVOKED"
    })
    .await;

    let agent = |path: &'static str, tenant: &'static str, context: Value| {
        let body = json!({"input": {"subjectContext": {"tenantId": tenant},
                                    "requestContext": context}});
        let s = &s;
        async move {
            let r = s.post(path, &body).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body["result"].clone()
        }
    };
    let feature = json!({"featureKey": "reports"});
    let permission = json!({"permissionKey": "reports.read"});
    let cases = [
        (
            AGENT_FEATURE,
            "revoked-co",
            &feature,
            "MISSING_FEATURE",
            Some("PLAN_REVOKED"),
        ),
        (AGENT_FEATURE, "expired-co", &feature, "PLAN_EXPIRED", None),
        (
            AGENT_FEATURE,
            "later-co",
            &feature,
            "MISSING_FEATURE",
            Some("NOT_STARTED"),
        ),
        (
            AGENT_FEATURE,
            "no-such-co",
            &feature,
            "MISSING_FEATURE",
            Some("TENANT_NOT_FOUND"),
        ),
        (
            AGENT_PERMISSION,
            "later-co",
            &permission,
            "MISSING_PERMISSION",
            None,
        ),
        (
            AGENT_PERMISSION,
            "no-such-co",
            &permission,
            "MISSING_PERMISSION",
            Some("TENANT_NOT_FOUND"),
        ),
    ];
    for (path, tenant, context, justification, reason) in cases {
        let result = agent(path, tenant, context.clone()).await;
        let mut expected = json!({"result": false, "monitoring": false,
                                  "justification": justification});
        if let Some(reason) = reason {
            expected["reason"] = json!(reason);
        }
        assert_eq!(result, expected, "{path} {tenant}");
    }
}

/// Frontegg's keys are valid here: case-sensitive, any printable characters but `/` and
/// whitespace, up to 128 (stored too: PostgreSQL's key columns were 64 wide); two plans may
/// share a name.
#[tokio::test]
async fn frontegg_style_keys_and_same_named_plans_are_valid() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    let long = format!("{}:é#", "k".repeat(125));
    for key in ["SSO", "sso", "premiumReports", long.as_str()] {
        let r = s
            .post(
                FEATURES,
                &json!({"name": format!("Feature {key}"), "key": key}),
            )
            .await;
        assert_eq!(r.status, 201, "{key}: {:?}", r.body);
        assert_eq!(r.body["key"], key);
    }
    for bad in ["a/b", "a b", "tab\tkey", &"k".repeat(129)] {
        let r = s.post(FEATURES, &json!({"name": "Bad", "key": bad})).await;
        assert_error_shape(&r, 400);
        assert_eq!(r.body["fieldViolations"][0]["field"], "key", "{bad}");
    }

    // Two plans named alike, without keys, as Frontegg creates them.
    let first = s
        .plan(json!({"name": "Gold Plan", "featureKeys": ["SSO", "premiumReports"]}))
        .await;
    let second = s.plan(json!({"name": "Gold Plan"})).await;
    assert_ne!(first["id"], second["id"]);
    assert_ne!(first["key"], second["key"]);
    assert_eq!(second["name"], "Gold Plan");
    let keyed = s
        .plan(json!({"name": "Gold Plan", "key": "Gold.Plan", "featureKeys": [long]}))
        .await;
    assert_eq!(keyed["key"], "Gold.Plan");

    // Case matters in checks.
    let (_, rev) = s
        .grant(json!([{"planId": id(&first), "tenantId": "acme"},
                      {"planId": id(&keyed), "tenantId": "acme"}]))
        .await;
    for (key, entitled) in [
        ("SSO", true),
        ("premiumReports", true),
        (long.as_str(), true),
        ("sso", false),
        ("premiumreports", false),
    ] {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": key},
                        "minRevision": rev}),
            )
            .await;
        assert_eq!(r.status, 200, "{key}: {:?}", r.body);
        assert_eq!(r.body["result"], entitled, "{key}: {:?}", r.body);
    }
    let r = s.get(&format!("{FEATURES}?featureKeys=SSO")).await;
    assert_eq!(field_of(items(&r), "key"), ["SSO"]);
}

/// Frontegg's clients send a flag back whole on PATCH (`featureId` included): accepted, as
/// long as it names the flag's own feature.
#[tokio::test]
async fn a_feature_flag_patch_may_send_the_whole_flag_back() {
    let s = spawn_stack().await;
    let reports = s
        .feature(json!({"name": "Reports", "key": "reports"}))
        .await;
    let other = s.feature(json!({"name": "Other", "key": "other"})).await;
    let r = s
        .post(
            FLAGS,
            &json!({"name": "Reports flag", "on": false, "offTreatment": "false",
                    "defaultTreatment": "true", "featureId": id(&reports),
                    "metadata": {"owner": "web"},
                    "rules": [{"description": "staff", "conditionLogic": "and",
                               "treatment": "true",
                               "conditions": [{"attribute": "email", "attributeType": "custom",
                                               "negate": false, "op": "ends_with",
                                               "value": {"list": ["@acme.test"]}}]}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mut flag = r.body;
    let path = format!("{FLAGS}/{}", id(&flag));
    flag["on"] = json!(true);
    let r = s.patch(&path, &flag).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["on"], true);
    assert_eq!(r.body["featureId"], id(&reports).as_str());
    assert_eq!(r.body["rules"], flag["rules"]);
    assert_eq!(s.get(&path).await.body["on"], true);

    let mut moved = flag.clone();
    moved["featureId"] = json!(id(&other));
    let r = s.patch(&path, &moved).await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "featureId");
    let mut renamed = flag.clone();
    renamed["id"] = json!(uuid::Uuid::new_v4().to_string());
    let r = s.patch(&path, &renamed).await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "id");
}
