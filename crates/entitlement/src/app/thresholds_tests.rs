//! Usage thresholds through the metering use-cases, on SQLite and PostgreSQL, with a manual
//! clock: what reaches the outbox, and how often.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::EntityTrait;
use serde_json::Value;
use tenantry_index::Metering;
use tenantry_index::metering::{Recurrence, UsagePeriod};

use crate::app::testing::{TestEngine, engine, engine_on, feature_doc, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewConsumption, NewCreditGrant, NewUsage};
use crate::domain::webhook::types;
use crate::domain::{Aggregation, Allocation, AllocationType, Grant, Limit, PlanFeature};
use crate::storage::entities::{usage_threshold, webhook_outbox};

/// A threshold event as found in the outbox: threshold, usage, balance, period start,
/// revision.
type Seen = (u64, i64, i64, DateTime<Utc>, u64);

async fn plan(e: &TestEngine, key: &str, calls: Limit) {
    e.plan(
        key,
        vec![PlanFeature {
            feature_key: "calls".into(),
            allocation: Some(Allocation::MaxCount(calls)),
        }],
    )
    .await;
}

/// `acme` on a plan issuing 100 `calls` a month (a hard limit; periods start on the 29th of
/// each month: t0 is June 1st), with an endpoint enabled when `webhooks`; answers the grant.
async fn setup(e: &TestEngine, webhooks: bool) -> Grant {
    e.account("acme", None).await;
    let mut doc = feature_doc("calls", AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, t0() - TimeDelta::days(3)),
        soft_limit: false,
        carry_overage: false,
    });
    e.engine.create_feature(doc, None).await.unwrap();
    plan(e, "api", Limit::Finite(100)).await;
    let grant = e.grant("api", "acme", None).await;
    if webhooks {
        e.webhook_endpoint().await;
    }
    grant
}

fn usage(id: &str, amount: i64) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: None,
        feature_key: "calls".into(),
        amount,
        at: None,
        unique: None,
    }
}

async fn record(e: &TestEngine, events: &[(&str, i64)]) -> u64 {
    e.engine
        .record_usage(events.iter().map(|(id, n)| usage(id, *n)).collect())
        .await
        .unwrap()
        .1
}

fn consumption(id: &str, amount: i64) -> NewConsumption {
    NewConsumption {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: None,
        feature_key: "calls".into(),
        amount,
    }
}

fn top_up(amount: i64) -> NewCreditGrant {
    NewCreditGrant {
        user_id: None,
        tenant_id: "acme".into(),
        feature_key: "calls".into(),
        amount,
        priority: None,
        effective_at: None,
        expires_at: None,
        rollover: None,
        metadata: Value::Null,
    }
}

/// Every threshold event in the outbox, in order (the test fails on a repeated ID).
async fn seen(e: &TestEngine) -> Vec<Seen> {
    let rows = webhook_outbox::Entity::find()
        .all(e.engine.store().connection())
        .await
        .unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut seen = Vec::new();
    for row in rows {
        let events: Vec<Value> = serde_json::from_str(&row.events).unwrap();
        for event in events {
            if event["type"] != types::USAGE_THRESHOLD {
                continue;
            }
            let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
            let id = body["id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "{id} sent twice");
            assert_eq!(event["id"], body["id"]);
            assert_eq!(body["type"], types::USAGE_THRESHOLD);
            assert_eq!(body["subject"], "acme");
            let data = &body["data"];
            assert_eq!(data["tenantId"], "acme");
            assert_eq!(data["featureKey"], "calls");
            let start: DateTime<Utc> = data["periodStart"].as_str().unwrap().parse().unwrap();
            let end: DateTime<Utc> = data["periodEnd"].as_str().unwrap().parse().unwrap();
            assert!(start < end && end - start <= TimeDelta::days(31), "{body}");
            seen.push((
                data["threshold"].as_u64().unwrap(),
                data["usage"].as_i64().unwrap(),
                data["balance"].as_i64().unwrap(),
                start,
                body["tenantryrevision"].as_u64().unwrap(),
            ));
        }
    }
    seen
}

/// The thresholds seen, with the usage and balance each reported.
fn levels(seen: &[Seen]) -> Vec<(u64, i64, i64)> {
    seen.iter().map(|s| (s.0, s.1, s.2)).collect()
}

async fn once_per_period_each_reached_one_fires(e: TestEngine) {
    setup(&e, true).await;
    let period = t0() - TimeDelta::days(3);
    record(&e, &[("a", 30)]).await;
    assert!(seen(&e).await.is_empty());
    // One batch crossing 50 % and 80 %: both, with the write's revision.
    let revision = record(&e, &[("b", 25), ("c", 30)]).await;
    assert_eq!(
        seen(&e).await,
        [
            (50, 85, 15, period, revision),
            (80, 85, 15, period, revision)
        ]
    );
    // Beyond, below the next: nothing. The same events again: nothing counted, nothing sent.
    record(&e, &[("d", 5)]).await;
    record(&e, &[("b", 25), ("c", 30), ("d", 5)]).await;
    assert_eq!(seen(&e).await.len(), 2);
    // A consumption taking the balance to 0 is 100 %.
    let (answer, _) = e.engine.consume_usage(consumption("k", 10)).await.unwrap();
    assert!(answer.consumed);
    let all = seen(&e).await;
    assert_eq!(all[2], (100, 100, 0, period, answer.revision));
    // A top-up brings the share down (100 of 150); climbing back past 80 % sends nothing
    // again this period.
    e.engine.create_credit_grant(top_up(50)).await.unwrap();
    record(&e, &[("e", 25)]).await;
    assert_eq!(seen(&e).await.len(), 3);
    // The next period: its own thresholds, from 50 % again (70 of 100, or of 125 if the
    // top-up's rest rolled over).
    e.clock.advance(TimeDelta::days(31));
    record(&e, &[("f", 70)]).await;
    let all = seen(&e).await;
    assert_eq!(all.len(), 4);
    let next = all[3];
    assert_eq!((next.0, next.1), (50, 70));
    assert!(next.3 > period, "{next:?}");
    // Only the latest period's records are kept.
    let kept = usage_threshold::Entity::find()
        .all(e.engine.store().connection())
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[tokio::test]
async fn thresholds_fire_once_per_period_on_sqlite() {
    once_per_period_each_reached_one_fires(engine().await).await;
}

#[tokio::test]
async fn thresholds_fire_once_per_period_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    once_per_period_each_reached_one_fires(engine_on(&url, ManualClock::new(t0())).await).await;
}

#[tokio::test]
async fn usage_past_the_allowance_fires_up_to_100_once_and_unlimited_fires_nothing() {
    let e = engine().await;
    setup(&e, true).await;
    record(&e, &[("a", 130)]).await;
    assert_eq!(
        levels(&seen(&e).await),
        [(50, 130, 0), (80, 130, 0), (100, 130, 0)]
    );
    record(&e, &[("b", 100)]).await;
    assert_eq!(seen(&e).await.len(), 3);
    // Unlimited: no share of anything.
    let e = engine().await;
    e.account("acme", None).await;
    setup_unlimited(&e).await;
    record(&e, &[("a", 1_000_000)]).await;
    assert!(seen(&e).await.is_empty());
}

async fn setup_unlimited(e: &TestEngine) {
    let mut doc = feature_doc("calls", AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, t0()),
        soft_limit: false,
        carry_overage: false,
    });
    e.engine.create_feature(doc, None).await.unwrap();
    plan(e, "api", Limit::Unlimited).await;
    e.grant("api", "acme", None).await;
    e.webhook_endpoint().await;
}

