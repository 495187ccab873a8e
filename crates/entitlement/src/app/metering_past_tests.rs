//! Checks, explanations and entitlements at a past instant of metered features, on SQLite
//! and PostgreSQL, with a manual clock: the meter then, as the balance burn-down has it.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::ConnectionTrait;
use tenantry_index::Metering;
use tenantry_index::metering::{MeterReading, Recurrence, UsagePeriod};

use crate::app::checks::{self, CheckQuery, Checked, IndexSource};
use crate::app::testing::{TestEngine, engine, engine_on, feature_doc, feature_query, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewConsumption, NewCreditGrant, NewUsage};
use crate::domain::{
    Aggregation, Allocation, AllocationType, AllowReason, Decision, EntitlementIndex,
    Justification, Limit, PlanFeature, Result, Subject,
};

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

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

async fn metered(e: &TestEngine, key: &str, soft_limit: bool) {
    let mut doc = feature_doc(key, AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "unit".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, anchor()),
        soft_limit,
        carry_overage: false,
    });
    e.engine.create_feature(doc, None).await.expect("feature");
}

/// `acme` on a plan issuing 100 `calls` (hard limit) and 10 `seats` (soft) a month.
async fn setup(e: &TestEngine) {
    e.account("acme", None).await;
    metered(e, "calls", false).await;
    metered(e, "seats", true).await;
    e.plan(
        "api",
        vec![
            PlanFeature {
                feature_key: "calls".into(),
                allocation: Some(Allocation::MaxCount(Limit::Finite(100))),
            },
            PlanFeature {
                feature_key: "seats".into(),
                allocation: Some(Allocation::MaxCount(Limit::Finite(10))),
            },
        ],
    )
    .await;
    e.grant("api", "acme", None).await;
}

fn usage(id: &str, feature: &str, amount: i64) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: None,
        feature_key: feature.into(),
        amount,
        at: None,
        unique: None,
    }
}

