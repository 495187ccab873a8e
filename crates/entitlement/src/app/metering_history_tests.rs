//! Usage history through the use-case, on SQLite and PostgreSQL, with a manual clock.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tenantry_index::Metering;
use tenantry_index::metering::{Recurrence, UsagePeriod};

use crate::app::tenant_sync::{AccountChange, FeedEvent};
use crate::app::testing::{TestEngine, engine, engine_on, feature_doc, invalid_field, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewConsumption, NewUsage, UsageOutcome};
use crate::domain::usage_history::{HistoryQuery, WindowSize};
use crate::domain::{Aggregation, Allocation, AllocationType, DomainError, Limit, PlanFeature};

/// Both stores: the aggregation is SQL, so each test runs on each.
async fn engines() -> Vec<TestEngine> {
    let url = tenantry_common::testing::postgres().create_database().await;
    vec![
        engine().await,
        engine_on(&url, ManualClock::new(t0())).await,
    ]
}

fn at(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, h, 0, 0).unwrap()
}

/// Periods of a month from 29 May 12:00 (t0 is 1 June 12:00).
fn anchor() -> DateTime<Utc> {
    t0() - TimeDelta::days(3)
}

async fn metered(e: &TestEngine, key: &str, aggregation: Aggregation) {
    let mut doc = feature_doc(key, AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "unit".into(),
        aggregation,
        period: UsagePeriod::new(Recurrence::MONTH, anchor()),
        soft_limit: false,
        carry_overage: false,
    });
    e.engine.create_feature(doc, None).await.expect("feature");
}

/// `acme` on a plan issuing 100 of each feature a month.
async fn setup(e: &TestEngine, features: &[(&str, Aggregation)]) {
    e.account("acme", None).await;
    let mut allocations = Vec::new();
    for (key, aggregation) in features {
        metered(e, key, *aggregation).await;
        allocations.push(PlanFeature {
            feature_key: (*key).into(),
            allocation: Some(Allocation::MaxCount(Limit::Finite(100))),
        });
    }
    e.plan("plan", allocations).await;
    e.grant("plan", "acme", None).await;
}

fn usage(id: &str, feature: &str, amount: i64, when: Option<DateTime<Utc>>) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: None,
        feature_key: feature.into(),
        amount,
        at: when,
        unique: None,
    }
}

fn query(
    feature: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    window: WindowSize,
) -> HistoryQuery {
    HistoryQuery {
        tenant_id: "acme".into(),
        feature_key: feature.into(),
        from,
        to,
        window,
        user_id: None,
    }
}

async fn history(e: &TestEngine, q: HistoryQuery) -> Vec<(DateTime<Utc>, DateTime<Utc>, i64)> {
    e.engine
        .usage_history(&q)
        .await
        .expect("history")
        .windows
        .into_iter()
        .map(|w| (w.start, w.end, w.usage))
        .collect()
}

