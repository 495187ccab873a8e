//! Manual resets through the use-case, on SQLite and PostgreSQL, with a manual clock.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tenantry_index::Metering;
use tenantry_index::metering::{Recurrence, UsagePeriod};

use crate::app::testing::{TestEngine, engine, engine_on, feature_doc, invalid_field, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewCreditGrant, NewUsage, Rollover, UsageOutcome};
use crate::domain::usage_history::{CreditClose, HistoryQuery, WindowSize};
use crate::domain::{Aggregation, Allocation, AllocationType, DomainError, Limit, PlanFeature};

async fn engines() -> Vec<TestEngine> {
    let url = tenantry_common::testing::postgres().create_database().await;
    vec![
        engine().await,
        engine_on(&url, ManualClock::new(t0())).await,
    ]
}

/// Periods of a month from 29 May 12:00 (t0 is 1 June 12:00).
fn anchor() -> DateTime<Utc> {
    t0() - TimeDelta::days(3)
}

fn at(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, h, 0, 0).unwrap()
}

/// `acme` on a plan issuing 100 `calls` a month (hard limit, overage carried when `carry`).
async fn setup(e: &TestEngine, carry: bool) {
    e.account("acme", None).await;
    let mut doc = feature_doc("calls", AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, anchor()),
        soft_limit: carry,
        carry_overage: carry,
    });
    e.engine.create_feature(doc, None).await.expect("feature");
    e.plan(
        "api",
        vec![PlanFeature {
            feature_key: "calls".into(),
            allocation: Some(Allocation::MaxCount(Limit::Finite(100))),
        }],
    )
    .await;
    e.grant("api", "acme", None).await;
}

fn usage(id: &str, amount: i64, when: Option<DateTime<Utc>>) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: None,
        feature_key: "calls".into(),
        amount,
        at: when,
        unique: None,
    }
}

async fn balance(e: &TestEngine) -> Option<i64> {
    e.check("acme", None, "calls").await.meter.unwrap().balance
}

#[tokio::test]
async fn a_reset_closes_the_period_with_rollover_and_keeps_the_schedule() {
    for e in engines().await {
        setup(&e, false).await;
        let credit = e
            .engine
            .create_credit_grant(NewCreditGrant {
                user_id: None,
                tenant_id: "acme".into(),
                feature_key: "calls".into(),
                amount: 50,
                priority: None,
                effective_at: None,
                expires_at: None,
                rollover: Some(Rollover { min: 0, max: 20 }),
                metadata: serde_json::Value::Null,
            })
            .await
            .unwrap()
            .value;
        e.engine
            .record_usage(vec![usage("a", 120, None)])
            .await
            .unwrap();
        assert_eq!(balance(&e).await, Some(30));

        e.clock.advance(TimeDelta::days(2));
        let reset_at = e.engine.now();
        let reset = e.engine.reset_meter("acme", None, "calls").await.unwrap();
        assert!(reset.revision > 0);
        let closed = &reset.value.closed;
        assert_eq!(
            (closed.start, closed.end, closed.manual),
            (anchor(), reset_at, true)
        );
        assert_eq!(
            (closed.usage, closed.allowance, closed.allowance_used),
            (120, Some(100), 100)
        );
        // The credit's 30 rolled over capped at 20.
        assert_eq!(
            closed.credits,
            [CreditClose {
                id: credit.id,
                remaining: 30,
                carried: 20
            }]
        );
        let reading = reset.value.reading;
        assert_eq!((reading.balance, reading.usage), (Some(120), 0));
        // The new period ends where the scheduled one did.
        assert_eq!(
            (reading.period_start, reading.period_end),
            (reset_at, at(6, 29, 12))
        );
        assert_eq!(balance(&e).await, Some(120));

        // Usage from before the reset is late: counted in the closed period, not the new one.
        let (outcomes, _) = e
            .engine
            .record_usage(vec![
                usage("late", 7, Some(t0() + TimeDelta::hours(1))),
                usage("now", 5, None),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes, [UsageOutcome::Late, UsageOutcome::Recorded]);
        assert_eq!(balance(&e).await, Some(115));
        let history = e
            .engine
            .usage_history(&HistoryQuery {
                tenant_id: "acme".into(),
                feature_key: "calls".into(),
                from: anchor(),
                to: at(7, 29, 12),
                window: WindowSize::Period,
                user_id: None,
            })
            .await
            .unwrap();
        let windows: Vec<_> = history
            .windows
            .iter()
            .map(|w| (w.start, w.end, w.usage))
            .collect();
        assert_eq!(
            windows,
            [
                (anchor(), reset_at, 127),
                (reset_at, at(6, 29, 12), 5),
                (at(6, 29, 12), at(7, 29, 12), 0)
            ]
        );
        // The scheduled reset still comes: a fresh 100 plus the credit's 20 (capped again).
        e.clock.set(at(6, 30, 0));
        let meter = e.check("acme", None, "calls").await.meter.unwrap();
        assert_eq!(
            (meter.period_start, meter.balance),
            (at(6, 29, 12), Some(120))
        );
    }
}

#[tokio::test]
async fn a_reset_carries_overage_when_the_feature_says_so_and_refuses_what_is_not_a_meter() {
    for e in engines().await {
        setup(&e, true).await;
        e.engine
            .record_usage(vec![usage("a", 130, None)])
            .await
            .unwrap();
        e.clock.advance(TimeDelta::hours(1));
        let reset = e
            .engine
            .reset_meter("acme", None, "calls")
            .await
            .unwrap()
            .value;
        assert_eq!(
            (reset.closed.overage, reset.closed.carried_overage),
            (30, 30)
        );
        // The 30 owed is drawn first from the fresh allowance.
        assert_eq!(reset.reading.balance, Some(70));

        e.feature("seats", AllocationType::MaxCount, &[]).await;
        let err = e
            .engine
            .reset_meter("acme", None, "seats")
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "feature_key");
        let err = e
            .engine
            .reset_meter("acme", None, "nothing")
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");
        let err = e
            .engine
            .reset_meter("nobody", None, "calls")
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");
    }
}

