//! What-if of metered features through the engine, on SQLite and PostgreSQL with a manual
//! clock: usage recorded, then plan upgrades, downgrades and revocations previewed with the
//! meter they would leave (usage kept, balance recomputed) and the decision for a requested
//! amount; pools, users' own meters and a past instant read from history.

use chrono::{DateTime, TimeDelta, Utc};
use tenantry_index::Metering;
use tenantry_index::metering::{Recurrence, UsagePeriod};

use super::*;
use crate::app::testing::{TestEngine, engine, engine_on, feature_doc, new_plan, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewConsumption, NewCreditGrant, NewReservation, NewUsage};
use crate::domain::{
    Aggregation, Allocation, AllowReason, FeatureChange, Justification, Limit, MeterOutlook,
    PlanFeature,
};

async fn engines() -> Vec<TestEngine> {
    let url = tenantry_common::testing::postgres().create_database().await;
    vec![
        engine().await,
        engine_on(&url, ManualClock::new(t0())).await,
    ]
}

fn calls(n: u64) -> Vec<PlanFeature> {
    vec![PlanFeature {
        feature_key: "calls".into(),
        allocation: Some(Allocation::MaxCount(Limit::Finite(n))),
    }]
}

fn count(n: u64) -> Option<Allocation> {
    Some(Allocation::MaxCount(Limit::Finite(n)))
}

/// `calls` (hard limit, monthly from t0 − 3 days); plans `basic` 100, `pro` 1,000, `small`
/// 50, `own` 10, `pool` 100 inheriting; `acme` on `basic`, `org` ← `team` with `org` on
/// `pool`.
async fn setup(e: &TestEngine) {
    e.account("acme", None).await;
    e.account("org", None).await;
    e.account("team", Some("org")).await;
    let mut doc = feature_doc("calls", crate::domain::AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, t0() - TimeDelta::days(3)),
        soft_limit: false,
        carry_overage: false,
    });
    e.engine.create_feature(doc, None).await.expect("feature");
    for (key, n) in [("basic", 100), ("pro", 1_000), ("small", 50), ("own", 10)] {
        e.plan(key, calls(n)).await;
    }
    let mut pool = new_plan("pool", calls(100));
    pool.inherit_to_sub_accounts = true;
    e.engine.create_plan(pool, None).await.expect("pool plan");
    e.grant("basic", "acme", None).await;
    e.grant("pool", "org", None).await;
}

fn usage(tenant: &str, user: Option<&str>, id: &str, amount: i64) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: tenant.into(),
        user_id: user.map(str::to_owned),
        feature_key: "calls".into(),
        amount,
        at: None,
        unique: None,
    }
}

fn grant_plan(plan: &str, user: Option<&str>) -> WhatIfChange {
    WhatIfChange::Grant {
        tenant_id: String::new(),
        user_id: user.map(str::to_owned),
        plan: Some(PlanName::Key(plan.into())),
        starts_at: None,
        expires_at: None,
    }
}

fn revoke_plan(plan: &str) -> WhatIfChange {
    WhatIfChange::RevokePlan(plan.into())
}

fn question(tenant: &str, user: Option<&str>, changes: Vec<WhatIfChange>) -> WhatIfQuery {
    WhatIfQuery {
        tenant_id: tenant.into(),
        user_id: user.map(str::to_owned),
        changes,
        at: None,
        requested: None,
        min_revision: 0,
    }
}

async fn ask(e: &TestEngine, q: WhatIfQuery) -> WhatIf {
    what_if(&e.engine, q).await.expect("what-if").value
}

/// The one metered feature the answer lists, and in which list.
fn calls_change(w: &WhatIf) -> (&'static str, &FeatureChange) {
    let lists = [
        ("gained", &w.gained),
        ("lost", &w.lost),
        ("changed", &w.changed),
    ];
    let mut found = lists
        .into_iter()
        .flat_map(|(name, list)| list.iter().map(move |c| (name, c)))
        .filter(|(_, c)| c.key == "calls");
    let one = found.next().expect("calls is listed");
    assert!(found.next().is_none());
    one
}