#[tokio::test]
async fn a_void_or_a_downgrade_that_leaves_too_little_fires_at_the_meters_write() {
    let e = engine().await;
    setup(&e, true).await;
    let credit = e
        .engine
        .create_credit_grant(top_up(100))
        .await
        .unwrap()
        .value;
    // 90 of 200: under half.
    record(&e, &[("a", 90)]).await;
    assert!(seen(&e).await.is_empty());
    // Voided: 90 of 100 (what was drawn from it stays drawn: the allowance went first).
    let voided = e.engine.void_credit_grant(credit.id).await.unwrap();
    assert_eq!(
        seen(&e).await,
        [
            (50, 90, 10, t0() - TimeDelta::days(3), voided.revision),
            (80, 90, 10, t0() - TimeDelta::days(3), voided.revision)
        ]
    );

    // A downgrade writes no meter: its share is announced by the meter's next write.
    let e = engine().await;
    let big = setup(&e, true).await;
    plan(&e, "small", Limit::Finite(50)).await;
    record(&e, &[("a", 45)]).await;
    assert!(seen(&e).await.is_empty());
    e.grant("small", "acme", None).await;
    e.engine
        .revoke_grant(big.id, Some("tester"), None)
        .await
        .unwrap();
    assert!(seen(&e).await.is_empty());
    e.clock.advance(TimeDelta::seconds(1));
    record(&e, &[("b", 1)]).await;
    assert_eq!(levels(&seen(&e).await), [(50, 46, 4), (80, 46, 4)]);
}

#[tokio::test]
async fn without_an_enabled_endpoint_nothing_is_recorded() {
    let e = engine().await;
    setup(&e, false).await;
    record(&e, &[("a", 90)]).await;
    let kept = usage_threshold::Entity::find()
        .all(e.engine.store().connection())
        .await
        .unwrap();
    assert!(kept.is_empty(), "{kept:?}");
    assert!(seen(&e).await.is_empty());
    // An endpoint added later hears of the open period's thresholds at the next write.
    e.webhook_endpoint().await;
    record(&e, &[("b", 1)]).await;
    assert_eq!(levels(&seen(&e).await), [(50, 91, 9), (80, 91, 9)]);
}

/// Two replicas on one PostgreSQL consume a hard limit to its end at once: each threshold
/// is sent exactly once between them.
#[tokio::test]
async fn two_replicas_consuming_at_once_send_each_threshold_once() {
    let url = tenantry_common::testing::postgres().create_database().await;
    let clock = ManualClock::new(t0());
    let a = engine_on(&url, clock.clone()).await;
    setup(&a, true).await;
    let b = engine_on(&url, clock.clone()).await;
    b.engine.catch_up().await.unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            replica
                .engine
                .consume_usage(consumption(&format!("p{i}"), 4))
                .await
                .unwrap()
                .0
                .consumed
        });
    }
    let consumed = tasks.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(consumed, 25);
    let all = seen(&a).await;
    let mut thresholds: Vec<u64> = all.iter().map(|s| s.0).collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, [50, 80, 100], "{all:?}");
    // Each reported where the write that reached it left the meter (usage a multiple of 4).
    for (threshold, usage, balance, ..) in all {
        assert_eq!(usage + balance, 100);
        assert!(usage as u64 >= threshold && usage % 4 == 0);
    }
}
