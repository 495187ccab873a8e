//! Per-user meters: a plan granted to a user with a metered allocation issues it to the user's
//! own meter; the user's usage, consumptions, holds and credits go there, other users' to the
//! account's meter (SQLite and PostgreSQL, manual clock).

use std::sync::Arc;

use chrono::TimeDelta;

use super::tests::metered_feature;
use super::*;
use crate::app::testing::{TestEngine, engine, engine_on, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewConsumption, NewReservation};
use crate::domain::{Allocation, Justification, PlanFeature};

fn calls(n: u64) -> Vec<PlanFeature> {
    vec![PlanFeature {
        feature_key: "calls".into(),
        allocation: Some(Allocation::MaxCount(Limit::Finite(n))),
    }]
}

/// `acme` on `team` (100 `calls` a month); its user `ada` also holds `seat` (10 a month);
/// `bob` holds nothing of his own. Answers ada's grant.
async fn setup(e: &TestEngine) -> Uuid {
    e.account("acme", None).await;
    metered_feature(e, "calls", false).await;
    e.plan("team", calls(100)).await;
    e.plan("seat", calls(10)).await;
    e.grant("team", "acme", None).await;
    e.grant("seat", "acme", Some("ada")).await.id
}

fn usage(user: Option<&str>, id: &str, amount: i64) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: user.map(str::to_owned),
        feature_key: "calls".into(),
        amount,
        at: None,
        unique: None,
    }
}

fn consumption(user: Option<&str>, id: &str, amount: i64) -> NewConsumption {
    NewConsumption {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: user.map(str::to_owned),
        feature_key: "calls".into(),
        amount,
    }
}

fn credit(user: Option<&str>, amount: i64) -> NewCreditGrant {
    NewCreditGrant {
        user_id: user.map(str::to_owned),
        tenant_id: "acme".into(),
        feature_key: "calls".into(),
        amount,
        priority: None,
        effective_at: None,
        expires_at: None,
        rollover: None,
        metadata: serde_json::Value::Null,
    }
}

/// (usage, balance, whether the check answered the user's own meter).
async fn meter_of(e: &TestEngine, user: Option<&str>) -> (i64, Option<i64>, bool) {
    let d = e.check("acme", user, "calls").await;
    let m = d.meter.expect("a meter");
    (m.usage, m.balance, d.meter_user)
}