async fn periods(e: &TestEngine) -> Vec<crate::domain::usage_history::PeriodSummary> {
    e.engine
        .meter_periods("acme", None, "calls", anchor(), at(8, 1, 0))
        .await
        .unwrap()
}

#[tokio::test]
async fn every_closed_period_is_listed_with_its_summary_recorded_or_not_yet() {
    for e in engines().await {
        setup(&e, false).await;
        let credit = e
            .engine
            .create_credit_grant(NewCreditGrant {
                user_id: None,
                tenant_id: "acme".into(),
                feature_key: "calls".into(),
                amount: 50,
                priority: None,
                effective_at: None,
                expires_at: None,
                rollover: Some(Rollover { min: 0, max: 20 }),
                metadata: serde_json::Value::Null,
            })
            .await
            .unwrap()
            .value;
        e.engine
            .record_usage(vec![usage("a", 120, None)])
            .await
            .unwrap();
        e.clock.set(at(7, 5, 0));
        // June closed by the clock alone: computed as the next write will record it.
        let june = periods(&e).await;
        assert_eq!(june.len(), 1);
        let p = &june[0];
        assert_eq!((p.start, p.end, p.manual), (anchor(), at(6, 29, 12), false));
        assert_eq!(
            (p.usage, p.allowance, p.allowance_used),
            (120, Some(100), 100)
        );
        assert_eq!(
            p.credits,
            [CreditClose {
                id: credit.id,
                remaining: 30,
                carried: 20
            }]
        );
        // A write records it, the same.
        e.engine
            .record_usage(vec![usage("b", 5, None)])
            .await
            .unwrap();
        assert_eq!(periods(&e).await, june);
        // A reset closes July's so far (just after the draw at this very instant, which stays
        // in the closed period).
        e.engine.reset_meter("acme", None, "calls").await.unwrap();
        let both = periods(&e).await;
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], june[0]);
        let july = &both[1];
        assert_eq!(
            (july.start, july.end, july.manual, july.usage),
            (
                at(6, 29, 12),
                at(7, 5, 0) + TimeDelta::microseconds(1),
                true,
                5
            )
        );
        let err = e
            .engine
            .meter_periods("acme", None, "calls", at(8, 1, 0), at(8, 1, 0))
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "to");
    }
}

/// Found by the reference model: a batch of only late events brings its meters forward
/// (recording the periods the clock closed) without writing them.
#[tokio::test]
async fn a_period_recorded_by_a_batch_of_late_events_only_is_listed_once() {
    for e in engines().await {
        setup(&e, false).await;
        e.engine
            .record_usage(vec![usage("a", 30, None)])
            .await
            .unwrap();
        e.clock.set(at(7, 5, 0));
        // Dated in June, which the clock closed: late, nothing drawn.
        let (outcomes, _) = e
            .engine
            .record_usage(vec![usage("b", 5, Some(at(6, 10, 0)))])
            .await
            .unwrap();
        assert_eq!(outcomes, [UsageOutcome::Late]);
        let june = periods(&e).await;
        assert_eq!(june.len(), 1, "{june:?}");
        assert_eq!(
            (june[0].start, june[0].end, june[0].usage),
            (anchor(), at(6, 29, 12), 30)
        );
    }
}
