//! What-if over REST (`POST /entitlements/api/v1/accounts/{tenantId}/what-if`), through the
//! gateway to a real entitlement service: a metered feature's meter and decision before and
//! after an upgrade, a downgrade and a user's own grant; bad input refused naming the field;
//! environment tokens only; nothing written.

use uuid::Uuid;

use super::metering::{check, metered_stack, usage};
use super::*;

const WHAT_IF: &str = "/entitlements/api/v1/accounts/acme/what-if";

fn field(r: &Reply) -> &str {
    r.body["fieldViolations"][0]["field"].as_str().unwrap_or("")
}

/// The one change listed, and in which list.
fn only(r: &Reply) -> (&'static str, &Value) {
    let mut found = ["gained", "lost", "changed"].into_iter().flat_map(|list| {
        r.body[list]
            .as_array()
            .unwrap()
            .iter()
            .map(move |c| (list, c))
    });
    let one = found.next().expect("one change");
    assert!(found.next().is_none(), "{:?}", r.body);
    one
}

#[tokio::test]
async fn a_plan_change_previews_the_meter_it_would_leave_and_the_decision() {
    let s = metered_stack().await;
    s.plan(json!({"name": "Pro", "key": "pro",
                  "features": [{"featureKey": "calls",
                                "allocation": {"type": "max_count", "value": 1000}}]}))
        .await;
    s.plan(json!({"name": "Small", "key": "small",
                  "features": [{"featureKey": "calls",
                                "allocation": {"type": "max_count", "value": 50}}]}))
        .await;
    let r = s
        .post(
            "/entitlements/api/v1/usage",
            &json!({"events": [usage("e1", 60)]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rev = r.body["revision"].as_u64().unwrap();

    // Upgrade, asking whether 500 more would be allowed: 40 left refuses, 940 allows.
    let r = s
        .post(
            WHAT_IF,
            &json!({"changes": [{"revokePlan": "api"}, {"grant": {"planKey": "pro"}}],
                    "requestedAmount": 500, "minRevision": rev}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (list, c) = only(&r);
    assert_eq!(list, "changed");
    assert_eq!(c["featureKey"], "calls");
    assert_eq!(c["before"], json!({"type": "max_count", "value": 100}));
    assert_eq!(c["after"], json!({"type": "max_count", "value": 1000}));
    assert_eq!(
        (&c["meterBefore"]["balance"], &c["meterBefore"]["usage"]),
        (&json!(40), &json!(60))
    );
    assert_eq!(
        (&c["meterAfter"]["balance"], &c["meterAfter"]["usage"]),
        (&json!(940), &json!(60))
    );
    assert_eq!(
        c["decisionBefore"],
        json!({"result": false, "justification": "INSUFFICIENT_BALANCE", "allowReason": null})
    );
    assert_eq!(
        c["decisionAfter"],
        json!({"result": true, "justification": null, "allowReason": "GRANT"})
    );
    assert_eq!(
        c["meterAfter"]["periodStart"],
        c["meterBefore"]["periodStart"]
    );
    assert!(r.body["revision"].as_u64().unwrap() >= rev);

    // Downgrade below the usage: held, spent.
    let r = s
        .post(
            WHAT_IF,
            &json!({"changes": [{"revokePlan": "api"}, {"grant": {"planKey": "small"}}]}),
        )
        .await;
    let (list, c) = only(&r);
    assert_eq!(list, "changed");
    assert_eq!(c["meterAfter"]["balance"], 0);
    assert_eq!(c["decisionAfter"]["justification"], "USAGE_LIMIT_REACHED");

    // A user of acme granted `small` itself: its own meter, fresh, named.
    let r = s
        .post(
            WHAT_IF,
            &json!({"userId": "ann",
                    "changes": [{"grant": {"planKey": "small", "toUser": true}}]}),
        )
        .await;
    let (list, c) = only(&r);
    assert_eq!(list, "changed");
    assert_eq!(c["meterBefore"].get("userId"), None);
    assert_eq!(c["meterAfter"]["userId"], "ann");
    assert_eq!(
        (&c["meterAfter"]["balance"], &c["meterAfter"]["usage"]),
        (&json!(50), &json!(0))
    );

    // Nothing was written: the check answers the meter as it is.
    let r = check(&s, None, rev).await;
    assert_eq!(r.body["meter"]["balance"], 40);
    assert_eq!(r.body["allocation"]["value"], 100);
}

#[tokio::test]
async fn bad_questions_are_refused_naming_the_field_and_need_an_environment_token() {
    let s = metered_stack().await;
    let refused = [
        (json!({"changes": []}), 400, "changes"),
        (
            json!({"changes": [{"revokePlan": "api"}], "requestedAmount": 0}),
            400,
            "requestedAmount",
        ),
        (
            json!({"changes": [{"revokePlan": "api"}],
                   "requestedAmount": 1_000_000_000_000_001_i64}),
            400,
            "requestedAmount",
        ),
        (json!({"changes": [{}]}), 400, "changes[0]"),
        (
            json!({"changes": [{"revokePlan": "api", "revokeGrantId": Uuid::nil()}]}),
            400,
            "changes[0]",
        ),
        (
            json!({"changes": [{"grant": {"planKey": "api", "planId": Uuid::nil()}}]}),
            400,
            "changes[0].grant",
        ),
        (
            json!({"changes": [{"grant": {"planId": "api"}}]}),
            400,
            "changes[0].grant.planId",
        ),
        (
            json!({"changes": [{"grant": {"planKey": "api", "toUser": true}}]}),
            400,
            "changes[0].grant.toUser",
        ),
        (
            json!({"changes": [{"grant": {"planKey": "api",
                                          "startsAt": "2030-01-02T00:00:00Z",
                                          "expiresAt": "2030-01-01T00:00:00Z"}}]}),
            400,
            "changes[0].grant.expiresAt",
        ),
        (
            json!({"changes": [{"revokeGrantId": "not-a-uuid"}]}),
            400,
            "changes[0].revokeGrantId",
        ),
        (
            json!({"changes": [{"revokePlan": "api"}], "at": "yesterday"}),
            400,
            "at",
        ),
        (json!({"changes": [{"revokePlan": "gold"}]}), 404, ""),
        (
            json!({"changes": [{"revokeGrantId": Uuid::nil()}]}),
            404,
            "",
        ),
    ];
    for (body, status, name) in refused {
        let r = s.post(WHAT_IF, &body).await;
        assert_error_shape(&r, status);
        assert_eq!(field(&r), name, "{body}: {:?}", r.body);
    }
    let r = s
        .post(
            "/entitlements/api/v1/accounts/nobody/what-if",
            &json!({"changes": [{"revokePlan": "api"}]}),
        )
        .await;
    assert_error_shape(&r, 404);

    let body = json!({"changes": [{"revokePlan": "api"}]});
    let r = s.app.post_json(WHAT_IF, None, &body).await;
    assert_error_shape(&r, 401);
    let token = user_token(&user_claims("acme", "ann", &["*"]));
    let r = s.app.post_json(WHAT_IF, Some(&token), &body).await;
    assert_error_shape(&r, 403);
}