async fn a_users_own_allocation_is_its_own_meter(e: &TestEngine) {
    setup(e).await;
    // One batch mixing a user with a meter of its own, a user without and the account.
    let (outcomes, _) = e
        .engine
        .record_usage(vec![
            usage(Some("ada"), "u1", 3),
            usage(Some("bob"), "u2", 5),
            usage(None, "u3", 1),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [UsageOutcome::Recorded; 3]);
    assert_eq!(meter_of(e, Some("ada")).await, (3, Some(7), true));
    assert_eq!(meter_of(e, Some("bob")).await, (6, Some(94), false));
    assert_eq!(meter_of(e, None).await, (6, Some(94), false));
    let d = e.check("acme", Some("ada"), "calls").await;
    assert_eq!(
        d.allocation,
        Some(Allocation::MaxCount(Limit::Finite(10))),
        "the amount issued to ada's meter"
    );
    // The entitlements listing of a user shows the meter the user draws on, named.
    for (user, expected) in [("ada", (3, Some("ada"))), ("bob", (6, None))] {
        let listed = crate::app::checks::account_entitlements(
            &e.engine,
            &crate::domain::Subject::user("acme", user),
            None,
            0,
        )
        .await
        .unwrap()
        .value;
        let (reading, owner, named) = listed[0].1.clone().unwrap();
        assert_eq!(owner, None);
        assert_eq!(
            (reading.map(|r| r.usage).unwrap_or(-1), named.as_deref()),
            expected,
            "{user}"
        );
    }

    let (refused, _) = e
        .engine
        .consume_usage(consumption(Some("ada"), "c1", 8))
        .await
        .unwrap();
    assert_eq!(
        (refused.consumed, refused.justification),
        (false, Some(Justification::InsufficientBalance)),
        "ada's 7 left, not the account's 94"
    );
    let (consumed, _) = e
        .engine
        .consume_usage(consumption(Some("ada"), "c2", 7))
        .await
        .unwrap();
    assert!(consumed.consumed);
    assert_eq!(consumed.meter_user.as_deref(), Some("ada"));
    assert_eq!(consumed.meter.unwrap().balance, Some(0));
    let (bobs, _) = e
        .engine
        .consume_usage(consumption(Some("bob"), "c3", 4))
        .await
        .unwrap();
    assert_eq!((bobs.consumed, bobs.meter_user), (true, None));
    assert_eq!(meter_of(e, None).await, (10, Some(90), false));

    let (held, answer, _) = e
        .engine
        .reserve(NewReservation {
            id: "r1".into(),
            tenant_id: "acme".into(),
            user_id: Some("ada".into()),
            feature_key: "calls".into(),
            amount: 1,
            ttl: TimeDelta::minutes(5),
        })
        .await
        .unwrap();
    assert_eq!(
        (
            answer.held,
            answer.justification,
            answer.meter_user.as_deref()
        ),
        (false, Some(Justification::UsageLimitReached), Some("ada"))
    );
    assert_eq!(held.meter_user.as_deref(), Some("ada"));

    // Credits: on ada's own meter; bob has none to credit.
    let topped = e
        .engine
        .create_credit_grant(credit(Some("ada"), 5))
        .await
        .unwrap();
    assert_eq!(topped.value.user_id.as_deref(), Some("ada"));
    assert_eq!(meter_of(e, Some("ada")).await, (10, Some(5), true));
    assert_eq!(meter_of(e, None).await, (10, Some(90), false));
    let err = e
        .engine
        .create_credit_grant(credit(Some("bob"), 5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DomainError::NoUserMeter { user_id, .. } if user_id == "bob"),
        "{err:?}"
    );
    let (held, answer, _) = e
        .engine
        .reserve(NewReservation {
            id: "r2".into(),
            tenant_id: "acme".into(),
            user_id: Some("ada".into()),
            feature_key: "calls".into(),
            amount: 2,
            ttl: TimeDelta::minutes(5),
        })
        .await
        .unwrap();
    assert!(answer.held);
    let settled = e.engine.commit_reservation(held.id, None).await.unwrap();
    assert_eq!((settled.meter.usage, settled.meter.balance), (12, Some(3)));
    e.engine.void_credit_grant(topped.value.id).await.unwrap();
    assert_eq!(
        meter_of(e, Some("ada")).await,
        (12, Some(0), true),
        "voiding takes what remained of ada's credit, not the account's"
    );

    // Reads and resets select a user's meter with its id; a user without one is 404.
    let view = e
        .engine
        .meter_view("acme", Some("ada"), "calls", 0)
        .await
        .unwrap();
    assert_eq!(
        (view.reading.usage, view.user.as_deref(), view.allowance),
        (12, Some("ada"), Limit::Finite(10))
    );
    let account = e.engine.meter_view("acme", None, "calls", 0).await.unwrap();
    assert_eq!((account.reading.usage, account.user), (10, None));
    let err = e
        .engine
        .meter_view("acme", Some("bob"), "calls", 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DomainError::NotFound { kind: "user meter", id } if id == "bob"),
        "{err:?}"
    );
    // Points end now: the draws above are all at the start.
    e.clock.advance(TimeDelta::hours(1));
    let from = t0() - TimeDelta::days(1);
    let to = t0() + TimeDelta::days(1);
    let points = e
        .engine
        .balance_points("acme", Some("ada"), "calls", from, to)
        .await
        .unwrap();
    let ids: Vec<Option<String>> = points.iter().map(|p| p.id.clone()).collect();
    assert!(ids.contains(&Some("u1".into())) && ids.contains(&Some("c2".into())));
    assert!(
        !ids.contains(&Some("u2".into())),
        "bob's draw is the account's"
    );
    let account_points = e
        .engine
        .balance_points("acme", None, "calls", from, to)
        .await
        .unwrap();
    assert!(account_points.iter().all(|p| p.id.as_deref() != Some("u1")));

    let reset = e
        .engine
        .reset_meter("acme", Some("ada"), "calls")
        .await
        .unwrap();
    assert_eq!(reset.value.closed.usage, 12);
    assert_eq!(meter_of(e, Some("ada")).await, (0, Some(10), true));
    assert_eq!(
        meter_of(e, None).await.0,
        10,
        "the account's meter is not reset"
    );
    let periods = e
        .engine
        .meter_periods("acme", Some("ada"), "calls", from, to)
        .await
        .unwrap();
    assert_eq!(periods.len(), 1);
    assert!(
        e.engine
            .meter_periods("acme", None, "calls", from, to)
            .await
            .unwrap()
            .is_empty()
    );
    let err = e
        .engine
        .reset_meter("acme", Some("bob"), "calls")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        DomainError::NotFound {
            kind: "user meter",
            ..
        }
    ));
}

#[tokio::test]
async fn a_users_own_allocation_is_its_own_meter_on_sqlite() {
    a_users_own_allocation_is_its_own_meter(&engine().await).await;
}

