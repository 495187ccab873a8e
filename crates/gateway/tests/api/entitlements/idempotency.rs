//! `Idempotency-Key` on the catalog creates (features v1 and v2, plans, flags, routes): a
//! retry answers the first status, body and revision and creates nothing more; the key with
//! another body, or on another create, is 409 IDEMPOTENCY_KEY_REUSED.

use super::*;

const KEY: &str = "idempotency-key";

/// The first create with `key`, its retry (replayed exactly) and the same key with `other`
/// (refused); returns the first answer.
async fn created_once(s: &Stack, path: &str, key: &str, body: &Value, other: &Value) -> Reply {
    let first = s.post_with(path, &[(KEY, key)], body).await;
    assert_eq!(first.status, 201, "{path}: {:?}", first.body);
    let again = s.post_with(path, &[(KEY, key)], body).await;
    assert_eq!(again.status, 201, "{path}: {:?}", again.body);
    assert_eq!(again.body, first.body, "{path}");
    assert_eq!(revision(&again), revision(&first), "{path}");
    let r = s.post_with(path, &[(KEY, key)], other).await;
    assert_error_shape(&r, 409);
    assert_eq!(
        r.body["reason"], "IDEMPOTENCY_KEY_REUSED",
        "{path}: {:?}",
        r.body
    );
    first
}

#[tokio::test]
async fn catalog_creates_replay_with_a_key_and_refuse_it_for_another_body() {
    let s = spawn_stack().await;

    let reports = json!({"name": "Reports", "key": "reports", "permissions": ["reports.read"]});
    created_once(
        &s,
        FEATURES,
        "f1",
        &reports,
        &json!({"name": "Other", "key": "other"}),
    )
    .await;
    // Without a key a retry is the conflict it always was.
    assert_error_shape(&s.post(FEATURES, &reports).await, 409);
    let seats = json!({"name": "Seats", "key": "seats", "type": "max_count"});
    created_once(
        &s,
        FEATURES_V2,
        "f2",
        &seats,
        &json!({"name": "S", "key": "s2"}),
    )
    .await;
    assert_eq!(items(&s.get(FEATURES).await).len(), 2);

    // A plan whose key is derived from its name.
    let pro = json!({"name": "Pro", "featureKeys": ["reports"]});
    let plan = created_once(&s, PLANS, "p1", &pro, &json!({"name": "Team"})).await;
    assert_eq!(plan.body["key"], "pro");
    assert_eq!(items(&s.get(PLANS).await).len(), 1);

    let flag = json!({"name": "Reports flag", "featureKey": "reports", "on": true,
                      "offTreatment": "false", "defaultTreatment": "true"});
    let other_flag = json!({"name": "Seats flag", "featureKey": "seats", "on": true,
                            "offTreatment": "false", "defaultTreatment": "true"});
    created_once(&s, FLAGS, "fl1", &flag, &other_flag).await;
    assert_eq!(items(&s.get(FLAGS).await).len(), 1);

    let route = json!({"method": "GET", "path": "/reports/**", "policy": "require",
                       "requiredFeatureKeys": ["reports"]});
    created_once(
        &s,
        ROUTES,
        "r1",
        &route,
        &json!({"method": "GET", "path": "/x",
                                                  "policy": "allow"}),
    )
    .await;
    assert_eq!(items(&s.get(ROUTES).await).len(), 1);

    // A key belongs to the create it was first sent with.
    let r = s
        .post_with(PLANS, &[(KEY, "f1")], &json!({"name": "Elite"}))
        .await;
    assert_error_shape(&r, 409);
    assert_eq!(r.body["reason"], "IDEMPOTENCY_KEY_REUSED", "{:?}", r.body);
    // A malformed key is 400 naming the header, and creates nothing.
    let r = s
        .post_with(PLANS, &[(KEY, &"k".repeat(256))], &json!({"name": "Elite"}))
        .await;
    assert_error_shape(&r, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{:?}",
        r.body
    );
    assert_eq!(items(&s.get(PLANS).await).len(), 1);
}