/// (balance, usage, held) of a side's meter.
fn numbers(m: &Option<MeterOutlook>) -> Option<(Option<i64>, i64, i64)> {
    m.as_ref()?.reading.map(|r| (r.balance, r.usage, r.held))
}

fn decision(m: &Option<MeterOutlook>) -> (bool, Option<Justification>, Option<AllowReason>) {
    let m = m.as_ref().expect("a decision");
    (m.result, m.justification, m.allow_reason)
}

fn owner(m: &Option<MeterOutlook>) -> (Option<&str>, Option<&str>) {
    let m = m.as_ref().expect("a meter");
    (m.owner_tenant_id.as_deref(), m.user_id.as_deref())
}

const ALLOWED: (bool, Option<Justification>, Option<AllowReason>) =
    (true, None, Some(AllowReason::Grant));

fn to(e: &TestEngine, t: DateTime<Utc>) {
    let now = e.engine.now();
    e.clock.advance(t - now);
}

#[tokio::test]
async fn upgrades_downgrades_and_revocations_keep_the_usage_and_recompute_the_balance() {
    for e in engines().await {
        setup(&e).await;
        e.engine
            .record_usage(vec![usage("acme", None, "u1", 60)])
            .await
            .unwrap();
        // A live hold of 5 counts as spent on both sides.
        e.engine
            .reserve(NewReservation {
                id: "r1".into(),
                tenant_id: "acme".into(),
                user_id: None,
                feature_key: "calls".into(),
                amount: 5,
                ttl: TimeDelta::hours(1),
            })
            .await
            .unwrap();
        let upgrade = || vec![revoke_plan("basic"), grant_plan("pro", None)];

        // Upgrade, asking for 500: 35 left now refuses, 935 then allows.
        let w = ask(
            &e,
            WhatIfQuery {
                requested: Some(500),
                ..question("acme", None, upgrade())
            },
        )
        .await;
        let (list, c) = calls_change(&w);
        assert_eq!(list, "changed");
        assert_eq!((c.before, c.after), (count(100), count(1_000)));
        assert_eq!(numbers(&c.meter_before), Some((Some(35), 60, 5)));
        assert_eq!(numbers(&c.meter_after), Some((Some(935), 60, 5)));
        assert_eq!(
            decision(&c.meter_before),
            (false, Some(Justification::InsufficientBalance), None)
        );
        assert_eq!(decision(&c.meter_after), ALLOWED);
        let period = c.meter_after.as_ref().unwrap().reading.unwrap();
        assert_eq!(
            (period.period_start, period.period_end),
            (t0() - TimeDelta::days(3), t0() + TimeDelta::days(28))
        );

        // Downgrade to 50 below the 60 used: still held, nothing left, the limit reached.
        let w = ask(
            &e,
            question(
                "acme",
                None,
                vec![revoke_plan("basic"), grant_plan("small", None)],
            ),
        )
        .await;
        let (list, c) = calls_change(&w);
        assert_eq!(list, "changed");
        assert_eq!((c.before, c.after), (count(100), count(50)));
        assert_eq!(numbers(&c.meter_after), Some((Some(0), 60, 5)));
        assert_eq!(
            decision(&c.meter_after),
            (false, Some(Justification::UsageLimitReached), None)
        );

        // Revocation: lost, with the check's reason and no meter after.
        let w = ask(&e, question("acme", None, vec![revoke_plan("basic")])).await;
        let (list, c) = calls_change(&w);
        assert_eq!(list, "lost");
        assert_eq!(numbers(&c.meter_after), None);
        assert_eq!(
            decision(&c.meter_after),
            (false, Some(Justification::MissingFeature), None)
        );
        // With a 20 credit it stays held by the credit alone.
        e.engine
            .create_credit_grant(NewCreditGrant {
                tenant_id: "acme".into(),
                user_id: None,
                feature_key: "calls".into(),
                amount: 20,
                priority: Some(20),
                effective_at: None,
                expires_at: None,
                rollover: None,
                metadata: serde_json::Value::Null,
            })
            .await
            .unwrap();
        let w = ask(
            &e,
            WhatIfQuery {
                requested: Some(15),
                ..question("acme", None, vec![revoke_plan("basic")])
            },
        )
        .await;
        let (list, c) = calls_change(&w);
        assert_eq!(list, "changed");
        assert_eq!((c.before, c.after), (count(100), None));
        assert_eq!(numbers(&c.meter_before), Some((Some(55), 60, 5)));
        assert_eq!(numbers(&c.meter_after), Some((Some(15), 60, 5)));
        assert_eq!(
            decision(&c.meter_after),
            (true, None, Some(AllowReason::Credits))
        );

        // Nothing was written: the check answers the meter as it is.
        let now = e.check("acme", None, "calls").await;
        assert_eq!(
            now.meter.map(|m| (m.balance, m.usage)),
            Some((Some(55), 60))
        );
        assert_eq!(now.allocation, count(100));
    }
}