#[tokio::test]
async fn a_users_own_allocation_is_its_own_meter_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    a_users_own_allocation_is_its_own_meter(&engine_on(&url, ManualClock::new(t0())).await).await;
}

async fn revoking_the_users_grant_sends_its_next_draw_to_the_account(e: &TestEngine) {
    let seat = setup(e).await;
    e.engine
        .record_usage(vec![usage(Some("ada"), "u1", 4)])
        .await
        .unwrap();
    e.clock.advance(TimeDelta::minutes(1));
    e.engine.revoke_grant(seat, None, None).await.unwrap();
    let (answer, _) = e
        .engine
        .consume_usage(consumption(Some("ada"), "c1", 6))
        .await
        .unwrap();
    assert_eq!((answer.consumed, answer.meter_user), (true, None));
    assert_eq!(
        answer.meter.unwrap().usage,
        6,
        "drawn on the account's meter"
    );
    assert_eq!(meter_of(e, Some("ada")).await, (6, Some(94), false));
    // What ada drew stays on her meter, which keeps answering by her id.
    let kept = e
        .engine
        .meter_view("acme", Some("ada"), "calls", 0)
        .await
        .unwrap();
    assert_eq!((kept.reading.usage, kept.allowance), (4, Limit::Finite(0)));
    // No credit on a meter she no longer draws on.
    assert!(matches!(
        e.engine.create_credit_grant(credit(Some("ada"), 1)).await,
        Err(DomainError::NoUserMeter { .. })
    ));
}

#[tokio::test]
async fn revoking_the_users_grant_sends_its_next_draw_to_the_account_on_sqlite() {
    revoking_the_users_grant_sends_its_next_draw_to_the_account(&engine().await).await;
}

#[tokio::test]
async fn revoking_the_users_grant_sends_its_next_draw_to_the_account_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    revoking_the_users_grant_sends_its_next_draw_to_the_account(
        &engine_on(&url, ManualClock::new(t0())).await,
    )
    .await;
}

/// Two replicas on one PostgreSQL, consumers on a user's own meter and on the account's at
/// once (group commits mixing both keys): each meter lets exactly what fits, and a replica
/// loading its index from the database answers the user's meter too.
#[tokio::test]
async fn parallel_consumers_on_a_users_meter_never_overdraw_it() {
    let url = tenantry_common::testing::postgres().create_database().await;
    let clock = ManualClock::new(t0());
    let a = engine_on(&url, clock.clone()).await;
    setup(&a).await;
    // ada's own allocation raised to 100, as the account's.
    a.plan("wide", calls(100)).await;
    a.grant("wide", "acme", Some("ada")).await;
    let b = engine_on(&url, clock.clone()).await;
    b.engine.catch_up().await.unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..80 {
        let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
        let user = (i % 4 < 2).then_some("ada");
        tasks.spawn(async move {
            let answer = replica
                .engine
                .consume_usage(consumption(user, &format!("p{i}"), 3))
                .await
                .unwrap()
                .0;
            (user, answer.consumed)
        });
    }
    let answers = tasks.join_all().await;
    let consumed = |who: Option<&str>| answers.iter().filter(|(u, c)| *u == who && *c).count();
    assert_eq!(
        (consumed(Some("ada")), consumed(None)),
        (33, 33),
        "100 / 3 on each"
    );
    a.engine.catch_up().await.unwrap();
    assert_eq!(meter_of(&a, Some("ada")).await, (99, Some(1), true));
    assert_eq!(meter_of(&a, None).await, (99, Some(1), false));
    let fresh = engine_on(&url, clock.clone()).await;
    assert_eq!(meter_of(&fresh, Some("ada")).await, (99, Some(1), true));
}

/// An id twice in one batch counts once, as its first event: the account's events draw on
/// several meters (a user's own, the account's), and the batch was decided meter by meter —
/// the account's meter first — so a later event of the id on the account's meter was
/// recorded and the first, on the user's, answered DUPLICATE.
#[tokio::test]
async fn an_id_twice_in_a_batch_counts_as_its_first_event_whichever_meter_it_draws_on() {
    let e = engine().await;
    setup(&e).await;
    let (outcomes, _) = e
        .engine
        .record_usage(vec![usage(Some("ada"), "e1", 4), usage(None, "e1", 30)])
        .await
        .unwrap();
    assert_eq!(outcomes, [UsageOutcome::Recorded, UsageOutcome::Duplicate]);
    assert_eq!(meter_of(&e, Some("ada")).await, (4, Some(6), true));
    assert_eq!(meter_of(&e, None).await, (0, Some(100), false));
}