#[tokio::test]
async fn usage_per_window_counts_late_events_where_they_happened_and_refusals_not_at_all() {
    for e in engines().await {
        setup(&e, &[("calls", Aggregation::Sum)]).await;
        let mut by_u1 = usage("c", "calls", 7, None);
        by_u1.user_id = Some("u1".into());
        e.engine
            .record_usage(vec![
                usage("a", "calls", 10, None),
                usage("b", "calls", 5, Some(t0() - TimeDelta::hours(1))),
                by_u1,
            ])
            .await
            .unwrap();
        e.clock.advance(TimeDelta::days(1));
        e.engine
            .record_usage(vec![usage("d", "calls", 20, None)])
            .await
            .unwrap();
        let consume = |id: &str, amount| NewConsumption {
            id: id.into(),
            tenant_id: "acme".into(),
            user_id: None,
            feature_key: "calls".into(),
            amount,
        };
        assert!(
            e.engine
                .consume_usage(consume("k1", 8))
                .await
                .unwrap()
                .0
                .consumed
        );
        // 50 used of 100: refused, and stored with nothing counted.
        assert!(
            !e.engine
                .consume_usage(consume("k2", 1_000))
                .await
                .unwrap()
                .0
                .consumed
        );
        // The next period; an event of 2 June arrives late.
        e.clock.advance(TimeDelta::days(30));
        let (outcomes, _) = e
            .engine
            .record_usage(vec![
                usage("late", "calls", 3, Some(at(6, 2, 13))),
                usage("now", "calls", 4, None),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes, [UsageOutcome::Late, UsageOutcome::Recorded]);

        let days = history(
            &e,
            query("calls", at(5, 31, 0), at(6, 3, 0), WindowSize::Day),
        )
        .await;
        assert_eq!(
            days,
            [
                (at(5, 31, 0), at(6, 1, 0), 0),
                (at(6, 1, 0), at(6, 2, 0), 22),
                (at(6, 2, 0), at(6, 3, 0), 31),
            ]
        );
        let periods = history(
            &e,
            query("calls", anchor(), at(7, 29, 12), WindowSize::Period),
        )
        .await;
        assert_eq!(
            periods,
            [
                (anchor(), at(6, 29, 12), 53),
                (at(6, 29, 12), at(7, 29, 12), 4)
            ]
        );
        let months = history(
            &e,
            query("calls", at(5, 1, 0), at(8, 1, 0), WindowSize::Month),
        )
        .await;
        let usage: Vec<i64> = months.iter().map(|w| w.2).collect();
        assert_eq!(usage, [0, 53, 4]);
        let mut only_u1 = query("calls", anchor(), at(7, 29, 12), WindowSize::Period);
        only_u1.user_id = Some("u1".into());
        let usage: Vec<i64> = history(&e, only_u1).await.iter().map(|w| w.2).collect();
        assert_eq!(usage, [7, 0]);
    }
}

#[tokio::test]
async fn max_takes_the_largest_amount_and_unique_count_the_distinct_values_per_window() {
    for e in engines().await {
        setup(
            &e,
            &[
                ("seats", Aggregation::Max),
                ("users", Aggregation::UniqueCount),
            ],
        )
        .await;
        let seen = |id: &str, who: &str, when| {
            let mut event = usage(id, "users", 1, Some(when));
            event.unique = Some(who.into());
            event
        };
        e.clock.advance(TimeDelta::days(1));
        e.engine
            .record_usage(vec![
                usage("s1", "seats", 5, Some(t0())),
                usage("s2", "seats", 9, Some(t0() + TimeDelta::hours(1))),
                usage("s3", "seats", 3, Some(t0() + TimeDelta::hours(2))),
                usage("s4", "seats", 4, None),
                seen("u1", "ann", t0()),
                seen("u2", "bob", t0()),
                seen("u3", "ann", e.engine.now()),
                seen("u4", "cat", e.engine.now()),
            ])
            .await
            .unwrap();
        let day = |feature| query(feature, at(6, 1, 0), at(6, 3, 0), WindowSize::Day);
        let period = |feature| query(feature, anchor(), at(6, 29, 12), WindowSize::Period);
        let values = |windows: Vec<(DateTime<Utc>, DateTime<Utc>, i64)>| {
            windows.iter().map(|w| w.2).collect::<Vec<_>>()
        };
        assert_eq!(values(history(&e, day("seats")).await), [9, 4]);
        assert_eq!(values(history(&e, period("seats")).await), [9]);
        assert_eq!(values(history(&e, day("users")).await), [2, 2]);
        // The period's distinct count is the meter's usage.
        assert_eq!(values(history(&e, period("users")).await), [3]);
        let meter = e.engine.meter_view("acme", None, "users", 0).await.unwrap();
        assert_eq!(meter.reading.usage, 3);
    }
}

#[tokio::test]
async fn bad_ranges_unknown_features_and_deleted_accounts_are_refused() {
    for e in engines().await {
        setup(&e, &[("calls", Aggregation::Sum)]).await;
        e.feature("seats", AllocationType::MaxCount, &[]).await;
        e.engine
            .record_usage(vec![usage("a", "calls", 10, None)])
            .await
            .unwrap();
        let day = |feature: &str| query(feature, at(6, 1, 0), at(6, 2, 0), WindowSize::Day);

        let backwards = query("calls", at(6, 2, 0), at(6, 2, 0), WindowSize::Day);
        let err = e.engine.usage_history(&backwards).await.unwrap_err();
        assert_eq!(invalid_field(&err), "to");
        // 1,000 hours fit; one more window does not.
        let bound = query(
            "calls",
            at(6, 1, 0),
            at(6, 1, 0) + TimeDelta::hours(1_000),
            WindowSize::Hour,
        );
        assert_eq!(
            e.engine.usage_history(&bound).await.unwrap().windows.len(),
            1_000
        );
        let mut too_many = bound.clone();
        too_many.to += TimeDelta::hours(1);
        let err = e.engine.usage_history(&too_many).await.unwrap_err();
        assert_eq!(invalid_field(&err), "window");
        let err = e.engine.usage_history(&day("nothing")).await.unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");
        let err = e.engine.usage_history(&day("seats")).await.unwrap_err();
        assert_eq!(invalid_field(&err), "feature_key");
        let mut nobody = day("calls");
        nobody.tenant_id = "nobody".into();
        let err = e.engine.usage_history(&nobody).await.unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");

        assert_eq!(history(&e, day("calls")).await[0].2, 10);
        e.engine
            .apply_feed_events(&[FeedEvent {
                sequence: 1_000,
                change: AccountChange::Deleted {
                    tenant_id: "acme".into(),
                },
                notice: None,
            }])
            .await
            .unwrap();
        let err = e.engine.usage_history(&day("calls")).await.unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");
    }
}
