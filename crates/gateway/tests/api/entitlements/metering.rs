//! Metering over REST, through the gateway to a real entitlement service: usage (our JSON and
//! CloudEvents batches), checks that report the meter, check-and-consume, credit grants and
//! meters; bad input refused with the field; no way in without an environment token.

use super::*;

const USAGE: &str = "/entitlements/api/v1/usage";
const CLOUD_EVENTS: &str = "/entitlements/api/v1/usage/cloudevents";
const CONSUME: &str = "/entitlements/api/v1/usage/consume";
const CREDITS: &str = "/entitlements/api/v1/credit-grants";

/// `acme` on a plan issuing 100 `calls` a day (hard limit); `globex` with nothing. The
/// default body limit (1 MiB), so a 1,000-event batch fits.
pub(super) async fn metered_stack() -> Stack {
    let s = spawn_stack_configured(|_| {}, |c| c.http_body_limit_bytes = 1024 * 1024).await;
    s.account("acme", None).await;
    s.account("globex", None).await;
    let r = s
        .post(
            FEATURES,
            &json!({"name": "API calls", "key": "calls", "type": "metered",
                    "metering": {"unit": "call", "recurrence": "DAY",
                                 "anchor": "2026-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    s.plan(json!({"name": "API", "key": "api",
                  "features": [{"featureKey": "calls",
                                "allocation": {"type": "max_count", "value": 100}}]}))
        .await;
    s.grant(json!([{"planId": "api", "tenantId": "acme"}]))
        .await;
    s
}

pub(super) fn usage(id: &str, amount: i64) -> Value {
    json!({"id": id, "tenantId": "acme", "featureKey": "calls", "amount": amount})
}

pub(super) async fn check(s: &Stack, requested: Option<u64>, rev: u64) -> Reply {
    let mut body = json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "calls"},
                          "minRevision": rev});
    if let Some(r) = requested {
        body["requestedAmount"] = json!(r);
    }
    let r = s.post(CHECK, &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r
}