#[tokio::test]
async fn pools_and_users_own_meters_move_with_the_hypothetical_grants() {
    for e in engines().await {
        setup(&e).await;
        let (answer, _) = e
            .engine
            .consume_usage(NewConsumption {
                id: "c1".into(),
                tenant_id: "team".into(),
                user_id: None,
                feature_key: "calls".into(),
                amount: 30,
            })
            .await
            .unwrap();
        assert!(answer.consumed);

        // team draws on org's pool; its own 10 would start a meter of its own: 20 no longer
        // fits.
        let w = ask(
            &e,
            WhatIfQuery {
                requested: Some(20),
                ..question("team", None, vec![grant_plan("own", None)])
            },
        )
        .await;
        let (list, c) = calls_change(&w);
        assert_eq!(list, "changed");
        assert_eq!((c.before, c.after), (count(100), count(10)));
        assert_eq!(owner(&c.meter_before), (Some("org"), None));
        assert_eq!(numbers(&c.meter_before), Some((Some(70), 30, 0)));
        assert_eq!(owner(&c.meter_after), (None, None));
        assert_eq!(numbers(&c.meter_after), Some((Some(10), 0, 0)));
        assert_eq!(decision(&c.meter_before), ALLOWED);
        assert_eq!(
            decision(&c.meter_after),
            (false, Some(Justification::InsufficientBalance), None)
        );

        // A user of acme with its own `basic` grant (100) and 7 drawn on its own meter;
        // revoking it sends the user to the account's meter, also issued 100: the allocation
        // stays, the meter changes.
        e.engine
            .record_usage(vec![usage("acme", None, "a1", 40)])
            .await
            .unwrap();
        let bob = e.grant("basic", "acme", Some("bob")).await;
        e.engine
            .record_usage(vec![usage("acme", Some("bob"), "b1", 7)])
            .await
            .unwrap();
        let w = ask(
            &e,
            question(
                "acme",
                Some("bob"),
                vec![WhatIfChange::RevokeGrant(bob.id.to_string())],
            ),
        )
        .await;
        let (list, c) = calls_change(&w);
        assert_eq!(list, "changed");
        assert_eq!((c.before, c.after), (count(100), count(100)));
        assert_eq!(owner(&c.meter_before), (None, Some("bob")));
        assert_eq!(numbers(&c.meter_before), Some((Some(93), 7, 0)));
        assert_eq!(owner(&c.meter_after), (None, None));
        assert_eq!(numbers(&c.meter_after), Some((Some(60), 40, 0)));

        // ann, never seen before, granted `own` herself: a fresh meter of her own.
        let w = ask(
            &e,
            question("acme", Some("ann"), vec![grant_plan("own", Some("ann"))]),
        )
        .await;
        let (_, c) = calls_change(&w);
        assert_eq!(owner(&c.meter_before), (None, None));
        assert_eq!(owner(&c.meter_after), (None, Some("ann")));
        assert_eq!(numbers(&c.meter_after), Some((Some(10), 0, 0)));
    }
}

