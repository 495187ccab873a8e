//! Pools: a plan inheriting to sub-accounts allocates a metered feature to its grantee's
//! meter, which its sub-accounts without an allocation of their own draw on (SQLite and
//! PostgreSQL, manual clock).

use std::sync::Arc;

use chrono::TimeDelta;

use super::tests::metered_feature;
use super::*;
use crate::app::tenant_sync::{AccountChange, FeedEvent};
use crate::app::testing::{TestEngine, engine, engine_on, new_plan, t0};
use crate::clock::ManualClock;
use crate::domain::metering::NewConsumption;
use crate::domain::metering::NewReservation;
use crate::domain::{Allocation, Justification, PlanFeature};

fn calls(n: u64) -> Vec<PlanFeature> {
    vec![PlanFeature {
        feature_key: "calls".into(),
        allocation: Some(Allocation::MaxCount(Limit::Finite(n))),
    }]
}

/// `org` ← `team`, `org` ← `squad`, and `solo` apart; `org` holds `pool` (100 `calls` a
/// month, inherited by sub-accounts); `own` (10 a month) does not inherit.
async fn setup(e: &TestEngine) -> Uuid {
    e.account("org", None).await;
    e.account("team", Some("org")).await;
    e.account("squad", Some("org")).await;
    e.account("solo", None).await;
    metered_feature(e, "calls", false).await;
    let mut pool = new_plan("pool", calls(100));
    pool.inherit_to_sub_accounts = true;
    e.engine.create_plan(pool, None).await.expect("pool plan");
    e.plan("own", calls(10)).await;
    e.grant("pool", "org", None).await.id
}

fn consumption(tenant: &str, id: &str, amount: i64) -> NewConsumption {
    NewConsumption {
        id: id.into(),
        tenant_id: tenant.into(),
        user_id: None,
        feature_key: "calls".into(),
        amount,
    }
}

fn usage(tenant: &str, id: &str, amount: i64) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: tenant.into(),
        user_id: None,
        feature_key: "calls".into(),
        amount,
        at: None,
        unique: None,
    }
}

fn credit(tenant: &str, amount: i64) -> NewCreditGrant {
    NewCreditGrant {
        user_id: None,
        tenant_id: tenant.into(),
        feature_key: "calls".into(),
        amount,
        priority: None,
        effective_at: None,
        expires_at: None,
        rollover: None,
        metadata: serde_json::Value::Null,
    }
}

async fn usage_of(e: &TestEngine, tenant: &str) -> (i64, Option<i64>) {
    let m = e.check(tenant, None, "calls").await.meter.unwrap();
    (m.usage, m.balance)
}

async fn move_under(e: &TestEngine, tenant: &str, parent: Option<&str>) {
    e.engine
        .apply_feed_events(&[FeedEvent {
            sequence: 1_000 + e.engine.revision(),
            change: AccountChange::Live {
                tenant_id: tenant.into(),
                parent_id: parent.map(str::to_owned),
            },
            notice: None,
        }])
        .await
        .expect("move the account");
}

async fn a_pool_is_drawn_by_its_sub_accounts_and_counted_on_its_owner(e: &TestEngine) {
    setup(e).await;
    let (outcomes, _) = e
        .engine
        .record_usage(vec![usage("team", "a", 30), usage("squad", "a", 5)])
        .await
        .unwrap();
    // Ids are each account's: both count, on the one meter.
    assert_eq!(outcomes, [UsageOutcome::Recorded, UsageOutcome::Recorded]);
    let (answer, _) = e
        .engine
        .consume_usage(consumption("squad", "c1", 45))
        .await
        .unwrap();
    assert!(answer.consumed);
    assert_eq!(answer.meter_owner.as_deref(), Some("org"));
    assert_eq!(answer.meter.unwrap().balance, Some(20));
    for tenant in ["org", "team", "squad"] {
        assert_eq!(usage_of(e, tenant).await, (80, Some(20)), "{tenant}");
    }
    let d = e.check("team", None, "calls").await;
    assert_eq!(d.meter_pool, Some(1), "a check says it answered the pool");
    assert_eq!(e.check("org", None, "calls").await.meter_pool, None);
    let (refused, _) = e
        .engine
        .consume_usage(consumption("team", "c2", 21))
        .await
        .unwrap();
    assert_eq!(
        (refused.consumed, refused.justification),
        (false, Some(Justification::InsufficientBalance))
    );
    // A pool's credits are its owner's; a sub-account drawing on it has no meter to credit.
    let err = e
        .engine
        .create_credit_grant(credit("team", 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DomainError::MeterPooled { owner, .. } if owner == "org"),
        "{err:?}"
    );
    assert!(matches!(
        e.engine.reset_meter("squad", None, "calls").await,
        Err(DomainError::MeterPooled { .. })
    ));
    e.engine
        .create_credit_grant(credit("org", 10))
        .await
        .unwrap();
    assert_eq!(usage_of(e, "team").await, (80, Some(30)));
    // A hold by a sub-account is on the pool, and counts for every account drawing on it.
    let (held, answer, _) = e
        .engine
        .reserve(NewReservation {
            id: "r1".into(),
            tenant_id: "squad".into(),
            user_id: None,
            feature_key: "calls".into(),
            amount: 25,
            ttl: TimeDelta::minutes(5),
        })
        .await
        .unwrap();
    assert!(answer.held);
    assert_eq!(held.meter_owner.as_deref(), Some("org"));
    assert_eq!(usage_of(e, "team").await, (80, Some(5)));
    let settled = e
        .engine
        .commit_reservation(held.id, Some(20))
        .await
        .unwrap();
    assert_eq!(settled.meter.usage, 100);
    assert_eq!(usage_of(e, "org").await, (100, Some(10)));
    // The entitlements listing shows the pool's meter, named.
    let listed = crate::app::checks::account_entitlements(
        &e.engine,
        &crate::domain::Subject::account("team"),
        None,
        0,
    )
    .await
    .unwrap()
    .value;
    let (calls, meter) = &listed[0];
    assert_eq!(calls.key, "calls");
    let (reading, owner, user) = meter.clone().unwrap();
    assert_eq!(
        (reading.map(|r| r.usage), owner.as_deref(), user),
        (Some(100), Some("org"), None)
    );
    let view = e.engine.meter_view("team", None, "calls", 0).await.unwrap();
    assert_eq!(view.owner.as_deref(), Some("org"));
    assert_eq!(
        (view.reading.usage, view.allowance),
        (100, Limit::Finite(100))
    );
    assert_eq!(
        e.engine
            .meter_view("org", None, "calls", 0)
            .await
            .unwrap()
            .owner,
        None
    );
    // Outside the tree, nothing.
    let (solo, _) = e
        .engine
        .consume_usage(consumption("solo", "c3", 1))
        .await
        .unwrap();
    assert_eq!(solo.justification, Some(Justification::MissingFeature));
}

