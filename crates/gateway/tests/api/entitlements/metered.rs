//! Metered features over REST: `"type": "metered"` with its `metering` on create (v1, v2),
//! read, list and PATCH; the refusals (400 naming the field, 412 `METERING_IMMUTABLE`); plans
//! allocating them `max_count` values; the audit entry carrying the metering.

use super::*;

fn metering() -> Value {
    json!({"unit": "api_call", "recurrence": "MONTH", "anchor": "2026-01-31T00:00:00Z",
           "softLimit": true})
}

fn field(r: &Reply) -> &str {
    r.body["fieldViolations"][0]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn metered_features_are_created_read_listed_and_patched() {
    let s = spawn_stack().await;
    let r = s
        .post(
            FEATURES,
            &json!({"name": "API calls", "key": "calls", "type": "metered", "mergePolicy": "sum",
                    "metering": metering()}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let calls = r.body;
    assert_eq!(calls["type"], "metered");
    assert_eq!(calls["mergePolicy"], "sum");
    assert_eq!(
        calls["metering"],
        json!({"unit": "api_call", "aggregation": "SUM", "recurrence": "P1M",
               "anchor": "2026-01-31T00:00:00Z", "softLimit": true, "carryOverage": false})
    );
    // v2, another aggregation, an ISO-8601 recurrence and an anchor with sub-milliseconds
    // (answered exactly, so it can be sent back).
    let r = s
        .post(
            FEATURES_V2,
            &json!({"name": "Active users", "key": "mau", "type": "metered",
                    "metering": {"unit": "user", "aggregation": "UNIQUE_COUNT",
                                 "recurrence": "P14D", "anchor": "2026-02-01T08:30:00.000123Z",
                                 "carryOverage": true}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["mergePolicy"], "max", "max is the default");
    assert_eq!(
        r.body["metering"],
        json!({"unit": "user", "aggregation": "UNIQUE_COUNT", "recurrence": "P14D",
               "anchor": "2026-02-01T08:30:00.000123Z", "softLimit": false,
               "carryOverage": true})
    );
    let sso = s.feature(json!({"name": "SSO", "key": "sso"})).await;
    assert!(
        sso.get("metering").is_none(),
        "other types' shape is unchanged: {sso}"
    );

    let r = s.get(&format!("{FEATURES}/{}", id(&calls))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["metering"], calls["metering"]);
    let r = s.get(&format!("{FEATURES}?featureKeys=calls,sso")).await;
    let listed = items(&r);
    let by_key = |k: &str| listed.iter().find(|f| f["key"] == k).unwrap().clone();
    assert_eq!(by_key("calls")["metering"], calls["metering"]);
    assert!(by_key("sso").get("metering").is_none());

    // PATCH sends the metering whole, as read: unit, soft limit and carried overage change.
    let mut changed = calls["metering"].clone();
    changed["unit"] = json!("request");
    changed["softLimit"] = json!(false);
    changed["carryOverage"] = json!(true);
    let path = format!("{FEATURES}/{}", id(&calls));
    let r = s.patch(&path, &json!({"metering": changed})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["metering"], changed);
    let r = s.patch(&path, &json!({"name": "Requests"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["metering"], changed, "kept when not sent");

    // Aggregation, period and type are fixed: 412 with the field.
    for (edit, named) in [
        (json!({"aggregation": "MAX"}), "metering.aggregation"),
        (json!({"recurrence": "WEEK"}), "metering.recurrence"),
        (json!({"anchor": "2026-01-01T00:00:00Z"}), "metering.anchor"),
    ] {
        let mut m = changed.clone();
        for (k, v) in edit.as_object().unwrap() {
            m[k] = v.clone();
        }
        let r = s
            .patch(
                &format!("/entitlements/resources/features/v2/{}", id(&calls)),
                &json!({ "metering": m }),
            )
            .await;
        assert_error_shape(&r, 412);
        assert_eq!(r.body["reason"], "METERING_IMMUTABLE", "{:?}", r.body);
        assert_eq!(field(&r), named, "{:?}", r.body);
    }
    let r = s.patch(&path, &json!({"type": "max_count"})).await;
    assert_error_shape(&r, 412);
    assert_eq!(r.body["reason"], "METERING_IMMUTABLE");
    assert_eq!(field(&r), "type", "{:?}", r.body);
    assert_eq!(
        s.get(&path).await.body["metering"],
        changed,
        "nothing refused was written"
    );

    // The audit entry carries the metering.
    let r = s
        .get(&format!(
            "/audit/api/v1/events?resourceType=feature&resourceId={}&action=feature.create",
            id(&calls)
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["items"][0]["after"]["metering"]["unit"], "api_call",
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn bad_meterings_are_400_naming_the_field() {
    let s = spawn_stack().await;
    let with = |edit: Value| {
        let mut m = metering();
        for (k, v) in edit.as_object().unwrap() {
            m[k] = v.clone();
        }
        json!({"name": "Calls", "key": "calls", "type": "metered", "metering": m})
    };
    let cases = [
        (
            json!({"name": "Calls", "key": "calls", "type": "metered"}),
            "metering",
        ),
        (
            json!({"name": "Calls", "key": "calls", "metering": metering()}),
            "metering",
        ),
        (
            json!({"name": "Calls", "key": "calls", "type": "max_count", "metering": metering()}),
            "metering",
        ),
        (with(json!({"unit": "api calls"})), "metering.unit"),
        (with(json!({"unit": ""})), "metering.unit"),
        (with(json!({"aggregation": "AVG"})), "metering.aggregation"),
        (
            with(json!({"recurrence": "fortnight"})),
            "metering.recurrence",
        ),
        (with(json!({"recurrence": "PT30S"})), "metering.recurrence"),
        (with(json!({"anchor": "yesterday"})), "metering.anchor"),
    ];
    for (body, named) in cases {
        let r = s.post(FEATURES, &body).await;
        assert_error_shape(&r, 400);
        assert_eq!(field(&r), named, "{body}: {:?}", r.body);
    }
    // Unknown and missing metering fields are refused as every body's are.
    for body in [
        with(json!({"resetDay": 1})),
        json!({"name": "Calls", "key": "calls", "type": "metered",
               "metering": {"unit": "api_call", "recurrence": "MONTH"}}),
    ] {
        assert_error_shape(&s.post(FEATURES_V2, &body).await, 400);
    }
    assert!(
        items(&s.get(FEATURES).await).is_empty(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn plans_allocate_metered_features_counts() {
    let s = spawn_stack().await;
    s.feature(json!({"name": "Calls", "key": "calls", "type": "metered", "metering": metering()}))
        .await;
    let seats = s
        .feature(json!({"name": "Seats", "key": "seats", "type": "max_count"}))
        .await;
    let pro = s
        .plan(json!({"name": "Pro", "key": "pro", "features": [
            {"featureKey": "calls", "allocation": {"type": "max_count", "value": 10000}},
            {"featureKey": "seats", "allocation": {"type": "max_count", "value": 5}}]}))
        .await;
    let allocation = |plan: &Value, key: &str| {
        plan["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .unwrap()["allocation"]
            .clone()
    };
    assert_eq!(
        allocation(&pro, "calls"),
        json!({"type": "max_count", "value": 10000})
    );
    let r = s
        .post(
            PLANS,
            &json!({"name": "Bad", "features": [{"featureKey": "calls",
                    "allocation": {"type": "bool", "value": true}}]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(field(&r), "features[0].allocation", "{:?}", r.body);

    // A max_count feature becomes metered under its plan: the count is now per period.
    let r = s
        .patch(
            &format!("{FEATURES}/{}", id(&seats)),
            &json!({"type": "metered", "metering": {"unit": "seat", "recurrence": "MONTH",
                                                  "anchor": "2026-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["type"], "metered");
    let r = s.get(&format!("{PLANS}/{}", id(&pro))).await;
    assert_eq!(
        allocation(&r.body, "seats"),
        json!({"type": "max_count", "value": 5})
    );
}

/// Generated clients (and the adversarial stage) learn the metering's shape and rules from the
/// document.
#[tokio::test]
async fn the_openapi_document_declares_the_metering() {
    let s = spawn_stack().await;
    let doc = s.get("/openapi.json").await.body;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["MeteringBody"]["required"],
        json!(["unit", "recurrence", "anchor"])
    );
    assert_eq!(schemas["MeteringBody"]["additionalProperties"], false);
    assert_eq!(
        schemas["Metering"]["required"],
        json!([
            "unit",
            "aggregation",
            "recurrence",
            "anchor",
            "softLimit",
            "carryOverage"
        ])
    );
    for body in ["CreateFeatureV1", "CreateFeatureV2"] {
        let parts = schemas[body]["allOf"].as_array().unwrap();
        assert_eq!(
            parts[0]["properties"]["type"]["pattern"],
            "^(bool|max_count|metered)$"
        );
        // `metering` exactly when `type` is `metered`.
        assert!(
            parts
                .iter()
                .any(|p| p["anyOf"][0]["required"] == json!(["type", "metering"])),
            "{body}: {parts:?}"
        );
    }
}