#[tokio::test]
async fn usage_and_consumption_draw_the_meter_that_checks_report() {
    let s = metered_stack().await;
    let r = s
        .post(
            USAGE,
            &json!({"events": [usage("e1", 30), usage("e2", 20), usage("e1", 30)]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["outcomes"],
        json!(["RECORDED", "RECORDED", "DUPLICATE"])
    );
    let rev = r.body["revision"].as_u64().unwrap();
    // A CloudEvents batch: subject is the account, type the feature.
    let ce = json!([{"specversion": "1.0", "id": "ce-1", "source": "//billing/api",
                     "type": "calls", "subject": "acme", "time": "2026-12-01T00:00:00Z",
                     "data": {"amount": 5}},
                    {"specversion": "1.0", "id": "e2", "source": "//billing/api",
                     "type": "other", "subject": "acme", "data": {"featureKey": "calls"}}]);
    let r = s
        .post_with(
            CLOUD_EVENTS,
            &[("content-type", "application/cloudevents-batch+json")],
            &ce,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // 2026-12-01 is a closed day by now: counted there, not in today's balance; e2 was seen.
    assert_eq!(r.body["outcomes"], json!(["LATE", "DUPLICATE"]));

    let d = check(&s, Some(50), rev).await;
    assert_eq!(d.body["result"], true, "{:?}", d.body);
    assert_eq!(
        d.body["allocation"],
        json!({"type": "max_count", "value": 100})
    );
    let meter = &d.body["meter"];
    assert_eq!(
        (meter["balance"].as_i64(), meter["usage"].as_i64()),
        (Some(50), Some(50))
    );
    assert!(meter["periodEnd"].is_string(), "{meter}");
    let d = check(&s, Some(51), rev).await;
    assert_eq!(d.body["justification"], "INSUFFICIENT_BALANCE");

    // Check-and-consume: allowed once, replayed on retry, refused past the limit.
    let r = s
        .post(
            CONSUME,
            &json!({"id": "c1", "tenantId": "acme", "featureKey": "calls",
                               "amount": 45}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["consumed"].as_bool(), r.body["replayed"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(r.body["meter"]["balance"], 5);
    let again = s
        .post(
            CONSUME,
            &json!({"id": "c1", "tenantId": "acme", "featureKey": "calls",
                               "amount": 45}),
        )
        .await;
    assert_eq!(again.body["replayed"], true, "{:?}", again.body);
    assert_eq!(again.body["meter"]["balance"], 5);
    let refused = s
        .post(
            CONSUME,
            &json!({"id": "c2", "tenantId": "acme", "featureKey": "calls",
                               "amount": 6}),
        )
        .await;
    assert_eq!(
        (
            refused.body["consumed"].as_bool(),
            refused.body["justification"].as_str()
        ),
        (Some(false), Some("INSUFFICIENT_BALANCE"))
    );

    // A top-up on the plan-managed limit, listed, read on the meter, then voided.
    let r = s
        .post(
            CREDITS,
            &json!({"tenantId": "acme", "featureKey": "calls", "amount": 10,
                               "metadata": {"reason": "goodwill"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let credit = id(&r.body);
    assert_eq!(r.body["rollover"], json!({"min": 0, "max": 10}));
    let meter = s
        .get(&format!(
            "/entitlements/api/v1/accounts/acme/meters/calls?minRevision={}",
            revision(&r).max(1)
        ))
        .await;
    assert_eq!(meter.status, 200, "{:?}", meter.body);
    assert_eq!(meter.body["meter"]["balance"], 15);
    assert_eq!(
        meter.body["allowance"],
        json!({"type": "max_count", "value": 100})
    );
    let remaining: Vec<(&str, i64)> = meter.body["credits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["remaining"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        remaining,
        [
            ("00000000-0000-0000-0000-000000000000", 5),
            (credit.as_str(), 10)
        ]
    );
    let listed = s
        .get(&format!("{CREDITS}?tenantId=acme&featureKey=calls"))
        .await;
    assert_eq!(
        listed.body["items"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        listed.body
    );
    let voided = s
        .post(&format!("{CREDITS}/{credit}/void"), &json!({}))
        .await;
    assert_eq!(voided.status, 200, "{:?}", voided.body);
    assert!(voided.body["voidedAt"].is_string());
    let d = check(&s, None, revision(&voided).max(1)).await;
    assert_eq!(d.body["meter"]["balance"], 5, "{:?}", d.body);
}

#[tokio::test]
async fn bad_metering_input_is_refused_with_the_field_and_nothing_is_counted() {
    let s = metered_stack().await;
    s.feature(json!({"name": "SSO", "key": "sso"})).await;
    let r = s
        .post(
            USAGE,
            &json!({"events": [usage("ok", 1),
            {"id": "x", "tenantId": "acme", "featureKey": "sso"},
            {"id": "y", "tenantId": "nobody", "featureKey": "calls"},
            {"id": "z", "tenantId": "acme", "featureKey": "calls", "amount": -1}]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        item_errors(&r),
        [
            (1, "featureKey".to_owned()),
            (2, "tenantId".to_owned()),
            (3, "amount".to_owned())
        ]
    );
    let too_many: Vec<Value> = (0..1001).map(|i| usage(&format!("b{i}"), 1)).collect();
    let r = s.post(USAGE, &json!({ "events": too_many })).await;
    assert_error_shape(&r, 400);
    let r = s.post(USAGE, &json!({"events": [], "extra": 1})).await;
    assert_error_shape(&r, 400);
    let r = s
        .post(
            CONSUME,
            &json!({"id": "c", "tenantId": "acme", "featureKey": "calls",
                               "amount": 0}),
        )
        .await;
    assert_error_shape(&r, 400);
    let r = s
        .post(
            CONSUME,
            &json!({"id": "c", "tenantId": "acme", "featureKey": "nope"}),
        )
        .await;
    assert_error_shape(&r, 404);
    let r = s
        .post(
            CREDITS,
            &json!({"tenantId": "acme", "featureKey": "calls", "amount": 5,
                               "rollover": {"min": 6, "max": 5}}),
        )
        .await;
    assert_error_shape(&r, 400);
    let r = s
        .post(
            CREDITS,
            &json!({"tenantId": "globex", "featureKey": "sso", "amount": 5}),
        )
        .await;
    assert_error_shape(&r, 400);
    let r = s
        .post(&format!("{CREDITS}/not-a-uuid/void"), &json!({}))
        .await;
    assert_error_shape(&r, 400);
    let r = s
        .post(
            CLOUD_EVENTS,
            &json!([{"specversion": "0.3", "id": "a", "source": "s",
                                     "type": "calls", "subject": "acme"}]),
        )
        .await;
    assert_error_shape(&r, 400);
    // Nothing of the refused requests was counted.
    let d = check(&s, None, 0).await;
    assert_eq!(d.body["meter"]["usage"], 0, "{:?}", d.body);
    // Globex has no plan and no credits: not entitled, and its meter is a 0 balance.
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "globex"},
                             "feature": {"featureKey": "calls"}}),
        )
        .await;
    assert_eq!(r.body["justification"], "MISSING_FEATURE", "{:?}", r.body);
}

#[tokio::test]
async fn metering_needs_an_environment_token() {
    let s = metered_stack().await;
    let user = user_token(&user_claims("acme", "ann", &[]));
    for (method, path) in [
        ("POST", USAGE),
        ("POST", CONSUME),
        ("POST", CREDITS),
        ("GET", "/entitlements/api/v1/credit-grants?tenantId=acme"),
        ("GET", "/entitlements/api/v1/accounts/acme/meters/calls"),
        ("POST", "/entitlements/api/v1/reservations"),
        (
            "GET",
            "/entitlements/api/v1/reservations/0190f5a2-0000-7000-8000-000000000000",
        ),
        (
            "POST",
            "/entitlements/api/v1/reservations/0190f5a2-0000-7000-8000-000000000000/commit",
        ),
        (
            "POST",
            "/entitlements/api/v1/reservations/0190f5a2-0000-7000-8000-000000000000/release",
        ),
    ] {
        let body = (method == "POST").then(|| usage("u", 1).to_string().into_bytes());
        let none = s
            .app
            .request(
                method,
                path,
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
        assert_eq!(none.status, 401, "{method} {path}");
        let auth = format!("Bearer {user}");
        let as_user = s
            .app
            .request(
                method,
                path,
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                ],
                body,
            )
            .await;
        assert!(
            matches!(as_user.status, 401 | 403),
            "{method} {path}: {}",
            as_user.status
        );
    }
}

/// A plan inheriting to sub-accounts is a pool: `acme-eu` (under `acme`, no allocation of its
/// own) draws on acme's meter, and every answer says whose meter it is.
#[tokio::test]
async fn a_sub_account_draws_on_its_ancestors_pool_and_answers_say_so() {
    let s = metered_stack().await;
    s.plan(
        json!({"name": "Org API", "key": "org-api", "inheritToSubAccounts": true,
                  "features": [{"featureKey": "calls",
                                "allocation": {"type": "max_count", "value": 100}}]}),
    )
    .await;
    s.account("holding", None).await;
    s.account("holding-eu", Some("holding")).await;
    s.grant(json!([{"planId": "org-api", "tenantId": "holding"}]))
        .await;
    let consume = |id: &str, tenant: &str, amount: i64| json!({"id": id, "tenantId": tenant, "featureKey": "calls", "amount": amount});
    // The sub-account reaches the entitlement service through the tenant change feed.
    let mut r = s.post(CONSUME, &consume("c1", "holding-eu", 60)).await;
    for _ in 0..200 {
        if r.status != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = s.post(CONSUME, &consume("c1", "holding-eu", 60)).await;
    }
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["consumed"], true);
    assert_eq!(r.body["meter"]["ownerTenantId"], "holding");
    assert_eq!(r.body["meter"]["balance"], 40);
    let rev = revision(&r);
    // The owner's own check: its meter counted the sub-account's usage; no owner named.
    let own = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "holding"}, "feature": {"featureKey": "calls"},
                    "minRevision": rev}),
        )
        .await;
    assert_eq!(own.body["meter"]["usage"], 60, "{:?}", own.body);
    assert!(
        own.body["meter"].get("ownerTenantId").is_none(),
        "{:?}",
        own.body
    );
    let sub = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "holding-eu"}, "feature": {"featureKey": "calls"},
                    "requestedAmount": 41, "minRevision": rev}),
        )
        .await;
    assert_eq!(
        sub.body["justification"], "INSUFFICIENT_BALANCE",
        "{:?}",
        sub.body
    );
    assert_eq!(sub.body["meter"]["ownerTenantId"], "holding");
    assert_eq!(sub.body["meter"]["usage"], 60);
    let view = s
        .get(&format!(
            "/entitlements/api/v1/accounts/holding-eu/meters/calls?minRevision={rev}"
        ))
        .await;
    assert_eq!(view.status, 200, "{:?}", view.body);
    assert_eq!(
        view.body["meter"]["ownerTenantId"], "holding",
        "{:?}",
        view.body
    );
    // Credits go to the pool's owner: 409 naming it for the sub-account.
    let credit = |tenant: &str| json!({"tenantId": tenant, "featureKey": "calls", "amount": 5});
    let refused = s.post(CREDITS, &credit("holding-eu")).await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["reason"], "METER_POOLED", "{:?}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("holding"),
        "{:?}",
        refused.body
    );
    let r = s.post(CREDITS, &credit("holding")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = s.post(CONSUME, &consume("c2", "holding-eu", 45)).await;
    assert_eq!(r.body["consumed"], true, "{:?}", r.body);
    assert_eq!(r.body["meter"]["balance"], 0);
    // acme (no hierarchy) keeps its own meter, no owner named.
    let d = check(&s, None, rev).await;
    assert!(
        d.body["meter"].get("ownerTenantId").is_none(),
        "{:?}",
        d.body
    );
}