#[tokio::test]
async fn a_past_instant_weighs_the_meters_then_and_bad_amounts_are_refused() {
    for e in engines().await {
        setup(&e).await;
        to(&e, t0() + TimeDelta::hours(1));
        e.engine
            .record_usage(vec![usage("acme", None, "u1", 30)])
            .await
            .unwrap();
        to(&e, t0() + TimeDelta::hours(2));
        e.engine
            .record_usage(vec![usage("acme", None, "u2", 50)])
            .await
            .unwrap();
        to(&e, t0() + TimeDelta::hours(3));
        let upgrade = || vec![revoke_plan("basic"), grant_plan("pro", None)];
        let then = t0() + TimeDelta::hours(1) + TimeDelta::minutes(30);
        let checked = what_if(
            &e.engine,
            WhatIfQuery {
                at: Some(then),
                ..question("acme", None, upgrade())
            },
        )
        .await
        .unwrap();
        assert_eq!(checked.history_at(Some(then)), Some(then));
        let (_, c) = calls_change(&checked.value);
        // The meter then: 30 drawn (not today's 80).
        assert_eq!(numbers(&c.meter_before), Some((Some(70), 30, 0)));
        assert_eq!(numbers(&c.meter_after), Some((Some(970), 30, 0)));
        // Now: 80 drawn.
        let w = ask(&e, question("acme", None, upgrade())).await;
        let (_, c) = calls_change(&w);
        assert_eq!(numbers(&c.meter_before), Some((Some(20), 80, 0)));

        for bad in [0, -1, 1_000_000_000_000_001] {
            let err = what_if(
                &e.engine,
                WhatIfQuery {
                    requested: Some(bad),
                    ..question("acme", None, upgrade())
                },
            )
            .await
            .unwrap_err();
            assert_eq!(crate::app::testing::invalid_field(&err), "requested_amount");
        }
        for user in [String::new(), "u".repeat(256)] {
            let err = what_if(&e.engine, question("acme", Some(&user), upgrade()))
                .await
                .unwrap_err();
            assert_eq!(crate::app::testing::invalid_field(&err), "user_id");
        }
        let long = vec![revoke_plan(&"p".repeat(256))];
        let err = what_if(&e.engine, question("acme", None, long))
            .await
            .unwrap_err();
        assert_eq!(
            crate::app::testing::invalid_field(&err),
            "changes[0].revoke_plan"
        );
        let err = what_if(&e.engine, question("acme", None, vec![revoke_plan("gold")]))
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");
    }
}

/// An index without history, as the agent's: only the default `past_meters`.
struct NoHistory(std::sync::Arc<EntitlementIndex>, DateTime<Utc>);

impl IndexSource for NoHistory {
    async fn index_at(&self, _min_revision: u64) -> Result<std::sync::Arc<EntitlementIndex>> {
        Ok(std::sync::Arc::clone(&self.0))
    }

    fn present(&self, index: &EntitlementIndex) -> DateTime<Utc> {
        index.present(self.1)
    }

    fn revision(&self) -> u64 {
        self.0.revision()
    }
}

#[tokio::test]
async fn an_index_without_history_answers_past_meters_unknown_and_the_present_as_ever() {
    let e = engine().await;
    setup(&e).await;
    to(&e, t0() + TimeDelta::hours(1));
    e.engine
        .record_usage(vec![usage("acme", None, "u1", 30)])
        .await
        .unwrap();
    to(&e, t0() + TimeDelta::hours(2));
    let agent = NoHistory(e.engine.index.current(), e.engine.now());
    let upgrade = || vec![revoke_plan("basic"), grant_plan("pro", None)];
    let past = what_if(
        &agent,
        WhatIfQuery {
            at: Some(t0() + TimeDelta::hours(1)),
            ..question("acme", None, upgrade())
        },
    )
    .await
    .unwrap();
    // Never today's meter as the past's: both sides unknown, the allocations still answered.
    let (list, c) = calls_change(&past.value);
    assert_eq!(list, "changed");
    assert_eq!((c.before, c.after), (count(100), count(1_000)));
    for side in [&c.meter_before, &c.meter_after] {
        assert_eq!(numbers(side), None);
        assert_eq!(
            decision(side),
            (false, Some(Justification::MeterHistoryUnknown), None)
        );
    }
    let now = what_if(&agent, question("acme", None, upgrade()))
        .await
        .unwrap();
    let (_, c) = calls_change(&now.value);
    assert_eq!(numbers(&c.meter_after), Some((Some(970), 30, 0)));
}
