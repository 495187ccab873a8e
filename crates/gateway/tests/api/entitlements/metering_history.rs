//! Usage history over REST: usage per window (late events where they happened), and every
//! bad input refused with its field; no way in without an environment token.

use chrono::{DateTime, NaiveTime, SecondsFormat, TimeDelta, Utc};

use super::metering::{metered_stack, usage};
use super::*;

const USAGE: &str = "/entitlements/api/v1/usage";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn history_path(feature: &str, from: DateTime<Utc>, to: DateTime<Utc>, window: &str) -> String {
    format!(
        "/entitlements/api/v1/accounts/acme/meters/{feature}/usage?from={}&to={}&window={window}",
        rfc3339(from),
        rfc3339(to)
    )
}

fn field(r: &Reply) -> &str {
    r.body["fieldViolations"][0]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn usage_history_answers_each_window_with_late_events_where_they_happened() {
    let s = metered_stack().await;
    let now = s.clock.now_for_tests();
    let today = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    let at = |t: DateTime<Utc>| json!(rfc3339(t));
    // Two events of closed days (late: counted there) and one of today.
    let mut early = usage("e1", 30);
    early["timestamp"] = at(today - TimeDelta::hours(38));
    let mut yesterday = usage("e2", 20);
    yesterday["timestamp"] = at(today - TimeDelta::hours(14));
    let r = s
        .post(
            USAGE,
            &json!({"events": [early, yesterday, usage("e3", 5)]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["outcomes"], json!(["LATE", "LATE", "RECORDED"]));

    let from = today - TimeDelta::days(2);
    let to = today + TimeDelta::days(1);
    for window in ["DAY", "PERIOD"] {
        let r = s.get(&history_path("calls", from, to, window)).await;
        assert_eq!(r.status, 200, "{window}: {:?}", r.body);
        assert_eq!(r.body["aggregation"], "SUM");
        let windows: Vec<(String, String, i64)> = r.body["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["start"].as_str().unwrap().to_owned(),
                    w["end"].as_str().unwrap().to_owned(),
                    w["usage"].as_i64().unwrap(),
                )
            })
            .collect();
        // As the gateway writes times: RFC 3339 in milliseconds.
        let day = |n: i64| (from + TimeDelta::days(n)).to_rfc3339_opts(SecondsFormat::Millis, true);
        assert_eq!(
            windows,
            [
                (day(0), day(1), 30),
                (day(1), day(2), 20),
                (day(2), day(3), 5)
            ],
            "{window}"
        );
    }
    // The same range by the hour: 72 windows adding up to the same usage.
    let r = s.get(&history_path("calls", from, to, "HOUR")).await;
    let windows = r.body["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 72);
    let total: i64 = windows.iter().map(|w| w["usage"].as_i64().unwrap()).sum();
    assert_eq!(total, 55);
}

#[tokio::test]
async fn bad_history_queries_are_refused_with_their_field() {
    let s = metered_stack().await;
    s.feature(json!({"name": "SSO", "key": "sso"})).await;
    let now = s.clock.now_for_tests();
    let day = TimeDelta::days(1);
    let ok = history_path("calls", now - day, now, "DAY");
    assert_eq!(s.get(&ok).await.status, 200);

    for (path, status, name) in [
        (history_path("calls", now - day, now, "YEAR"), 400, "window"),
        (history_path("calls", now, now, "DAY"), 400, "to"),
        (history_path("calls", now, now - day, "DAY"), 400, "to"),
        // 50 days of hours: 1,200 windows.
        (
            history_path("calls", now - day * 50, now, "HOUR"),
            400,
            "window",
        ),
        (
            format!(
                "/entitlements/api/v1/accounts/acme/meters/calls/usage?from=yesterday&to={}&window=DAY",
                rfc3339(now)
            ),
            400,
            "from",
        ),
        (
            history_path("sso", now - day, now, "DAY"),
            400,
            "featureKey",
        ),
    ] {
        let r = s.get(&path).await;
        assert_error_shape(&r, status);
        assert_eq!(field(&r), name, "{path}: {:?}", r.body);
    }
    // A missing range, an unknown feature or account.
    let r = s
        .get("/entitlements/api/v1/accounts/acme/meters/calls/usage?window=DAY")
        .await;
    assert_error_shape(&r, 400);
    let r = s.get(&history_path("nothing", now - day, now, "DAY")).await;
    assert_error_shape(&r, 404);
    let r = s
        .get(&history_path("calls", now - day, now, "DAY").replace("/acme/", "/nobody/"))
        .await;
    assert_error_shape(&r, 404);

    // An environment token only.
    let user = user_token(&user_claims("acme", "ann", &[]));
    let none = s.app.request("GET", &ok, &[], None).await;
    assert_eq!(none.status, 401);
    let auth = format!("Bearer {user}");
    let as_user = s
        .app
        .request("GET", &ok, &[("authorization", &auth)], None)
        .await;
    assert!(matches!(as_user.status, 401 | 403), "{}", as_user.status);
}

#[tokio::test]
async fn a_manual_reset_starts_a_new_period_that_history_shows() {
    let s = metered_stack().await;
    s.feature(json!({"name": "SSO", "key": "sso"})).await;
    // Tomorrow 10:00, so the day's period lasts past the hour this test moves on.
    let start = s
        .clock
        .now_for_tests()
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc()
        + TimeDelta::hours(34);
    s.clock.set(start);
    let r = s.post(USAGE, &json!({"events": [usage("e1", 60)]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.clock.advance(TimeDelta::hours(1));
    let reset_path = "/entitlements/api/v1/accounts/acme/meters/calls/reset";
    let r = s.post(reset_path, &json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(revision(&r) > 0);
    let closed = &r.body["closedPeriod"];
    assert_eq!(
        (
            closed["usage"].as_i64(),
            closed["allowance"].as_i64(),
            closed["manual"].as_bool()
        ),
        (Some(60), Some(100), Some(true)),
        "{closed}"
    );
    // A fresh allowance from now to the scheduled end of the day.
    assert_eq!(r.body["meter"]["balance"], 100, "{:?}", r.body);
    assert_eq!(r.body["meter"]["usage"], 0);
    assert_eq!(r.body["meter"]["periodStart"], closed["end"]);
    let now = s.clock.now_for_tests();
    let today = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    let r = s
        .get(&history_path(
            "calls",
            today,
            today + TimeDelta::days(1),
            "PERIOD",
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let cut: Vec<(&Value, i64)> = r.body["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (&w["start"], w["usage"].as_i64().unwrap()))
        .collect();
    assert_eq!(cut.len(), 2, "{:?}", r.body);
    assert_eq!((cut[0].1, cut[1].0, cut[1].1), (60, &closed["end"], 0));

    for (path, status) in [
        ("/entitlements/api/v1/accounts/acme/meters/sso/reset", 400),
        (
            "/entitlements/api/v1/accounts/acme/meters/nothing/reset",
            404,
        ),
        (
            "/entitlements/api/v1/accounts/nobody/meters/calls/reset",
            404,
        ),
    ] {
        let r = s.post(path, &json!({})).await;
        assert_error_shape(&r, status);
    }
    let none = s.app.request("POST", reset_path, &[], None).await;
    assert_eq!(none.status, 401);
}

/// Seed 004's account entitlements show a metered feature as `max_count` with what remains of
/// the period's amount.
#[tokio::test]
async fn seed_004_lists_a_metered_feature_with_the_periods_remaining_amount() {
    let s = metered_stack().await;
    let listed = |r: &Reply| -> Vec<Value> {
        r.body["result"]["custom_entitlements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["feature"]["key"] == "calls")
            .cloned()
            .collect()
    };
    let r = s.get("/tenants/acme/entitlements").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        listed(&r),
        [json!({"allocation": {"type": "max_count", "value": 100}, "feature": {"key": "calls"}})]
    );
    let used = s.post(USAGE, &json!({"events": [usage("e1", 30)]})).await;
    assert_eq!(used.status, 200, "{:?}", used.body);
    let r = s.get("/tenants/acme/entitlements").await;
    assert_eq!(
        listed(&r),
        [json!({"allocation": {"type": "max_count", "value": 70}, "feature": {"key": "calls"}})]
    );
}

#[tokio::test]
async fn closed_periods_are_listed_with_their_summaries() {
    let s = metered_stack().await;
    let start = s
        .clock
        .now_for_tests()
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc()
        + TimeDelta::hours(34);
    s.clock.set(start);
    let r = s.post(USAGE, &json!({"events": [usage("e1", 40)]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The next day: yesterday's period closed.
    s.clock.advance(TimeDelta::days(1));
    let day = start.date_naive().and_time(NaiveTime::MIN).and_utc();
    let path = |from: DateTime<Utc>, to: DateTime<Utc>| {
        format!(
            "/entitlements/api/v1/accounts/acme/meters/calls/periods?from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        )
    };
    let r = s.get(&path(day, day + TimeDelta::days(3))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{:?}", r.body);
    assert_eq!(
        (
            items[0]["usage"].as_i64(),
            items[0]["allowance"].as_i64(),
            items[0]["allowanceUsed"].as_i64(),
            items[0]["manual"].as_bool()
        ),
        (Some(40), Some(100), Some(40), Some(false))
    );
    let r = s.get(&path(day, day)).await;
    assert_error_shape(&r, 400);
    assert_eq!(field(&r), "to");
    let r = s
        .get(&path(day, day + TimeDelta::days(1)).replace("/calls/", "/nothing/"))
        .await;
    assert_error_shape(&r, 404);
}

#[tokio::test]
async fn the_balance_burn_down_answers_each_draw_credit_and_reset() {
    let s = metered_stack().await;
    s.feature(json!({"name": "SSO", "key": "sso"})).await;
    // 10:00 tomorrow: the day's period lasts past the hours this test moves on.
    let start = s
        .clock
        .now_for_tests()
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc()
        + TimeDelta::hours(34);
    s.clock.set(start);
    let r = s.post(USAGE, &json!({"events": [usage("e1", 30)]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.clock.advance(TimeDelta::hours(1));
    let r = s
        .post(
            "/entitlements/api/v1/credit-grants",
            &json!({"tenantId": "acme", "featureKey": "calls", "amount": 25}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let credit = r.body["id"].as_str().unwrap().to_owned();
    s.clock.advance(TimeDelta::hours(1));
    let r = s
        .post(
            "/entitlements/api/v1/usage/consume",
            &json!({"id": "c1", "tenantId": "acme", "featureKey": "calls", "amount": 5}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The next day: a scheduled reset.
    s.clock.advance(TimeDelta::hours(14));
    let path = |from: DateTime<Utc>, to: DateTime<Utc>| {
        format!(
            "/entitlements/api/v1/accounts/acme/meters/calls/balance?from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        )
    };
    let r = s.get(&path(start, start + TimeDelta::days(3))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let points: Vec<(Value, Value, Value, Value)> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].clone(),
                p["id"].clone(),
                p["meter"]["balance"].clone(),
                p["meter"]["usage"].clone(),
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            (json!("USAGE"), json!("e1"), json!(70), json!(30)),
            (
                json!("CREDIT_EFFECTIVE"),
                json!(credit),
                json!(95),
                json!(30)
            ),
            (json!("CONSUMPTION"), json!("c1"), json!(90), json!(35)),
            // A fresh 100 and the credit's 25 rolled over.
            (json!("RESET"), Value::Null, json!(125), json!(0)),
        ],
        "{:?}",
        r.body
    );
    assert_eq!(
        r.body["items"][0]["at"],
        start.to_rfc3339_opts(SecondsFormat::Millis, true),
        "{:?}",
        r.body
    );

    // Bad inputs are refused naming the field.
    for (bad, name) in [
        (path(start, start), "to"),
        (
            format!(
                "/entitlements/api/v1/accounts/acme/meters/calls/balance?from=yesterday&to={}",
                rfc3339(start)
            ),
            "from",
        ),
        (
            format!(
                "/entitlements/api/v1/accounts/acme/meters/calls/balance?from={}&to=soon",
                rfc3339(start)
            ),
            "to",
        ),
        (
            path(start, start + TimeDelta::days(1)).replace("/calls/", "/sso/"),
            "featureKey",
        ),
    ] {
        let r = s.get(&bad).await;
        assert_error_shape(&r, 400);
        assert_eq!(field(&r), name, "{bad}: {:?}", r.body);
    }
    // A missing bound is a bad query.
    let r = s
        .get("/entitlements/api/v1/accounts/acme/meters/calls/balance?to=2026-01-01T00:00:00Z")
        .await;
    assert_error_shape(&r, 400);
    assert!(
        r.body["message"].as_str().unwrap_or("").contains("from"),
        "{:?}",
        r.body
    );
    for bad in [
        path(start, start + TimeDelta::days(1)).replace("/calls/", "/nothing/"),
        path(start, start + TimeDelta::days(1)).replace("/acme/", "/nobody/"),
    ] {
        let r = s.get(&bad).await;
        assert_error_shape(&r, 404);
    }
    // An environment token only.
    let ok = path(start, start + TimeDelta::days(1));
    let none = s.app.request("GET", &ok, &[], None).await;
    assert_eq!(none.status, 401);
    let user = user_token(&user_claims("acme", "ann", &[]));
    let auth = format!("Bearer {user}");
    let as_user = s
        .app
        .request("GET", &ok, &[("authorization", &auth)], None)
        .await;
    assert!(matches!(as_user.status, 401 | 403), "{}", as_user.status);
}

#[tokio::test]
async fn a_check_at_a_past_instant_answers_the_meter_then() {
    let s = metered_stack().await;
    // 10:00 tomorrow: the day's period lasts past the first hours this test moves on.
    let start = s
        .clock
        .now_for_tests()
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc()
        + TimeDelta::hours(34);
    s.clock.set(start);
    let r = s.post(USAGE, &json!({"events": [usage("e1", 30)]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.clock.advance(TimeDelta::hours(1));
    let r = s.post(USAGE, &json!({"events": [usage("e2", 50)]})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rev = r.body["revision"].as_u64().unwrap();
    s.clock.advance(TimeDelta::hours(1));
    let check_at = |at: Option<DateTime<Utc>>, requested: u64| {
        let mut body = json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "calls"},
                              "requestedAmount": requested, "minRevision": rev});
        if let Some(at) = at {
            body["at"] = json!(rfc3339(at));
        }
        let s = &s;
        async move {
            let r = s.post(CHECK, &body).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body
        }
    };
    let between = start + TimeDelta::minutes(30);
    let millis = |t: DateTime<Utc>| json!(t.to_rfc3339_opts(SecondsFormat::Millis, true));
    // Between the draws: the meter the first left, read from history, said so.
    let past = check_at(Some(between), 60).await;
    assert_eq!(
        (
            &past["result"],
            &past["meter"]["balance"],
            &past["meter"]["usage"],
            &past["meter"]["asOf"]
        ),
        (&json!(true), &json!(70), &json!(30), &millis(between)),
        "{past:?}"
    );
    let short = check_at(Some(between), 71).await;
    assert_eq!(short["justification"], "INSUFFICIENT_BALANCE", "{short:?}");
    // Now: the index's meter, no asOf.
    let now = check_at(None, 21).await;
    assert_eq!(now["justification"], "INSUFFICIENT_BALANCE", "{now:?}");
    assert_eq!(now["meter"]["balance"], 20);
    assert!(now["meter"].get("asOf").is_none(), "{now:?}");
    // The next day, the period is closed: still the meter then.
    s.clock.advance(TimeDelta::hours(14));
    let closed = check_at(Some(between), 1).await;
    assert_eq!(
        (&closed["meter"]["balance"], &closed["meter"]["usage"]),
        (&json!(70), &json!(30)),
        "{closed:?}"
    );
    let today = check_at(None, 1).await;
    assert_eq!(today["meter"]["balance"], 100, "{today:?}");
}