/// A user granted a plan of its own draws on its own meter, which checks, meters, credits and
/// resets select with `userId`; a bad `userId` is a 400 naming it, a user without a meter 404.
#[tokio::test]
async fn a_users_own_grant_is_its_own_meter_and_user_id_selects_it() {
    let s = metered_stack().await;
    s.plan(json!({"name": "Seat", "key": "seat",
                  "features": [{"featureKey": "calls",
                                "allocation": {"type": "max_count", "value": 10}}]}))
        .await;
    s.grant(json!([{"planId": "seat", "tenantId": "acme", "userId": "ada"}]))
        .await;
    let mut ada = usage("a1", 3);
    ada["userId"] = json!("ada");
    let mut bob = usage("b1", 5);
    bob["userId"] = json!("bob");
    let r = s.post(USAGE, &json!({"events": [ada, bob]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rev = revision(&r);
    let user_check = |user: &str| {
        json!({"subject": {"tenantId": "acme", "userId": user},
               "feature": {"featureKey": "calls"}, "minRevision": rev})
    };
    let own = s.post(CHECK, &user_check("ada")).await;
    assert_eq!(own.body["meter"]["userId"], "ada", "{:?}", own.body);
    assert_eq!(own.body["meter"]["usage"], 3);
    assert_eq!(own.body["meter"]["balance"], 7);
    let other = s.post(CHECK, &user_check("bob")).await;
    assert!(
        other.body["meter"].get("userId").is_none(),
        "{:?}",
        other.body
    );
    assert_eq!(other.body["meter"]["usage"], 5);
    let account = check(&s, None, rev).await;
    assert_eq!(account.body["meter"]["usage"], 5, "{:?}", account.body);

    let meter = "/entitlements/api/v1/accounts/acme/meters/calls";
    let view = s
        .get(&format!("{meter}?userId=ada&minRevision={rev}"))
        .await;
    assert_eq!(view.status, 200, "{:?}", view.body);
    assert_eq!(view.body["meter"]["userId"], "ada");
    assert_eq!(view.body["meter"]["usage"], 3);
    let missing = s
        .get(&format!("{meter}?userId=bob&minRevision={rev}"))
        .await;
    assert_error_shape(&missing, 404);
    for bad in ["", "%01"] {
        let r = s.get(&format!("{meter}?userId={bad}")).await;
        assert_error_shape(&r, 400);
        assert_eq!(
            r.body["fieldViolations"][0]["field"], "userId",
            "{:?}",
            r.body
        );
        let r = s
            .get(&format!(
                "{meter}/balance?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&userId={bad}"
            ))
            .await;
        assert_error_shape(&r, 400);
        assert_eq!(
            r.body["fieldViolations"][0]["field"], "userId",
            "{:?}",
            r.body
        );
    }
    let r = s
        .get(&format!(
            "{meter}/periods?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&userId=bob"
        ))
        .await;
    assert_error_shape(&r, 404);
    let r = s
        .post(&format!("{meter}/reset?userId=bob"), &json!({}))
        .await;
    assert_error_shape(&r, 404);

    // Credits: on ada's own meter; bob has none (409 naming the rule's reason).
    let credit = |user: &str| json!({"tenantId": "acme", "featureKey": "calls", "amount": 5, "userId": user});
    let refused = s.post(CREDITS, &credit("bob")).await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(
        refused.body["reason"], "NO_USER_METER",
        "{:?}",
        refused.body
    );
    let r = s.post(CREDITS, &credit("ada")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["userId"], "ada");
    let r = s
        .post(&format!("{meter}/reset?userId=ada"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["closedPeriod"]["usage"], 3, "{:?}", r.body);
    assert_eq!(r.body["meter"]["userId"], "ada");
    assert_eq!(
        r.body["meter"]["balance"], 15,
        "10 issued afresh, the credit rolled over"
    );
}
