//! The balance burn-down through the use-case, on SQLite and PostgreSQL, with a manual clock.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::ConnectionTrait;
use tenantry_index::Metering;
use tenantry_index::metering::{Recurrence, UsagePeriod};
use uuid::Uuid;

use super::{BalancePoint, MAX_BALANCE_POINTS, PointKind};
use crate::app::testing::{TestEngine, engine, engine_on, feature_doc, invalid_field, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewConsumption, NewCreditGrant, NewUsage, UsageOutcome};
use crate::domain::{Aggregation, Allocation, AllocationType, Limit, PlanFeature};

async fn engines() -> Vec<TestEngine> {
    let url = tenantry_common::testing::postgres().create_database().await;
    vec![
        engine().await,
        engine_on(&url, ManualClock::new(t0())).await,
    ]
}

/// Periods of a month from 29 May 12:00 (t0 is 1 June 12:00): the next reset is t0 + 28 days.
fn anchor() -> DateTime<Utc> {
    t0() - TimeDelta::days(3)
}

fn hours(h: i64) -> DateTime<Utc> {
    t0() + TimeDelta::hours(h)
}

/// `acme` on a plan issuing 100 `calls` a month, a hard limit.
async fn setup(e: &TestEngine) {
    e.account("acme", None).await;
    let mut doc = feature_doc("calls", AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, anchor()),
        soft_limit: false,
        carry_overage: false,
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

async fn credit(
    e: &TestEngine,
    priority: u32,
    amount: i64,
    effective: DateTime<Utc>,
    expires: Option<DateTime<Utc>>,
) -> Uuid {
    e.engine
        .create_credit_grant(NewCreditGrant {
            user_id: None,
            tenant_id: "acme".into(),
            feature_key: "calls".into(),
            amount,
            priority: Some(priority),
            effective_at: Some(effective),
            expires_at: expires,
            rollover: None,
            metadata: serde_json::Value::Null,
        })
        .await
        .unwrap()
        .value
        .id
}

fn to(e: &TestEngine, t: DateTime<Utc>) {
    let now = e.engine.now();
    e.clock.advance(t - now);
}

/// (at, kind, id, balance, usage) of each point.
type Row = (
    DateTime<Utc>,
    PointKind,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn rows(points: &[BalancePoint]) -> Vec<Row> {
    points
        .iter()
        .map(|p| {
            (
                p.at,
                p.kind,
                p.id.clone(),
                p.meter.and_then(|m| m.balance),
                p.meter.map(|m| m.usage),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_draw_credit_and_reset_is_a_point_with_the_balance_after_it() {
    for e in engines().await {
        setup(&e).await;
        // A: 50 until t0 + 2 days, drawn after the allowance; B: 20 from t0 + 3 days; C: 10, voided an hour later.
        let a = credit(&e, 20, 50, t0(), Some(t0() + TimeDelta::days(2))).await;
        to(&e, hours(1));
        e.engine
            .record_usage(vec![usage("u1", 30, None)])
            .await
            .unwrap();
        to(&e, hours(2));
        // One batch, two draws at one instant: each its own point, in the order drawn.
        e.engine
            .record_usage(vec![usage("u2", 80, None), usage("u3", 10, None)])
            .await
            .unwrap();
        to(&e, hours(3));
        let consumed = e
            .engine
            .consume_usage(NewConsumption {
                id: "c1".into(),
                tenant_id: "acme".into(),
                user_id: None,
                feature_key: "calls".into(),
                amount: 5,
            })
            .await
            .unwrap();
        assert!(consumed.0.consumed);
        // Refused: no point.
        e.engine
            .consume_usage(NewConsumption {
                id: "c2".into(),
                tenant_id: "acme".into(),
                user_id: None,
                feature_key: "calls".into(),
                amount: 1_000,
            })
            .await
            .unwrap();
        to(&e, hours(4));
        let b = credit(&e, 10, 20, t0() + TimeDelta::days(3), None).await;
        to(&e, hours(5));
        let c = credit(&e, 10, 10, hours(5), None).await;
        to(&e, hours(6));
        e.engine.void_credit_grant(c).await.unwrap();
        to(&e, t0() + TimeDelta::days(4));
        let reset_at = e.engine.now();
        e.engine.reset_meter("acme", None, "calls").await.unwrap();
        to(&e, t0() + TimeDelta::days(4) + TimeDelta::hours(1));
        e.engine
            .record_usage(vec![usage("u4", 10, None)])
            .await
            .unwrap();
        // Late, of the period the reset closed: counted there, no point.
        let (late, _) = e
            .engine
            .record_usage(vec![usage("late", 7, Some(hours(7)))])
            .await
            .unwrap();
        assert_eq!(late, [UsageOutcome::Late]);
        to(&e, t0() + TimeDelta::days(30));

        let all = e
            .engine
            .balance_points(
                "acme",
                None,
                "calls",
                t0() - TimeDelta::days(1),
                t0() + TimeDelta::days(60),
            )
            .await
            .unwrap();
        let id = |s: &str| Some(s.to_owned());
        let (a, b, c) = (id(&a.to_string()), id(&b.to_string()), id(&c.to_string()));
        assert_eq!(
            rows(&all),
            [
                (
                    t0(),
                    PointKind::CreditEffective,
                    a.clone(),
                    Some(150),
                    Some(0)
                ),
                (hours(1), PointKind::Usage, id("u1"), Some(120), Some(30)),
                (hours(2), PointKind::Usage, id("u2"), Some(40), Some(110)),
                (hours(2), PointKind::Usage, id("u3"), Some(30), Some(120)),
                (
                    hours(3),
                    PointKind::Consumption,
                    id("c1"),
                    Some(25),
                    Some(125)
                ),
                (
                    hours(5),
                    PointKind::CreditEffective,
                    c.clone(),
                    Some(35),
                    Some(125)
                ),
                (hours(6), PointKind::CreditVoided, c, Some(25), Some(125)),
                // What remained of A (after the allowance, priority 20) expires with it.
                (
                    t0() + TimeDelta::days(2),
                    PointKind::CreditExpired,
                    a,
                    Some(0),
                    Some(125),
                ),
                (
                    t0() + TimeDelta::days(3),
                    PointKind::CreditEffective,
                    b,
                    Some(20),
                    Some(125),
                ),
                // A fresh 100, B's 20 rolled over.
                (reset_at, PointKind::ManualReset, None, Some(120), Some(0)),
                (
                    reset_at + TimeDelta::hours(1),
                    PointKind::Usage,
                    id("u4"),
                    Some(110),
                    Some(10)
                ),
                (
                    t0() + TimeDelta::days(28),
                    PointKind::Reset,
                    None,
                    Some(120),
                    Some(0)
                ),
            ]
        );
        // The future is not answered: the range ends now.
        assert!(all.iter().all(|p| p.at <= e.engine.now()));

        // A range starting between draws walks from the draw before it.
        let middle = e
            .engine
            .balance_points(
                "acme",
                None,
                "calls",
                hours(2) + TimeDelta::minutes(30),
                t0() + TimeDelta::days(3) + TimeDelta::minutes(1),
            )
            .await
            .unwrap();
        assert_eq!(rows(&middle), rows(&all)[4..9]);

        // Bad ranges and names are refused naming the field.
        for (tenant, feature, from, until, field) in [
            ("acme", "calls", hours(2), hours(2), "to"),
            ("bad id", "calls", hours(1), hours(2), "tenant_id"),
        ] {
            let err = e
                .engine
                .balance_points(tenant, None, feature, from, until)
                .await
                .unwrap_err();
            assert_eq!(invalid_field(&err), field);
        }
        assert!(
            e.engine
                .balance_points("ghost", None, "calls", hours(1), hours(2))
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn a_range_of_more_than_a_thousand_points_is_refused_and_old_rows_read_as_unknown() {
    for e in engines().await {
        setup(&e).await;
        for batch in 0..2 {
            let events = (0..=MAX_BALANCE_POINTS / 2)
                .map(|i| usage(&format!("b{batch}-{i}"), 0, None))
                .collect();
            e.engine.record_usage(events).await.unwrap();
        }
        to(&e, hours(1));
        e.engine
            .record_usage(vec![usage("last", 5, None)])
            .await
            .unwrap();
        to(&e, hours(2));
        let err = e
            .engine
            .balance_points("acme", None, "calls", t0(), hours(2))
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "to");
        let last = e
            .engine
            .balance_points("acme", None, "calls", hours(1), hours(2))
            .await
            .unwrap();
        assert_eq!(
            rows(&last),
            [(
                hours(1),
                PointKind::Usage,
                Some("last".into()),
                Some(95),
                Some(5)
            )]
        );

        // Events stored before draws were kept: their points, and the walk after them, are
        // unknown rather than recomputed.
        e.engine
            .store
            .connection()
            .execute_unprepared(
                "UPDATE ent_usage_event SET drawn_at = NULL, meter_after = NULL \
                 WHERE event_id = 'last'",
            )
            .await
            .unwrap();
        let old = e
            .engine
            .balance_points("acme", None, "calls", hours(1), hours(2))
            .await
            .unwrap();
        assert_eq!(
            rows(&old),
            [(hours(1), PointKind::Usage, Some("last".into()), None, None)]
        );
    }
}
