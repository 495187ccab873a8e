//! Reservations over REST, through the gateway to a real entitlement service: a hold counted
//! by checks, committed for less, released, retried; every bad input refused with its field
//! and status, nothing held or drawn by a refused request.

use super::metering::{check, metered_stack};
use super::*;

const RESERVATIONS: &str = "/entitlements/api/v1/reservations";

fn ask(id: &str, amount: i64) -> Value {
    json!({"id": id, "tenantId": "acme", "featureKey": "calls", "amount": amount,
           "ttlSeconds": 600})
}

#[tokio::test]
async fn a_hold_is_counted_by_checks_then_committed_for_less_or_released() {
    let s = metered_stack().await;
    let r = s.post(RESERVATIONS, &ask("job-1", 60)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["reservation"]["status"], "HELD", "{:?}", r.body);
    assert_eq!(r.body["allowReason"], "GRANT");
    assert_eq!(
        (
            r.body["meter"]["balance"].as_i64(),
            r.body["meter"]["held"].as_i64()
        ),
        (Some(40), Some(60))
    );
    let id = r.body["reservation"]["id"].as_str().unwrap().to_owned();
    let rev = r.body["revision"].as_u64().unwrap();
    assert!(rev > 0);
    // Every check counts the hold.
    let d = check(&s, Some(41), rev).await;
    assert_eq!(
        d.body["justification"], "INSUFFICIENT_BALANCE",
        "{:?}",
        d.body
    );
    assert_eq!(d.body["meter"]["held"], 60);
    // A retry answers the same reservation.
    let again = s.post(RESERVATIONS, &ask("job-1", 60)).await;
    assert_eq!(again.body["replayed"], true, "{:?}", again.body);
    assert_eq!(again.body["reservation"]["id"], id.as_str());
    let got = s.get(&format!("{RESERVATIONS}/{id}")).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["status"], "HELD");

    let done = s
        .post(
            &format!("{RESERVATIONS}/{id}/commit"),
            &json!({"amount": 25}),
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["reservation"]["status"], "COMMITTED");
    assert_eq!(done.body["reservation"]["committedAmount"], 25);
    assert_eq!(
        (
            done.body["meter"]["balance"].as_i64(),
            done.body["meter"]["usage"].as_i64()
        ),
        (Some(75), Some(25))
    );
    assert!(done.headers.contains_key("x-tenantry-revision"));
    // Committing again with the same amount is a replay; releasing it now is a conflict.
    let replay = s
        .post(
            &format!("{RESERVATIONS}/{id}/commit"),
            &json!({"amount": 25}),
        )
        .await;
    assert_eq!(replay.body["replayed"], true, "{:?}", replay.body);
    let conflict = s
        .post(&format!("{RESERVATIONS}/{id}/release"), &json!({}))
        .await;
    assert_error_shape(&conflict, 409);
    assert_eq!(conflict.body["reason"], "RESERVATION_SETTLED");

    // A second hold, committed whole with no body at all.
    let r = s.post(RESERVATIONS, &ask("job-2", 15)).await;
    let second = r.body["reservation"]["id"].as_str().unwrap().to_owned();
    let whole = s
        .app
        .request(
            "POST",
            &format!("{RESERVATIONS}/{second}/commit"),
            &[("authorization", &format!("Bearer {}", s.env))],
            None,
        )
        .await;
    assert_eq!(whole.status, 200, "{:?}", whole.body);
    assert_eq!(whole.body["reservation"]["committedAmount"], 15);

    // A third, released: its amount returns; releasing again is a replay.
    let r = s.post(RESERVATIONS, &ask("job-3", 50)).await;
    let third = r.body["reservation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["meter"]["balance"], 10);
    let released = s
        .post(&format!("{RESERVATIONS}/{third}/release"), &json!({}))
        .await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(released.body["reservation"]["status"], "RELEASED");
    assert_eq!(released.body["meter"]["balance"], 60);
    let again = s
        .post(&format!("{RESERVATIONS}/{third}/release"), &json!({}))
        .await;
    assert_eq!(again.body["replayed"], true, "{:?}", again.body);
    let late = s
        .post(&format!("{RESERVATIONS}/{third}/commit"), &json!({}))
        .await;
    assert_error_shape(&late, 409);
    assert_eq!(late.body["reason"], "RESERVATION_SETTLED");
    // Past the limit: refused, nothing held.
    let r = s.post(RESERVATIONS, &ask("job-4", 61)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["reservation"]["status"], "REFUSED");
    assert_eq!(r.body["justification"], "INSUFFICIENT_BALANCE");
    assert_eq!(r.body["meter"]["balance"], 60);
}

#[tokio::test]
async fn bad_reservations_are_refused_with_the_field_and_nothing_is_held() {
    let s = metered_stack().await;
    for (body, field) in [
        (
            json!({"id": "a", "tenantId": "acme", "featureKey": "calls", "ttlSeconds": 0}),
            "ttlSeconds",
        ),
        (
            json!({"id": "a", "tenantId": "acme", "featureKey": "calls", "ttlSeconds": 604_801}),
            "ttlSeconds",
        ),
        (
            json!({"id": "a", "tenantId": "acme", "featureKey": "calls", "amount": 0,
                "ttlSeconds": 60}),
            "amount",
        ),
        (
            json!({"id": "", "tenantId": "acme", "featureKey": "calls", "ttlSeconds": 60}),
            "id",
        ),
    ] {
        let r = s.post(RESERVATIONS, &body).await;
        assert_error_shape(&r, 400);
        assert_eq!(
            r.body["fieldViolations"][0]["field"], field,
            "{body}: {:?}",
            r.body
        );
    }
    let missing = s
        .post(
            RESERVATIONS,
            &json!({"id": "a", "tenantId": "acme", "featureKey": "calls"}),
        )
        .await;
    assert_error_shape(&missing, 400);
    let unknown = s
        .post(
            RESERVATIONS,
            &json!({"id": "a", "tenantId": "acme", "featureKey": "nope", "ttlSeconds": 60}),
        )
        .await;
    assert_error_shape(&unknown, 404);
    let r = s.post(RESERVATIONS, &ask("k", 10)).await;
    let id = r.body["reservation"]["id"].as_str().unwrap().to_owned();
    let too_much = s
        .post(
            &format!("{RESERVATIONS}/{id}/commit"),
            &json!({"amount": 11}),
        )
        .await;
    assert_error_shape(&too_much, 400);
    let not_json = s
        .post_with(
            &format!("{RESERVATIONS}/{id}/commit"),
            &[("content-type", "application/json")],
            &json!([1]),
        )
        .await;
    assert_error_shape(&not_json, 400);
    assert_error_shape(&s.get(&format!("{RESERVATIONS}/not-a-uuid")).await, 400);
    assert_error_shape(
        &s.get(&format!(
            "{RESERVATIONS}/0190f5a2-0000-7000-8000-000000000000"
        ))
        .await,
        404,
    );
    // Only `k`'s 10 is held; nothing was drawn.
    let d = check(&s, None, 0).await;
    assert_eq!(
        (
            d.body["meter"]["held"].as_i64(),
            d.body["meter"]["usage"].as_i64()
        ),
        (Some(10), Some(0))
    );
}
