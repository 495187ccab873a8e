//! Catalog: features (v1 and v2), plans with allocations and links, feature flags with rules,
//! routes.

use super::*;

#[tokio::test]
async fn features_v1_v2_create_list_patch_and_delete_with_force() {
    let s = spawn_stack().await;

    // v1: permissions as keys, plus our `type`.
    let r = s
        .post(
            FEATURES,
            &json!({"name": "Reports", "key": "reports", "description": "Monthly reports",
                    "permissions": ["reports.read"], "type": "bool"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let reports = r.body;
    assert!(!id(&reports).is_empty());
    assert_eq!(reports["key"], "reports");
    assert_eq!(reports["type"], "bool");
    assert_eq!(reports["description"], "Monthly reports");
    assert_eq!(reports["permissions"][0]["permissionKey"], "reports.read");
    assert_eq!(reports["featureFlag"], Value::Null);
    assert!(reports["createdAt"].is_string());

    // v2: permissions as objects, metadata as a JSON string, `max_count` with `mergePolicy`.
    let r = s
        .post(
            FEATURES_V2,
            &json!({"name": "Seats", "key": "seats",
                    "permissions": [{"permissionKey": "seats.manage", "permissionId": "perm-1"}],
                    "metadata": "{\"tier\": \"pro\"}", "type": "max_count", "mergePolicy": "sum"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let seats = r.body;
    assert_eq!(seats["type"], "max_count");
    assert_eq!(seats["mergePolicy"], "sum");
    assert_eq!(seats["metadata"], json!({"tier": "pro"}));
    assert_eq!(
        seats["permissions"],
        json!([{"permissionKey": "seats.manage", "permissionId": "perm-1"}])
    );
    let sso = s
        .feature(json!({"name": "Single sign-on", "key": "sso"}))
        .await;
    assert_eq!(sso["type"], "bool", "bool is the default type");

    // Refusals: duplicate key, unknown type or merge policy, unknown field, missing name,
    // metadata that is not an object.
    assert_error_shape(
        &s.post(FEATURES, &json!({"name": "Again", "key": "reports"}))
            .await,
        409,
    );
    let r = s
        .post(
            FEATURES,
            &json!({"name": "X", "key": "x1", "type": "number"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "type");
    let r = s
        .post(
            FEATURES_V2,
            &json!({"name": "X", "key": "x2", "type": "max_count", "mergePolicy": "avg"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "mergePolicy");
    assert_error_shape(
        &s.post(
            FEATURES,
            &json!({"name": "X", "key": "x3", "vendorId": "v"}),
        )
        .await,
        400,
    );
    assert_error_shape(&s.post(FEATURES, &json!({"key": "x4"})).await, 400);
    assert_error_shape(
        &s.post(
            FEATURES_V2,
            &json!({"name": "X", "key": "x5", "metadata": "[1, 2]"}),
        )
        .await,
        400,
    );
    // v2 takes permission objects, v1 keys: each refuses the other's form.
    assert_error_shape(
        &s.post(
            FEATURES_V2,
            &json!({"name": "X", "key": "x6", "permissions": ["a.b"]}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(
            FEATURES,
            &json!({"name": "X", "key": "x7", "permissions": [{"permissionKey": "a.b"}]}),
        )
        .await,
        400,
    );

    // Lists: Frontegg's filters and `{"items", "hasNext"}`.
    let r = s.get(&format!("{FEATURES}?limit=2")).await;
    assert_eq!(items(&r).len(), 2);
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{FEATURES}?limit=2&offset=2")).await;
    assert_eq!(items(&r).len(), 1);
    assert_eq!(r.body["hasNext"], false);
    let r = s.get(&format!("{FEATURES}?filter=Sea")).await;
    assert_eq!(field_of(items(&r), "key"), ["seats"]);
    let r = s
        .get(&format!(
            "{FEATURES}?featureKeys=reports,seats&orderBy=key&sortType=DESC"
        ))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["seats", "reports"]);
    let r = s
        .get(&format!("{FEATURES}?orderBy=name&sortType=ASC"))
        .await;
    assert_eq!(
        field_of(items(&r), "name"),
        ["Reports", "Seats", "Single sign-on"]
    );
    let r = s
        .get(&format!("{FEATURES}?permissionKeys=seats.manage"))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["seats"]);
    let r = s.get(&format!("{FEATURES}?featureIds={}", id(&sso))).await;
    assert_eq!(field_of(items(&r), "key"), ["sso"]);
    let r = s.get(&format!("{FEATURES}?hasFeatureFlag=true")).await;
    assert!(items(&r).is_empty());
    assert_error_shape(&s.get(&format!("{FEATURES}?orderBy=color")).await, 400);
    assert_error_shape(&s.get(&format!("{FEATURES}?sortType=UP")).await, 400);
    assert_error_shape(&s.get(&format!("{FEATURES}?limit=ten")).await, 400);

    // Reads and changes.
    let r = s.get(&format!("{FEATURES}/{}", id(&reports))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["key"], "reports");
    assert_error_shape(
        &s.get(&format!("{FEATURES}/{}", uuid::Uuid::now_v7())).await,
        404,
    );
    let r = s
        .patch(
            &format!("{FEATURES}/{}", id(&reports)),
            &json!({"name": "Reports+", "permissions": ["reports.read", "reports.export"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["name"], "Reports+");
    assert_eq!(r.body["key"], "reports", "unchanged fields are kept");
    let perms: Vec<&str> = r.body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["permissionKey"].as_str().unwrap())
        .collect();
    assert_eq!(perms, ["reports.read", "reports.export"]);
    let r = s
        .patch(
            &format!("/entitlements/resources/features/v2/{}", id(&seats)),
            &json!({"permissions": [{"permissionKey": "seats.admin"}], "mergePolicy": "max",
                    "description": "Seats per account"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["mergePolicy"], "max");
    assert_eq!(r.body["permissions"][0]["permissionKey"], "seats.admin");
    assert_eq!(r.body["description"], "Seats per account");
    assert_error_shape(
        &s.patch(
            &format!("{FEATURES}/{}", uuid::Uuid::now_v7()),
            &json!({"name": "Nobody"}),
        )
        .await,
        404,
    );
    assert_error_shape(
        &s.patch(
            &format!("{FEATURES}/{}", id(&reports)),
            &json!({"type": "percent"}),
        )
        .await,
        400,
    );
    // Another feature's key is taken.
    assert_error_shape(
        &s.patch(
            &format!("{FEATURES}/{}", id(&sso)),
            &json!({"key": "seats"}),
        )
        .await,
        409,
    );

    // Delete: a feature in a plan needs force, which unlinks it from the plan.
    let plan = s
        .plan(json!({"name": "Pro", "key": "pro", "featureKeys": ["reports", "sso"]}))
        .await;
    let r = s.delete(&format!("{FEATURES}/{}", id(&reports))).await;
    assert_error_shape(&r, 412);
    let r = s.get(&format!("{FEATURES}/{}", id(&reports))).await;
    assert_eq!(r.status, 200, "a refused delete deleted nothing");
    let r = s
        .delete(&format!("{FEATURES}/{}?force=true", id(&reports)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"unlinkedPlanIds": [id(&plan)]}));
    assert_error_shape(&s.get(&format!("{FEATURES}/{}", id(&reports))).await, 404);
    let r = s.get(&format!("{PLANS}/{}", id(&plan))).await;
    assert_eq!(
        field_of(r.body["features"].as_array().unwrap(), "key"),
        ["sso"]
    );
    // An unused feature goes without force; an unknown one is 404.
    let r = s.delete(&format!("{FEATURES}/{}", id(&seats))).await;
    assert_eq!(r.body, json!({"unlinkedPlanIds": []}), "{:?}", r.status);
    assert_error_shape(&s.delete(&format!("{FEATURES}/{}", id(&seats))).await, 404);
    assert_error_shape(
        &s.delete(&format!("{FEATURES}/{}?force=maybe", id(&sso)))
            .await,
        400,
    );
}

#[tokio::test]
async fn plans_with_keys_allocations_links_and_tenant_plans() {
    let s = spawn_stack().await;
    let reports = s
        .feature(json!({"name": "Reports", "key": "reports", "permissions": ["reports.read"]}))
        .await;
    let seats = s
        .feature(json!({"name": "Seats", "key": "seats", "type": "max_count"}))
        .await;
    let sso = s.feature(json!({"name": "SSO", "key": "sso"})).await;

    // Frontegg's `featureKeys` beside our `features` with allocations, `key`, inheritance.
    let r = s
        .post(
            PLANS,
            &json!({"name": "Pro", "key": "pro", "description": "For teams",
                    "featureKeys": ["reports"],
                    "features": [{"featureKey": "seats",
                                  "allocation": {"type": "max_count", "value": 5}}],
                    "inheritToSubAccounts": true, "defaultTimeLimitation": 30,
                    "metadata": "{\"tier\": 2}", "defaultTreatment": "true"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let pro = r.body;
    assert!(!id(&pro).is_empty());
    assert_eq!(pro["key"], "pro");
    assert_eq!(pro["inheritToSubAccounts"], true);
    assert_eq!(pro["defaultTimeLimitation"], 30);
    assert_eq!(pro["metadata"], json!({"tier": 2}));
    assert_eq!(pro["defaultTreatment"], "true");
    let features = pro["features"].as_array().unwrap();
    let by_key = |k: &str| features.iter().find(|f| f["key"] == k).unwrap().clone();
    assert_eq!(by_key("reports")["id"], reports["id"]);
    assert_eq!(by_key("reports")["permissions"], json!(["reports.read"]));
    assert_eq!(
        by_key("reports")["allocation"],
        json!({"type": "bool", "value": true})
    );
    assert_eq!(
        by_key("seats")["allocation"],
        json!({"type": "max_count", "value": 5})
    );

    // Without `key` one is derived; unlimited max_count is `value: null`.
    let basic = s
        .plan(json!({"name": "Basic plan", "features": [
            {"featureKey": "seats", "allocation": {"type": "max_count", "value": null}}]}))
        .await;
    assert!(basic["key"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(basic["inheritToSubAccounts"], false);
    assert_eq!(
        basic["defaultTreatment"], "false",
        "only grants give a plan by default"
    );
    assert_eq!(
        basic["features"][0]["allocation"],
        json!({"type": "max_count", "value": null})
    );

    // Refusals.
    assert_error_shape(
        &s.post(PLANS, &json!({"name": "Pro again", "key": "pro"}))
            .await,
        409,
    );
    assert_error_shape(
        &s.post(PLANS, &json!({"name": "Ghost", "featureKeys": ["ghost"]}))
            .await,
        404,
    );
    let r = s
        .post(
            PLANS,
            &json!({"name": "Bad", "features": [{"featureKey": "seats",
                    "allocation": {"type": "max_count", "value": -1}}]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        r.body["fieldViolations"][0]["field"],
        "features[0].allocation"
    );
    // A bool allocation for a max_count feature.
    assert_error_shape(
        &s.post(
            PLANS,
            &json!({"name": "Mismatch", "features": [{"featureKey": "seats",
                    "allocation": {"type": "bool", "value": true}}]}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(PLANS, &json!({"name": "T", "defaultTreatment": "maybe"}))
            .await,
        400,
    );
    assert_error_shape(&s.post(PLANS, &json!({"key": "nameless"})).await, 400);

    // Reads.
    let r = s.get(&format!("{PLANS}/{}", id(&pro))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Pro");
    assert_error_shape(
        &s.get(&format!("{PLANS}/{}", uuid::Uuid::now_v7())).await,
        404,
    );
    let r = s
        .get(&format!("{PLANS}?limit=1&orderBy=name&sortType=DESC"))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{PLANS}?filter=Basic")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&basic).as_str()]);
    let r = s.get(&format!("{PLANS}?featureIds={}", id(&reports))).await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    assert_error_shape(&s.get(&format!("{PLANS}?orderBy=key")).await, 400);

    // The plan's features with the full feature objects and allocations.
    let r = s.get(&format!("{PLANS}/{}/features", id(&pro))).await;
    let listed = items(&r);
    assert_eq!(listed.len(), 2);
    let seat_entry = listed.iter().find(|f| f["key"] == "seats").unwrap();
    assert_eq!(seat_entry["type"], "max_count");
    assert_eq!(
        seat_entry["allocation"],
        json!({"type": "max_count", "value": 5})
    );
    assert_error_shape(
        &s.get(&format!("{PLANS}/{}/features", uuid::Uuid::now_v7()))
            .await,
        404,
    );

    // Link (Frontegg `featuresIds`, and ours by key with an allocation), then unlink.
    let r = s
        .patch(
            &format!("{PLANS}/{}/features/link", id(&basic)),
            &json!({"featuresIds": [id(&sso)],
                    "features": [{"featureKey": "reports"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    let linked: BTreeSet<&str> = r.body["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(linked, set(&["reports", "seats", "sso"]));
    assert_error_shape(
        &s.patch(
            &format!("{PLANS}/{}/features/link", id(&basic)),
            &json!({"featuresIds": [uuid::Uuid::now_v7().to_string()]}),
        )
        .await,
        404,
    );
    let r = s
        .patch(
            &format!("{PLANS}/{}/features/unlink", id(&basic)),
            &json!({"featuresIds": [id(&sso)], "featureKeys": ["seats"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        field_of(r.body["features"].as_array().unwrap(), "key"),
        ["reports"]
    );
    assert_error_shape(
        &s.patch(
            &format!("{PLANS}/{}/features/link", id(&basic)),
            &json!({"featureIds": [id(&sso)]}),
        )
        .await,
        400,
    );

    // PATCH: only the given fields change; `null` clears the time limitation; features are
    // replaced when given.
    let r = s
        .patch(
            &format!("{PLANS}/{}", id(&pro)),
            &json!({"name": "Pro+", "inheritToSubAccounts": false,
                    "defaultTimeLimitation": null,
                    "features": [{"featureKey": "seats",
                                  "allocation": {"type": "max_count", "value": 10}}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["name"], "Pro+");
    assert_eq!(r.body["key"], "pro");
    assert_eq!(r.body["inheritToSubAccounts"], false);
    assert_eq!(r.body["defaultTimeLimitation"], Value::Null);
    assert_eq!(r.body["description"], "For teams");
    assert_eq!(
        r.body["features"],
        json!([{"id": id(&seats), "key": "seats", "name": "Seats", "permissions": [],
                "allocation": {"type": "max_count", "value": 10}}])
    );
    assert_error_shape(
        &s.patch(
            &format!("{PLANS}/{}", uuid::Uuid::now_v7()),
            &json!({"name": "x"}),
        )
        .await,
        404,
    );

    // Plans of an account, and the list filtered by account.
    s.account("acme", None).await;
    let (grant_ids, grant_rev) = s
        .grant(json!([{"planId": id(&pro), "tenantId": "acme"}]))
        .await;
    let r = s.get(&format!("{PLANS}/tenant/acme")).await;
    let all = items(&r);
    let pro_entry = all.iter().find(|p| p["key"] == "pro").unwrap();
    assert_eq!(pro_entry["entitled"], true);
    assert_eq!(pro_entry["grantIds"], json!(grant_ids));
    assert!(pro_entry["targeted"].is_boolean());
    let r = s
        .get(&format!("{PLANS}/tenant/acme?excludeNonEntitledPlans=true"))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    let r = s
        .get(&format!(
            "{PLANS}/tenant/acme?excludeNonEntitledPlans=false&featureKeys=reports"
        ))
        .await;
    assert_eq!(field_of(items(&r), "id"), [id(&basic).as_str()]);
    let r = s.get(&format!("{PLANS}?tenantIds=acme")).await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    // `minRevision`: answered from an index including the write, else 503.
    let r = s
        .get(&format!(
            "{PLANS}/tenant/acme?excludeNonEntitledPlans=true&minRevision={grant_rev}"
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    assert_error_shape(
        &s.get(&format!(
            "{PLANS}/tenant/acme?minRevision={}",
            grant_rev + 1_000_000
        ))
        .await,
        400,
    );
    assert_error_shape(
        &s.get(&format!("{PLANS}/tenant/acme?minRevision=soon"))
            .await,
        400,
    );
    // An account the service's hierarchy does not know is 404.
    assert_error_shape(&s.get(&format!("{PLANS}/tenant/nobody")).await, 404);

    // DELETE: live grants need force, which revokes them.
    let r = s.delete(&format!("{PLANS}/{}", id(&pro))).await;
    assert_error_shape(&r, 412);
    let r = s.delete(&format!("{PLANS}/{}?force=true", id(&pro))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"revokedGrants": 1}));
    assert_error_shape(&s.get(&format!("{PLANS}/{}", id(&pro))).await, 404);
    let r = s.delete(&format!("{PLANS}/{}", id(&basic))).await;
    assert_eq!(r.body, json!({"revokedGrants": 0}), "{}", r.status);
    assert_error_shape(&s.delete(&format!("{PLANS}/{}", id(&basic))).await, 404);
}

#[tokio::test]
async fn feature_flags_with_rules_and_routes_crud() {
    let s = spawn_stack().await;
    let beta = s.feature(json!({"name": "Beta", "key": "beta"})).await;
    let other = s.feature(json!({"name": "Other", "key": "other"})).await;
    let rule = json!({"description": "staff", "conditionLogic": "and",
        "conditions": [{"attribute": "email", "attributeType": "custom", "negate": false,
                        "op": "ends_with", "value": {"list": ["@acme.test"]}}],
        "treatment": "true"});

    let r = s
        .post(
            FLAGS,
            &json!({"name": "Beta flag", "on": true, "offTreatment": "false",
                    "defaultTreatment": "false", "featureId": id(&beta),
                    "description": "staff only", "metadata": "{\"owner\": \"web\"}",
                    "rules": [rule]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let flag = r.body;
    assert!(!id(&flag).is_empty());
    assert_eq!(
        flag["feature"],
        json!({"id": id(&beta), "key": "beta", "name": "Beta"})
    );
    assert_eq!(flag["on"], true);
    assert_eq!(flag["offTreatment"], "false");
    assert_eq!(flag["defaultTreatment"], "false");
    assert_eq!(flag["metadata"], json!({"owner": "web"}));
    assert_eq!(flag["rules"], json!([rule]));
    // By feature key too.
    let r = s
        .post(
            FLAGS,
            &json!({"name": "Other flag", "on": false, "offTreatment": "false",
                    "defaultTreatment": "true", "featureKey": "other"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["feature"]["id"], other["id"]);
    let other_flag = r.body;

    // Refusals.
    let base = json!({"name": "F", "on": true, "offTreatment": "false",
                      "defaultTreatment": "true"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    assert_error_shape(&s.post(FLAGS, &base).await, 400);
    assert_error_shape(
        &s.post(
            FLAGS,
            &with(json!({"featureId": id(&beta), "featureKey": "beta"})),
        )
        .await,
        400,
    );
    // An unknown feature is 404, as for plans.
    assert_error_shape(
        &s.post(FLAGS, &with(json!({"featureKey": "ghost"}))).await,
        404,
    );
    assert_error_shape(
        &s.post(
            FLAGS,
            &with(json!({"featureId": uuid::Uuid::now_v7().to_string()})),
        )
        .await,
        404,
    );
    let r = s
        .post(
            FLAGS,
            &with(json!({"featureKey": "beta", "offTreatment": "off"})),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "offTreatment");
    let mut bad_rule = rule.clone();
    bad_rule["conditions"][0]["op"] = json!("sounds_like");
    let r = s
        .post(
            FLAGS,
            &with(json!({"featureKey": "beta", "rules": [bad_rule]})),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        r.body["fieldViolations"][0]["field"],
        "rules[0].conditions[0].op"
    );
    let mut or_rule = rule.clone();
    or_rule["conditionLogic"] = json!("or");
    assert_error_shape(
        &s.post(
            FLAGS,
            &with(json!({"featureKey": "beta", "rules": [or_rule]})),
        )
        .await,
        400,
    );

    // Lists.
    let r = s.get(&format!("{FLAGS}?on=true")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&flag).as_str()]);
    let r = s.get(&format!("{FLAGS}?featureIds={}", id(&other))).await;
    assert_eq!(field_of(items(&r), "id"), [id(&other_flag).as_str()]);
    let r = s.get(&format!("{FLAGS}?limit=1")).await;
    assert_eq!(items(&r).len(), 1);
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{FLAGS}?filter=Beta")).await;
    assert_eq!(field_of(items(&r), "name"), ["Beta flag"]);
    // Frontegg's `orderBy` + `sortType` (default: created, ascending).
    s.feature(json!({"name": "Alpha", "key": "alpha"})).await;
    let r = s
        .post(
            FLAGS,
            &json!({"name": "Alpha flag", "on": false, "offTreatment": "false",
                    "defaultTreatment": "true", "featureKey": "alpha"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let alpha_flag = r.body;
    let names = |q: &'static str| {
        let s = &s;
        async move {
            let r = s.get(&format!("{FLAGS}{q}")).await;
            assert_eq!(r.status, 200, "{q}: {:?}", r.body);
            field_of(items(&r), "name")
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    let created = ["Beta flag", "Other flag", "Alpha flag"];
    assert_eq!(names("").await, created);
    assert_eq!(names("?orderBy=createdAt&sortType=ASC").await, created);
    assert_eq!(
        names("?orderBy=createdAt&sortType=DESC").await,
        ["Alpha flag", "Other flag", "Beta flag"]
    );
    assert_eq!(
        names("?orderBy=name").await,
        ["Alpha flag", "Beta flag", "Other flag"]
    );
    assert_eq!(
        names("?orderBy=name&sortType=desc&limit=2").await,
        ["Other flag", "Beta flag"]
    );
    let r = s.get(&format!("{FLAGS}?orderBy=color")).await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "orderBy");
    // The feature list shows the embedded flag.
    let r = s
        .get(&format!("{FEATURES}?hasFeatureFlag=true&featureKeys=beta"))
        .await;
    let listed = items(&r);
    assert_eq!(listed[0]["featureFlag"]["id"], flag["id"]);
    assert_eq!(listed[0]["featureFlag"]["on"], true);
    assert_eq!(listed[0]["featureFlag"]["offTreatment"], "false");

    // Read, change, delete.
    let r = s.get(&format!("{FLAGS}/{}", id(&flag))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Beta flag");
    s.clock.advance(chrono::Duration::seconds(5));
    let r = s
        .patch(
            &format!("{FLAGS}/{}", id(&flag)),
            &json!({"on": false, "rules": [], "defaultTreatment": "true"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["on"], false);
    assert_eq!(r.body["rules"], json!([]));
    assert_eq!(r.body["defaultTreatment"], "true");
    assert_eq!(r.body["name"], "Beta flag");
    // The changed flag sorts last by `updatedAt`.
    let r = s.get(&format!("{FLAGS}?orderBy=updatedAt")).await;
    assert_eq!(
        field_of(items(&r), "id"),
        [id(&other_flag), id(&alpha_flag), id(&flag)]
    );
    assert_error_shape(
        &s.patch(
            &format!("{FLAGS}/{}", id(&flag)),
            &json!({"featureId": "x"}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.patch(
            &format!("{FLAGS}/{}", uuid::Uuid::now_v7()),
            &json!({"on": true}),
        )
        .await,
        404,
    );
    let r = s.delete(&format!("{FLAGS}/{}", id(&flag))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"deleted": true}));
    revision(&r);
    assert_error_shape(&s.get(&format!("{FLAGS}/{}", id(&flag))).await, 404);
    assert_error_shape(&s.delete(&format!("{FLAGS}/{}", id(&flag))).await, 404);

    // Routes.
    let r = s
        .post(
            ROUTES,
            &json!({"method": "GET", "path": "/reports/**", "policy": "require",
                    "requiredFeatureKeys": ["beta"], "requiredPermissionKeys": ["reports.read"],
                    "description": "reports"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let route = r.body;
    assert_eq!(route["method"], "GET");
    assert_eq!(route["path"], "/reports/**");
    assert_eq!(route["policy"], "require");
    assert_eq!(route["requiredFeatureKeys"], json!(["beta"]));
    assert_eq!(route["requiredPermissionKeys"], json!(["reports.read"]));
    let admin = s
        .post(
            ROUTES,
            &json!({"method": "*", "path": "/admin/**", "policy": "deny"}),
        )
        .await;
    assert_eq!(admin.status, 201, "{:?}", admin.body);
    assert_error_shape(
        &s.post(
            ROUTES,
            &json!({"method": "GET", "path": "/x", "policy": "maybe"}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(ROUTES, &json!({"method": "GET", "policy": "allow"}))
            .await,
        400,
    );
    let r = s.get(&format!("{ROUTES}?method=GET")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&route).as_str()]);
    let r = s.get(&format!("{ROUTES}?filter=admin")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&admin.body).as_str()]);
    let r = s.get(&format!("{ROUTES}?limit=1")).await;
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{ROUTES}/{}", id(&route))).await;
    assert_eq!(r.body["description"], "reports");
    // Only `require` routes list requirements.
    assert_error_shape(
        &s.patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "allow", "requiredFeatureKeys": []}),
        )
        .await,
        400,
    );
    let r = s
        .patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "allow", "requiredFeatureKeys": [],
                    "requiredPermissionKeys": []}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["policy"], "allow");
    assert_eq!(r.body["requiredFeatureKeys"], json!([]));
    assert_eq!(r.body["path"], "/reports/**");
    assert_error_shape(
        &s.patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "nope"}),
        )
        .await,
        400,
    );
    let r = s.delete(&format!("{ROUTES}/{}", id(&route))).await;
    assert_eq!(r.body, json!({"deleted": true}));
    assert_error_shape(&s.get(&format!("{ROUTES}/{}", id(&route))).await, 404);
    assert_error_shape(
        &s.patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "deny"}),
        )
        .await,
        404,
    );
}

/// A JSON array is not an object: serde would read it as the fields by position (`[]` as a body
/// leaving every field out), so a link or a patch sent as an array was a 200 no-op or a
/// positional write. Every body is an object in the document, and a 400 otherwise.
#[tokio::test]
async fn a_body_sent_as_a_json_array_is_refused() {
    let s = spawn_stack().await;
    let reports = s
        .feature(json!({"name": "Reports", "key": "reports"}))
        .await;
    let plan = s.plan(json!({"name": "Basic", "key": "basic"})).await;
    for (method, path, body) in [
        (
            "PATCH",
            format!("{PLANS}/{}/features/link", id(&plan)),
            json!([]),
        ),
        (
            "PATCH",
            format!("{PLANS}/{}/features/link", id(&plan)),
            json!([[id(&reports)]]),
        ),
        (
            "PATCH",
            format!("{FEATURES}/{}", id(&reports)),
            json!(["Renamed"]),
        ),
        ("POST", FEATURES.to_owned(), json!(["Other", "other"])),
    ] {
        let r = s.app.send_json(method, &path, Some(&s.env), &body).await;
        assert_error_shape(&r, 400);
        assert_eq!(r.body["reason"], "INVALID_BODY", "{method} {path} {body}");
    }
    // Nothing was written: the plan links no feature, the feature kept its name, no other.
    assert_eq!(
        s.get(&format!("{PLANS}/{}", id(&plan))).await.body["features"],
        json!([])
    );
    assert_eq!(
        s.get(&format!("{FEATURES}/{}", id(&reports))).await.body["name"],
        "Reports"
    );
    assert_eq!(items(&s.get(FEATURES).await).len(), 1);
}
