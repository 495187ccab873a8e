//! OFREP (`/ofrep/v1/…`) through real HTTP: every refusal in OFREP's own error shape with the
//! code its providers act on, a user token kept to itself, and the bulk evaluation's ETag.

use serde_json::{Value, json};

use super::{Stack, id, spawn_stack};
use crate::helpers::{user_claims, user_token};

const ONE: &str = "/ofrep/v1/evaluate/flags";

/// `acme` holds `pro` (`sso`, 10 `seats`) until an hour from the service's clock.
async fn world(s: &Stack) {
    s.account("acme", None).await;
    s.account("globex", None).await;
    s.feature(json!({"name": "SSO", "key": "sso"})).await;
    s.feature(json!({"name": "Seats", "key": "seats", "type": "max_count"}))
        .await;
    let pro = s
        .plan(json!({"name": "Pro", "key": "pro", "featureKeys": ["sso"],
                     "features": [{"featureKey": "seats",
                                   "allocation": {"type": "max_count", "value": 10}}]}))
        .await;
    let soon = (s.clock.now_for_tests() + chrono::Duration::hours(1)).to_rfc3339();
    s.grant(json!([{"planId": id(&pro), "tenantId": "acme", "expirationDate": soon}]))
        .await;
    s.eventually("acme in the index", || async {
        let r = s
            .post(
                &format!("{ONE}/sso"),
                &json!({"context": {"tenantId": "acme"}}),
            )
            .await;
        r.body["value"] == true
    })
    .await;
}