#[tokio::test]
async fn a_pool_is_drawn_by_its_sub_accounts_and_counted_on_its_owner_on_sqlite() {
    a_pool_is_drawn_by_its_sub_accounts_and_counted_on_its_owner(&engine().await).await;
}

#[tokio::test]
async fn a_pool_is_drawn_by_its_sub_accounts_and_counted_on_its_owner_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    a_pool_is_drawn_by_its_sub_accounts_and_counted_on_its_owner(
        &engine_on(&url, ManualClock::new(t0())).await,
    )
    .await;
}

async fn an_own_allocation_is_drawn_alone(e: &TestEngine) {
    setup(e).await;
    e.grant("own", "team", None).await;
    let (first, _) = e
        .engine
        .consume_usage(consumption("team", "c1", 10))
        .await
        .unwrap();
    assert!(first.consumed);
    assert_eq!(first.meter_owner, None);
    // Its own 10 are spent; the pool's 100 are not its to draw.
    let (refused, _) = e
        .engine
        .consume_usage(consumption("team", "c2", 1))
        .await
        .unwrap();
    assert_eq!(
        refused.justification,
        Some(Justification::UsageLimitReached)
    );
    assert_eq!(usage_of(e, "team").await, (10, Some(0)));
    assert_eq!(usage_of(e, "org").await, (0, Some(100)));
    let d = e.check("team", None, "calls").await;
    assert_eq!(
        (d.meter_pool, d.allocation),
        (None, Some(Allocation::MaxCount(Limit::Finite(10))))
    );
    // Its own meter takes credits.
    e.engine
        .create_credit_grant(credit("team", 5))
        .await
        .unwrap();
    assert_eq!(usage_of(e, "team").await, (10, Some(5)));
}

#[tokio::test]
async fn an_own_allocation_is_drawn_alone_on_sqlite() {
    an_own_allocation_is_drawn_alone(&engine().await).await;
}

#[tokio::test]
async fn an_own_allocation_is_drawn_alone_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    an_own_allocation_is_drawn_alone(&engine_on(&url, ManualClock::new(t0())).await).await;
}

