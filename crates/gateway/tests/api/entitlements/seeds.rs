//! The seeds' own examples, sent as the seeds write them, at the REST level: past expiries,
//! Frontegg-style keys and plan names, the agent's documented justifications, seed 004's
//! API-key pair and error envelope, and the fields Frontegg's objects carry.

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
    // Frontegg's own flag object, as its clients hold it rather than as Tenantry answered it:
    // Frontegg's `vendorId`, the embedded `feature`, its timestamps and `metadata` as a JSON
    // string. Taken the same way: the changed fields apply, the rest is the server's.
    let frontegg_flag = json!({
        "id": id(&flag), "vendorId": "9b2f5c1e-0d4a-4f7e-8a3b-6c1d2e3f4a5b",
        "name": "Reports flag", "on": false, "offTreatment": "false",
        "defaultTreatment": "true", "description": "", "metadata": "{\"owner\": \"ops\"}",
        "rules": flag["rules"], "featureId": id(&reports),
        "feature": {"id": id(&reports), "key": "reports", "name": "Reports"},
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"
    });
    let r = s.patch(&path, &frontegg_flag).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["on"], false);
    assert_eq!(r.body["metadata"], json!({"owner": "ops"}));
    assert_eq!(
        r.body["vendorId"], flag["vendorId"],
        "the vendor is the deployment's"
    );
    assert_eq!(
        r.body["createdAt"], flag["createdAt"],
        "timestamps are the server's"
    );
    assert_eq!(s.get(&path).await.body["metadata"], json!({"owner": "ops"}));

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

const VENDOR: &str = "3f0c2b9e-7a4d-4e1b-9c55-2d8e6f1a0b7c";

/// On Frontegg's paths, objects carry Frontegg's fields: `vendorId` (the configured one) on
/// features, plans, flags and a grant's embedded plan; a plan read lists its grants as
/// `entitlements` (newest first, at most 100, `hasMoreEntitlements` beyond); metadata sent as
/// Frontegg's JSON string is read back as the object Frontegg's schema declares.
#[tokio::test]
async fn frontegg_objects_carry_vendor_id_entitlements_and_metadata() {
    let s = spawn_stack_configured(|_| {}, |c| c.vendor_id = Some(VENDOR.into())).await;
    s.account("acme", None).await;
    let r = s
        .post(
            FEATURES_V2,
            &json!({"name": "SSO", "key": "sso", "permissions": [{"permissionKey": "sso.use"}],
                    "metadata": "{\"tier\": \"gold\"}"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let feature = r.body;
    assert_eq!(feature["vendorId"], VENDOR);
    assert_eq!(feature["metadata"], json!({"tier": "gold"}));
    let read = s.get(&format!("{FEATURES}/{}", id(&feature))).await;
    assert_eq!(read.body["vendorId"], VENDOR);
    let list = s.get(FEATURES).await;
    assert_eq!(field_of(items(&list), "vendorId"), [VENDOR]);

    let r = s
        .post(
            FLAGS,
            &json!({"name": "SSO flag", "on": true, "offTreatment": "false",
                    "defaultTreatment": "true", "featureId": id(&feature),
                    "metadata": "{\"owner\": \"web\"}"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["vendorId"], VENDOR);
    assert_eq!(r.body["metadata"], json!({"owner": "web"}));
    let list = s.get(FLAGS).await;
    assert_eq!(field_of(items(&list), "vendorId"), [VENDOR]);

    // A new plan has no entitlements yet.
    let plan = s
        .plan(json!({"name": "Gold", "featureKeys": ["sso"], "metadata": "{\"seats\": 5}"}))
        .await;
    assert_eq!(plan["vendorId"], VENDOR);
    assert_eq!(plan["metadata"], json!({"seats": 5}));
    assert_eq!(plan["entitlements"], json!([]));
    let plan_path = format!("{PLANS}/{}", id(&plan));

    // Its read lists its grants, newest first, every status.
    let (first, _) = s
        .grant(json!([{"planId": id(&plan), "tenantId": "acme"}]))
        .await;
    let (second, _) = s
        .grant(
            json!([{"planId": id(&plan), "tenantId": "acme", "userId": "u1",
                       "expirationDate": "2022-01-01T12:00:00"}]),
        )
        .await;
    let read = s.get(&plan_path).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["vendorId"], VENDOR);
    let listed = read.body["entitlements"].as_array().expect("entitlements");
    assert_eq!(
        listed.iter().map(id).collect::<Vec<_>>(),
        [second[0].clone(), first[0].clone()]
    );
    assert_eq!(listed[0]["planId"], id(&plan).as_str());
    assert_eq!(listed[0]["userId"], "u1");
    assert_eq!(listed[0]["status"], "expired");
    assert_eq!(listed[1]["tenantId"], "acme");
    assert_eq!(read.body["hasMoreEntitlements"], false);
    // A list answers plans without their grants.
    let list = s.get(PLANS).await;
    assert_eq!(field_of(items(&list), "vendorId"), [VENDOR]);
    assert!(items(&list)[0].get("entitlements").is_none());
    // A grant read with its plan: the plan carries the vendor too.
    let r = s.get(&format!("{GRANTS}?withRelations=true")).await;
    assert_eq!(items(&r)[0]["plan"]["vendorId"], VENDOR);

    // Past 100 grants the read lists the newest 100 and says there are more.
    let users: Vec<Value> = (0..100)
        .map(|i| json!({"planId": id(&plan), "tenantId": "acme", "userId": format!("user-{i}")}))
        .collect();
    s.grant(Value::Array(users)).await;
    let read = s.get(&plan_path).await;
    assert_eq!(
        read.body["entitlements"].as_array().map(Vec::len),
        Some(100)
    );
    assert_eq!(read.body["hasMoreEntitlements"], true);
    assert!(
        !read.body["entitlements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| id(e) == first[0]),
        "the oldest grant is the one left out"
    );
}

/// Without a configured vendor, the one derived from the environment credential is a UUID,
/// the same on every object.
#[tokio::test]
async fn the_derived_vendor_id_is_a_uuid_shared_by_every_object() {
    let s = spawn_stack().await;
    let feature = s
        .feature(json!({"name": "Reports", "key": "reports"}))
        .await;
    let plan = s
        .plan(json!({"name": "Basic", "featureKeys": ["reports"]}))
        .await;
    let vendor = feature["vendorId"].as_str().expect("vendorId").to_owned();
    assert!(uuid::Uuid::parse_str(&vendor).is_ok(), "{vendor}");
    assert_eq!(plan["vendorId"], vendor.as_str());
    assert_eq!(
        s.get(&format!("{PLANS}/{}", id(&plan))).await.body["vendorId"],
        vendor.as_str()
    );
}