/// An OFREP error: the status, `errorCode` and a non-empty `errorDetails`.
fn assert_ofrep_error(r: &crate::helpers::Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["errorCode"], code, "{:?}", r.body);
    assert!(
        r.body["errorDetails"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn refusals_come_in_ofrep_shapes_with_the_codes_providers_act_on() {
    let s = spawn_stack().await;
    world(&s).await;
    let acme = json!({"context": {"tenantId": "acme"}});

    // No token, a bad token: 401 in OFREP's shape (providers read the status).
    let r = s.app.post_json(&format!("{ONE}/sso"), None, &acme).await;
    assert_ofrep_error(&r, 401, "GENERAL");
    let r = s.app.post_json(ONE, Some("not-a-token"), &acme).await;
    assert_ofrep_error(&r, 401, "GENERAL");

    // The body: not JSON, not an object, a context that is not one → PARSE_ERROR, keyed.
    let auth = format!("Bearer {}", s.env);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = s
        .app
        .request(
            "POST",
            &format!("{ONE}/sso"),
            &headers,
            Some(b"{nope".to_vec()),
        )
        .await;
    assert_ofrep_error(&r, 400, "PARSE_ERROR");
    assert_eq!(r.body["key"], "sso");
    for body in [json!([1]), json!({"context": "acme"})] {
        let r = s.post(&format!("{ONE}/sso"), &body).await;
        assert_ofrep_error(&r, 400, "PARSE_ERROR");
    }
    // An empty body is no context: the account is missing.
    let r = s
        .app
        .request("POST", &format!("{ONE}/sso"), &headers, None)
        .await;
    assert_ofrep_error(&r, 400, "TARGETING_KEY_MISSING");
    for body in [
        json!({}),
        json!({"context": null}),
        json!({"context": {"plan": "gold"}}),
    ] {
        let r = s.post(&format!("{ONE}/sso"), &body).await;
        assert_ofrep_error(&r, 400, "TARGETING_KEY_MISSING");
        let r = s.post(ONE, &body).await;
        assert_ofrep_error(&r, 400, "TARGETING_KEY_MISSING");
        assert!(r.body.get("key").is_none(), "{:?}", r.body);
    }
    // Mistyped or oversized context attributes → INVALID_CONTEXT.
    let mut deep = json!(1);
    for _ in 0..12 {
        deep = json!({ "a": deep });
    }
    for context in [
        json!({"tenantId": 7}),
        json!({"tenantId": "acme", "targetingKey": ["alice"]}),
        json!({"tenantId": "acme", "permissions": "audit.read"}),
        json!({"tenantId": "acme", "permissions": [1]}),
        json!({"tenantId": "acme", "deep": deep}),
        json!({"tenantId": "acme", "wide": (0..300).map(|i| (i.to_string(), json!(i)))
            .collect::<serde_json::Map<_, _>>()}),
        json!({"tenantId": "not an account id"}),
    ] {
        let r = s
            .post(&format!("{ONE}/sso"), &json!({ "context": context }))
            .await;
        assert_ofrep_error(&r, 400, "INVALID_CONTEXT");
    }

    // A body over the limit: its status, OFREP-shaped.
    let big = json!({"context": {"tenantId": "acme", "big": "x".repeat(17 * 1024)}});
    let r = s.post(&format!("{ONE}/sso"), &big).await;
    assert_ofrep_error(&r, 413, "GENERAL");

    // Keys naming nothing → 404 FLAG_NOT_FOUND, keyed; a limit only for max_count features.
    for key in [
        "nope",
        "limit:sso",
        "allocation:",
        "perm:",
        "feature:",
        "allocation:nope",
    ] {
        let r = s.post(&format!("{ONE}/{key}"), &acme).await;
        assert_ofrep_error(&r, 404, "FLAG_NOT_FOUND");
        assert_eq!(r.body["key"], key);
    }
    let r = s.post(&format!("{ONE}/limit:seats"), &acme).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["value"], 10);
    assert_eq!(r.body["variant"], "10");
    // An unknown account is a value (not entitled, as a check answers), not an error.
    let r = s
        .post(
            &format!("{ONE}/sso"),
            &json!({"context": {"targetingKey": "ghost"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["value"], false);
    assert_eq!(r.body["reason"], "DEFAULT");
    assert_eq!(r.body["metadata"]["justification"], "TENANT_NOT_FOUND");

    // A user token: its own account and user; another account or user is 403, OFREP-shaped.
    let alice = user_token(&user_claims("acme", "alice", &[]));
    let r = s
        .app
        .post_json(&format!("{ONE}/sso"), Some(&alice), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["value"], true);
    for context in [
        json!({"tenantId": "globex"}),
        json!({"targetingKey": "bob"}),
    ] {
        let body = json!({ "context": context });
        let r = s
            .app
            .post_json(&format!("{ONE}/sso"), Some(&alice), &body)
            .await;
        assert_ofrep_error(&r, 403, "GENERAL");
        let r = s.app.post_json(ONE, Some(&alice), &body).await;
        assert_ofrep_error(&r, 403, "GENERAL");
        assert!(!r.body.to_string().contains("globex\""), "{:?}", r.body);
    }

    // A path under /ofrep/ that is no route, a wrong method: OFREP's shape too.
    let r = s.post("/ofrep/v1/nothing", &acme).await;
    assert_ofrep_error(&r, 404, "GENERAL");
    let r = s.get(ONE).await;
    assert_ofrep_error(&r, 405, "GENERAL");

    // The configuration is public.
    let r = s.app.get("/ofrep/v1/configuration", None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "tenantry");
    assert_eq!(
        r.body["capabilities"]["flagEvaluation"]["supportedTypes"],
        json!(["boolean", "int", "object"])
    );
}

#[tokio::test]
async fn the_bulk_etag_holds_until_an_answer_changes_even_by_time_alone() {
    let s = spawn_stack().await;
    world(&s).await;
    let acme = json!({"context": {"targetingKey": "acme"}});
    let r = s.post(ONE, &acme).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let flag = |r: &crate::helpers::Reply, key: &str| -> Value {
        r.body["flags"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["key"] == key))
            .cloned()
            .unwrap_or_else(|| panic!("no {key} in {:?}", r.body))
    };
    assert_eq!(flag(&r, "sso")["value"], true);
    assert_eq!(flag(&r, "limit:seats")["value"], 10);
    assert_eq!(
        flag(&r, "allocation:seats")["value"],
        json!({"type": "max_count", "value": 10})
    );
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let r = s.post_with(ONE, &[("if-none-match", &etag)], &acme).await;
    assert_eq!(r.status, 304);
    assert_eq!(r.headers["etag"].to_str().unwrap(), etag);
    let weak = format!("\"other\", W/{etag}");
    let r = s.post_with(ONE, &[("if-none-match", &weak)], &acme).await;
    assert_eq!(r.status, 304);
    // Another context is another answer.
    let globex = json!({"context": {"targetingKey": "globex"}});
    let r = s.post_with(ONE, &[("if-none-match", &etag)], &globex).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(flag(&r, "sso")["value"], false);

    // The grant expires by the clock alone (no write, no new revision): the tag changes.
    s.clock.advance(chrono::Duration::hours(2));
    let r = s.post_with(ONE, &[("if-none-match", &etag)], &acme).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_ne!(r.headers["etag"].to_str().unwrap(), etag);
    let sso = flag(&r, "sso");
    assert_eq!(sso["value"], false);
    assert_eq!(sso["reason"], "DEFAULT");
    assert_eq!(sso["metadata"]["justification"], "PLAN_EXPIRED");
    assert_eq!(sso["metadata"]["planKey"], "pro");
    assert_eq!(flag(&r, "limit:seats")["value"], 0);
}