async fn moving_or_revoking_changes_the_owner_for_the_next_draw(e: &TestEngine) {
    let pool = setup(e).await;
    e.engine
        .consume_usage(consumption("squad", "c1", 40))
        .await
        .unwrap();
    let (held, _, _) = e
        .engine
        .reserve(NewReservation {
            id: "r1".into(),
            tenant_id: "squad".into(),
            user_id: None,
            feature_key: "calls".into(),
            amount: 10,
            ttl: TimeDelta::minutes(5),
        })
        .await
        .unwrap();
    // Moved under solo (no allocation): nothing to draw on; what it drew stays on org's.
    move_under(e, "squad", Some("solo")).await;
    let (refused, _) = e
        .engine
        .consume_usage(consumption("squad", "c2", 1))
        .await
        .unwrap();
    assert_eq!(refused.justification, Some(Justification::MissingFeature));
    assert_eq!(usage_of(e, "org").await, (40, Some(50)));
    // The hold settles where it is held.
    let settled = e.engine.commit_reservation(held.id, None).await.unwrap();
    assert_eq!((settled.meter.usage, settled.meter.held), (50, 0));
    assert_eq!(usage_of(e, "org").await, (50, Some(50)));
    // Back under org: the pool again.
    move_under(e, "squad", Some("org")).await;
    let (again, _) = e
        .engine
        .consume_usage(consumption("squad", "c3", 5))
        .await
        .unwrap();
    assert!(again.consumed);
    assert_eq!(usage_of(e, "org").await, (55, Some(45)));
    // The pool revoked: sub-accounts have nothing; org's meter keeps what was drawn.
    e.engine.revoke_grant(pool, None, None).await.unwrap();
    let (revoked, _) = e
        .engine
        .consume_usage(consumption("team", "c4", 1))
        .await
        .unwrap();
    assert_eq!(revoked.justification, Some(Justification::PlanRevoked));
    let view = e.engine.meter_view("org", None, "calls", 0).await.unwrap();
    assert_eq!((view.reading.usage, view.allowance), (55, Limit::Finite(0)));
    assert_eq!(
        e.engine
            .meter_view("team", None, "calls", 0)
            .await
            .unwrap()
            .owner,
        None
    );
}

#[tokio::test]
async fn moving_or_revoking_changes_the_owner_for_the_next_draw_on_sqlite() {
    moving_or_revoking_changes_the_owner_for_the_next_draw(&engine().await).await;
}

#[tokio::test]
async fn moving_or_revoking_changes_the_owner_for_the_next_draw_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    moving_or_revoking_changes_the_owner_for_the_next_draw(
        &engine_on(&url, ManualClock::new(t0())).await,
    )
    .await;
}

/// Two replicas on one PostgreSQL, consumers on two sub-accounts of one pool: they take turns
/// on the pool's row, so together they never exceed it.
#[tokio::test]
async fn parallel_consumers_across_sub_accounts_never_overdraw_the_pool() {
    let url = tenantry_common::testing::postgres().create_database().await;
    let clock = ManualClock::new(t0());
    let a = engine_on(&url, clock.clone()).await;
    setup(&a).await;
    let b = engine_on(&url, clock.clone()).await;
    b.engine.catch_up().await.unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
        let tenant = if i % 4 < 2 { "team" } else { "squad" };
        tasks.spawn(async move {
            replica
                .engine
                .consume_usage(consumption(tenant, &format!("p{i}"), 3))
                .await
                .unwrap()
                .0
                .consumed
        });
    }
    let consumed = tasks.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(consumed, 33, "100 / 3: exactly 33 fit");
    a.engine.catch_up().await.unwrap();
    assert_eq!(usage_of(&a, "org").await, (99, Some(1)));
}

/// A hold on a pool whose owner is deleted settles nowhere: the owner's meters take no
/// writes until it is reactivated (404 account, as for the account's own).
#[tokio::test]
async fn a_hold_on_a_deleted_owners_pool_is_not_settled() {
    let e = engine().await;
    setup(&e).await;
    let (held, answer, _) = e
        .engine
        .reserve(NewReservation {
            id: "r1".into(),
            tenant_id: "squad".into(),
            user_id: None,
            feature_key: "calls".into(),
            amount: 10,
            ttl: TimeDelta::minutes(5),
        })
        .await
        .unwrap();
    assert!(answer.held);
    e.delete_account("org").await;
    let err = e
        .engine
        .commit_reservation(held.id, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DomainError::NotFound { kind: "account", id } if id == "org"),
        "{err:?}"
    );
    e.reactivate_account("org", None).await;
    let settled = e.engine.commit_reservation(held.id, None).await.unwrap();
    assert_eq!(settled.meter.usage, 10);
}

/// The burn-down of a pool shows every account's draws on it, and a sub-account asking for
/// its own answers the pool's.
#[tokio::test]
async fn a_pools_burn_down_holds_its_sub_accounts_draws() {
    let url = tenantry_common::testing::postgres().create_database().await;
    for e in [
        engine().await,
        engine_on(&url, ManualClock::new(t0())).await,
    ] {
        setup(&e).await;
        e.clock.advance(TimeDelta::hours(1));
        e.engine
            .record_usage(vec![usage("team", "t1", 30)])
            .await
            .unwrap();
        e.clock.advance(TimeDelta::hours(1));
        e.engine
            .consume_usage(consumption("squad", "s1", 5))
            .await
            .unwrap();
        e.clock.advance(TimeDelta::hours(1));
        let from = t0() - TimeDelta::hours(1);
        let to = t0() + TimeDelta::days(1);
        let pool = e
            .engine
            .balance_points("org", None, "calls", from, to)
            .await
            .unwrap();
        let answered: Vec<_> = pool
            .iter()
            .map(|p| (p.id.clone(), p.meter.and_then(|m| m.balance)))
            .collect();
        assert_eq!(
            answered,
            [(Some("t1".into()), Some(70)), (Some("s1".into()), Some(65))]
        );
        let from_team = e
            .engine
            .balance_points("team", None, "calls", from, to)
            .await
            .unwrap();
        assert_eq!(from_team, pool);
    }
}