async fn credit(
    e: &TestEngine,
    priority: u32,
    amount: i64,
    effective: DateTime<Utc>,
    expires: Option<DateTime<Utc>>,
) -> uuid::Uuid {
    e.engine
        .create_credit_grant(NewCreditGrant {
            tenant_id: "acme".into(),
            user_id: None,
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

fn at(feature: &str, at: DateTime<Utc>, requested: Option<u64>) -> CheckQuery {
    CheckQuery {
        at: Some(at),
        requested,
        ..feature_query("acme", None, feature)
    }
}

async fn check_at(e: &TestEngine, q: &CheckQuery) -> Checked<Decision> {
    checks::check(&e.engine, q, 0).await.unwrap()
}

/// (balance, usage, overage, period start) of a reading.
fn parts(m: Option<MeterReading>) -> Option<(Option<i64>, i64, i64, DateTime<Utc>)> {
    m.map(|m| (m.balance, m.usage, m.overage, m.period_start))
}

#[tokio::test]
async fn a_past_at_answers_the_meter_then_as_the_burn_down_has_it() {
    for e in engines().await {
        setup(&e).await;
        // A: 50 until t0 + 2 days (priority 20: after the allowance); B: 20 from t0 + 3
        // days; C: 10 from hours(5), voided an hour later.
        credit(&e, 20, 50, t0(), Some(t0() + TimeDelta::days(2))).await;
        to(&e, hours(1));
        e.engine
            .record_usage(vec![usage("u1", "calls", 30)])
            .await
            .unwrap();
        to(&e, hours(2));
        // One batch, two draws at one instant.
        e.engine
            .record_usage(vec![usage("u2", "calls", 80), usage("u3", "calls", 10)])
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
        to(&e, hours(4));
        credit(&e, 10, 20, t0() + TimeDelta::days(3), None).await;
        to(&e, hours(5));
        let c = credit(&e, 10, 10, hours(5), None).await;
        to(&e, hours(6));
        e.engine.void_credit_grant(c).await.unwrap();
        to(&e, t0() + TimeDelta::days(4));
        let reset_at = e.engine.now();
        e.engine.reset_meter("acme", None, "calls").await.unwrap();
        to(&e, reset_at + TimeDelta::hours(1));
        e.engine
            .record_usage(vec![usage("u4", "calls", 10)])
            .await
            .unwrap();
        to(&e, t0() + TimeDelta::days(30));

        let start = anchor();
        let cases = [
            // Before the first draw: the allowance and A.
            (t0() + minutes(30), Some(150), 0, start),
            // Between draws: the meter the draw before left.
            (hours(1) + minutes(30), Some(120), 30, start),
            // A microsecond before a draw, and at it (the batch's last draw).
            (hours(2) - TimeDelta::microseconds(1), Some(120), 30, start),
            (hours(2), Some(30), 120, start),
            (hours(3) + minutes(1), Some(25), 125, start),
            // C usable, then voided.
            (hours(5) + minutes(30), Some(35), 125, start),
            (hours(6) + minutes(30), Some(25), 125, start),
            // A expired, B not yet effective: nothing left; then B.
            (t0() + TimeDelta::days(3) - minutes(1), Some(0), 125, start),
            (t0() + TimeDelta::days(3) + minutes(1), Some(20), 125, start),
            // After the manual reset (a closed period before it): a fresh 100, B rolled over.
            (reset_at + minutes(30), Some(120), 0, reset_at),
            (reset_at + TimeDelta::hours(2), Some(110), 10, reset_at),
        ];
        for (when, balance, used, period_start) in cases {
            let checked = check_at(&e, &at("calls", when, None)).await;
            assert_eq!(
                parts(checked.value.meter),
                Some((balance, used, 0, period_start)),
                "at {when}"
            );
            assert_eq!(checked.history_at(Some(when)), Some(when));
            assert_eq!(
                checked.value.meter.map(|m| m.period_end),
                Some(t0() + TimeDelta::days(28))
            );
        }
        // The decision is the one the meter then makes: spent, short, enough.
        let spent = check_at(
            &e,
            &at("calls", t0() + TimeDelta::days(3) - minutes(1), None),
        )
        .await;
        assert_eq!(
            (spent.value.result, spent.value.justification),
            (false, Some(Justification::UsageLimitReached))
        );
        let short = check_at(&e, &at("calls", hours(3) + minutes(1), Some(30))).await;
        assert_eq!(
            short.value.justification,
            Some(Justification::InsufficientBalance)
        );
        let enough = check_at(&e, &at("calls", hours(3) + minutes(1), Some(25))).await;
        assert_eq!(enough.value.allow_reason, Some(AllowReason::Grant));

        // Explain answers the same decision.
        let explained = checks::explain(&e.engine, &at("calls", hours(2), None), 0)
            .await
            .unwrap();
        assert_eq!(
            parts(explained.value.decision.meter),
            Some((Some(30), 120, 0, start))
        );

        // Now (no `at`), the index's meter: the period the schedule opened at t0 + 28 days,
        // B's 20 rolled over and a fresh 100 — not read from history.
        let now = checks::check(&e.engine, &feature_query("acme", None, "calls"), 0)
            .await
            .unwrap();
        assert_eq!(
            parts(now.value.meter),
            Some((Some(120), 0, 0, t0() + TimeDelta::days(28)))
        );
        assert_eq!(now.history_at(None), None);
    }
}

#[tokio::test]
async fn every_metered_feature_of_an_account_is_read_at_once_and_old_rows_are_unknown() {
    for e in engines().await {
        setup(&e).await;
        to(&e, hours(1));
        e.engine
            .record_usage(vec![usage("c1", "calls", 40), usage("s1", "seats", 12)])
            .await
            .unwrap();
        to(&e, hours(2));
        e.engine
            .record_usage(vec![usage("c2", "calls", 50), usage("s2", "seats", 3)])
            .await
            .unwrap();
        to(&e, hours(5));

        // Both meters at hours(1) + 30 min, in one answer: the soft limit's overage too.
        let subject = Subject::account("acme");
        let listed =
            checks::account_entitlements(&e.engine, &subject, Some(hours(1) + minutes(30)), 0)
                .await
                .unwrap();
        let meter = |key: &str| {
            listed
                .value
                .iter()
                .find(|(f, _)| f.key == key)
                .and_then(|(_, m)| m.clone())
        };
        assert_eq!(
            meter("calls").and_then(|(m, _, _)| parts(m)),
            Some((Some(60), 40, 0, anchor()))
        );
        assert_eq!(
            meter("seats").and_then(|(m, _, _)| parts(m)),
            Some((Some(0), 12, 2, anchor()))
        );
        // Before the first draw: nothing was drawn, the whole allowance (known, not guessed).
        let before = check_at(&e, &at("seats", t0() + minutes(1), None)).await;
        assert_eq!(parts(before.value.meter), Some((Some(10), 0, 0, anchor())));

        // Events stored before draws kept their meter: the past is unknown, never today's.
        e.engine
            .store
            .connection()
            .execute_unprepared(
                "UPDATE ent_usage_event SET drawn_at = NULL, meter_after = NULL, \
                 drawn_on = NULL WHERE event_id = 'c1'",
            )
            .await
            .unwrap();
        let unknown = check_at(&e, &at("calls", hours(1) + minutes(30), Some(1))).await;
        assert_eq!(
            (
                unknown.value.result,
                unknown.value.justification,
                unknown.value.meter
            ),
            (false, Some(Justification::MeterHistoryUnknown), None)
        );
        // The amount issued each period is still the grants' answer.
        assert_eq!(
            unknown.value.allocation,
            Some(Allocation::MaxCount(Limit::Finite(100)))
        );
        // Listed, saying so; the other meter still read.
        let listed =
            checks::account_entitlements(&e.engine, &subject, Some(hours(1) + minutes(30)), 0)
                .await
                .unwrap();
        let calls = listed.value.iter().find(|(f, _)| f.key == "calls");
        assert_eq!(
            calls.map(|(_, m)| m.clone()),
            Some(Some((None, None, None)))
        );
        let seats = listed.value.iter().find(|(f, _)| f.key == "seats");
        assert_eq!(
            seats
                .and_then(|(_, m)| m.clone())
                .and_then(|(m, _, _)| m.map(|m| m.usage)),
            Some(12)
        );
        // A kept draw after the old one is known again.
        let later = check_at(&e, &at("calls", hours(3), None)).await;
        assert_eq!(parts(later.value.meter), Some((Some(10), 90, 0, anchor())));

        // A batch of checks at several instants: each weighed against its own meter then.
        let answers = checks::check_batch(
            &e.engine,
            vec![
                Ok(at("seats", hours(1) + minutes(30), None)),
                Ok(at("seats", hours(3), None)),
                Ok(at("calls", hours(1) + minutes(30), None)),
                Ok(feature_query("acme", None, "seats")),
            ],
            0,
        )
        .await
        .unwrap();
        let usages: Vec<_> = answers
            .value
            .iter()
            .map(|(_, d)| (d.justification, d.meter.map(|m| m.usage)))
            .collect();
        assert_eq!(
            usages,
            [
                (None, Some(12)),
                (None, Some(15)),
                (Some(Justification::MeterHistoryUnknown), None),
                (None, Some(15)),
            ]
        );
    }
}

/// An index without history, as the agent's (a snapshot and its clock): only the default
/// `past_meters`.
struct NoHistory(Arc<EntitlementIndex>, DateTime<Utc>);

impl IndexSource for NoHistory {
    async fn index_at(&self, _min_revision: u64) -> Result<Arc<EntitlementIndex>> {
        Ok(Arc::clone(&self.0))
    }

    fn present(&self, index: &EntitlementIndex) -> DateTime<Utc> {
        index.present(self.1)
    }

    fn revision(&self) -> u64 {
        self.0.revision()
    }
}

#[tokio::test]
async fn an_index_without_history_answers_a_past_meter_unknown_and_the_present_as_ever() {
    let e = engine().await;
    setup(&e).await;
    to(&e, hours(1));
    e.engine
        .record_usage(vec![usage("c1", "calls", 40)])
        .await
        .unwrap();
    e.feature("sso", AllocationType::Bool, &[]).await;
    to(&e, hours(2));
    let agent = NoHistory(e.engine.index.current(), e.engine.now());
    let past = checks::check(&agent, &at("calls", hours(1) + minutes(30), None), 0)
        .await
        .unwrap();
    assert_eq!(
        (past.value.justification, past.value.meter),
        (Some(Justification::MeterHistoryUnknown), None)
    );
    let now = checks::check(&agent, &feature_query("acme", None, "calls"), 0)
        .await
        .unwrap();
    assert_eq!(now.value.meter.and_then(|m| m.balance), Some(60));
    // A past instant of a feature that is not metered needs no history.
    let sso = checks::check(&agent, &at("sso", hours(1), None), 0)
        .await
        .unwrap();
    assert_eq!(sso.value.justification, Some(Justification::MissingFeature));
}

#[tokio::test]
async fn a_users_own_meter_is_read_at_a_past_instant_apart_from_the_accounts() {
    for e in engines().await {
        setup(&e).await;
        e.plan(
            "solo",
            vec![PlanFeature {
                feature_key: "calls".into(),
                allocation: Some(Allocation::MaxCount(Limit::Finite(5))),
            }],
        )
        .await;
        e.grant("solo", "acme", Some("ann")).await;
        let ann = |id: &str, amount| NewUsage {
            user_id: Some("ann".into()),
            ..usage(id, "calls", amount)
        };
        to(&e, hours(1));
        e.engine
            .record_usage(vec![ann("a1", 2), usage("c1", "calls", 30)])
            .await
            .unwrap();
        to(&e, hours(2));
        e.engine.record_usage(vec![ann("a2", 2)]).await.unwrap();
        to(&e, hours(3));
        let between = hours(1) + minutes(30);
        let users = check_at(
            &e,
            &CheckQuery {
                user_id: Some("ann".into()),
                ..at("calls", between, None)
            },
        )
        .await;
        assert_eq!(parts(users.value.meter), Some((Some(3), 2, 0, anchor())));
        let accounts = check_at(&e, &at("calls", between, None)).await;
        assert_eq!(
            parts(accounts.value.meter),
            Some((Some(70), 30, 0, anchor()))
        );
    }
}

/// Found by the reference model: a draw just after a reset is dated ahead of the clock (the
/// reset started the period a microsecond ahead); a credit granted after it at the same clock
/// instant is timed before it, and was left out of the meter from that draw on.
#[tokio::test]
async fn a_credit_granted_after_a_draw_dated_ahead_of_the_clock_counts_from_it() {
    for e in engines().await {
        setup(&e).await;
        e.engine
            .record_usage(vec![usage("u1", "calls", 10)])
            .await
            .unwrap();
        e.engine.reset_meter("acme", None, "calls").await.unwrap();
        // Drawn at t0 + 1 µs, written at t0; the credit is created at t0.
        e.engine
            .record_usage(vec![usage("u2", "calls", 5)])
            .await
            .unwrap();
        credit(&e, 1, 50, t0(), None).await;
        to(&e, hours(1));
        credit(&e, 1, 20, hours(1), None).await;
        to(&e, hours(2));
        let then = check_at(&e, &at("calls", hours(0) + minutes(30), None)).await;
        assert_eq!(then.value.meter.map(|m| m.balance), Some(Some(145)));
        let points = e
            .engine
            .balance_points("acme", None, "calls", anchor(), hours(2))
            .await
            .unwrap();
        let last = points.last().unwrap();
        assert_eq!(
            (last.at, last.meter.as_ref().map(|m| m.balance)),
            (hours(1), Some(Some(165)))
        );
    }
}
