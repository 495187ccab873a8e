//! What-if of metered features: the meter under each side's grants and the decision for a
//! requested amount, as a check would answer them.

use super::super::past::PastMeter;
use super::*;
use crate::fixtures::{feature, grant, plan, t};
use crate::metering::{ALLOWANCE_PRIORITY, Credit, Hold, MeterState, Recurrence, Rollover};
use crate::metering::{MeterSpec, UsagePeriod};
use crate::model::{
    Aggregation, AllocationType, Feature, Grant, Limit, MergePolicy, Metering, Plan, PlanFeature,
};
use crate::writer::{IndexChange, IndexWriter, Snapshot};

fn count(n: u64) -> Option<Allocation> {
    Some(Allocation::MaxCount(Limit::Finite(n)))
}

/// `calls`: metered, a day's period from t(0).
fn calls(soft_limit: bool) -> Feature {
    let mut f = feature("calls", AllocationType::Metered, MergePolicy::Max, &[]);
    f.metering = Some(Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::DAY, t(0)),
        soft_limit,
        carry_overage: false,
    });
    f
}

fn allocating(key: &str, n: u64, inherit: bool) -> Plan {
    plan(
        key,
        vec![PlanFeature {
            feature_key: "calls".into(),
            allocation: count(n),
        }],
        inherit,
    )
}

struct World {
    w: IndexWriter,
    spec: MeterSpec,
    feature: Feature,
    /// 100 a day.
    api: Plan,
    /// 1,000 a day.
    pro: Plan,
    /// 50 a day.
    small: Plan,
    /// 100 a day, inherited by sub-accounts.
    pool: Plan,
    /// 10 a day.
    own: Plan,
    api_grant: Grant,
}

/// `acme` on `api` with 60 drawn at t(1) and a hold of 5 until t(20); `org` ← `team`, `org`
/// holding `pool` with 30 drawn; `solo` holding nothing.
fn world(soft_limit: bool, credit: Option<i64>) -> World {
    let feature = calls(soft_limit);
    let spec = feature.metering.as_ref().unwrap().spec();
    let (api, pro, small) = (
        allocating("api", 100, false),
        allocating("pro", 1_000, false),
        allocating("small", 50, false),
    );
    let (pool, own) = (allocating("pool", 100, true), allocating("own", 10, false));
    let mut acme = MeterState::open(&spec, t(1)).unwrap();
    if let Some(amount) = credit {
        acme.add_credit(Credit {
            id: Uuid::from_u128(9),
            priority: ALLOWANCE_PRIORITY + 10,
            effective_at: t(0),
            expires_at: None,
            voided_at: None,
            balance: amount,
            rollover: Rollover::NONE,
        });
    }
    acme.draw(&spec, t(1), 60, &|_| Limit::Finite(100)).unwrap();
    acme.hold(Hold {
        id: Uuid::from_u128(7),
        amount: 5,
        expires_at: t(20),
    });
    let mut org = MeterState::open(&spec, t(1)).unwrap();
    org.draw(&spec, t(1), 30, &|_| Limit::Finite(100)).unwrap();
    let api_grant = grant(&api, "acme", None, -1, None);
    let w = IndexWriter::from_snapshot(
        Snapshot {
            user_meters: Default::default(),
            features: vec![feature.clone()],
            plans: vec![
                api.clone(),
                pro.clone(),
                small.clone(),
                pool.clone(),
                own.clone(),
            ],
            flags: vec![],
            routes: vec![],
            tenants: vec![
                ("acme".into(), None),
                ("org".into(), None),
                ("team".into(), Some("org".into())),
                ("solo".into(), None),
            ],
            grants: vec![api_grant.clone(), grant(&pool, "org", None, -1, None)],
            meters: vec![
                ("acme".into(), feature.id, acme),
                ("org".into(), feature.id, org),
            ],
        },
        1,
    );
    World {
        w,
        spec,
        feature,
        api,
        pro,
        small,
        pool,
        own,
        api_grant,
    }
}

fn revoke(plan: &Plan) -> Hypothetical {
    Hypothetical::RevokePlan { plan_id: plan.id }
}

fn give(plan: &Plan) -> Hypothetical {
    Hypothetical::grant_plan(plan.id, false)
}

/// (balance, usage, held) of an outlook's reading.
fn numbers(m: &Option<MeterOutlook>) -> Option<(Option<i64>, i64, i64)> {
    m.as_ref()?.reading.map(|r| (r.balance, r.usage, r.held))
}

fn decision(m: &Option<MeterOutlook>) -> (bool, Option<Justification>, Option<AllowReason>) {
    let m = m
        .as_ref()
        .expect("a metered feature has a decision on both sides");
    (m.result, m.justification, m.allow_reason)
}

fn owner(m: &Option<MeterOutlook>) -> (Option<&str>, Option<&str>) {
    let m = m.as_ref().unwrap();
    (m.owner_tenant_id.as_deref(), m.user_id.as_deref())
}

fn only_changed(w: &WhatIf) -> &FeatureChange {
    assert!(w.gained.is_empty() && w.lost.is_empty(), "{w:?}");
    assert_eq!(w.changed.len(), 1, "{w:?}");
    &w.changed[0]
}

const ALLOWED: (bool, Option<Justification>, Option<AllowReason>) =
    (true, None, Some(AllowReason::Grant));

#[test]
fn an_upgrade_keeps_the_usage_and_recomputes_the_balance_and_the_decision() {
    let x = world(false, None);
    let idx = x.w.current();
    let acme = Subject::account("acme");
    let w = idx
        .what_if(&acme, &[revoke(&x.api), give(&x.pro)], t(2), Some(500))
        .unwrap();
    let c = only_changed(&w);
    assert_eq!(
        (c.key.as_str(), c.before, c.after),
        ("calls", count(100), count(1_000))
    );
    // 100 − 60 drawn − 5 held; then 1,000 − 60 − 5: the usage and the hold stay.
    assert_eq!(numbers(&c.meter_before), Some((Some(35), 60, 5)));
    assert_eq!(numbers(&c.meter_after), Some((Some(935), 60, 5)));
    assert_eq!(
        decision(&c.meter_before),
        (false, Some(Justification::InsufficientBalance), None)
    );
    assert_eq!(decision(&c.meter_after), ALLOWED);
    assert_eq!(owner(&c.meter_after), (None, None));
    // The period is the meter's.
    let r = c.meter_after.as_ref().unwrap().reading.unwrap();
    assert_eq!((r.period_start, r.period_end), (t(0), t(24)));

    // Without a requested amount: one unit, allowed either way.
    let w = idx
        .what_if(&acme, &[revoke(&x.api), give(&x.pro)], t(2), None)
        .unwrap();
    assert_eq!(decision(&w.changed[0].meter_before), ALLOWED);
}

#[test]
fn a_downgrade_below_the_usage_leaves_the_feature_held_and_spent() {
    let x = world(false, None);
    let idx = x.w.current();
    let w = idx
        .what_if(
            &Subject::account("acme"),
            &[
                Hypothetical::RevokeGrant {
                    grant_id: x.api_grant.id,
                },
                give(&x.small),
            ],
            t(2),
            None,
        )
        .unwrap();
    // Held (the plan still issues 50 a day), not lost: the meter says why a check refuses.
    let c = only_changed(&w);
    assert_eq!((c.before, c.after), (count(100), count(50)));
    assert_eq!(numbers(&c.meter_after), Some((Some(0), 60, 5)));
    assert_eq!(
        decision(&c.meter_after),
        (false, Some(Justification::UsageLimitReached), None)
    );

    // A soft limit allows past the balance and says so.
    let x = world(true, None);
    let w =
        x.w.current()
            .what_if(
                &Subject::account("acme"),
                &[revoke(&x.api), give(&x.small)],
                t(2),
                Some(10),
            )
            .unwrap();
    assert_eq!(
        decision(&w.changed[0].meter_after),
        (true, None, Some(AllowReason::SoftLimitOverage))
    );
}

#[test]
fn a_revocation_leaves_the_credits_or_loses_the_feature() {
    // With a 20 credit: credits alone entitle what remains of them.
    let x = world(false, Some(20));
    let idx = x.w.current();
    let acme = Subject::account("acme");
    let w = idx
        .what_if(&acme, &[revoke(&x.api)], t(2), Some(15))
        .unwrap();
    let c = only_changed(&w);
    assert_eq!((c.before, c.after), (count(100), None));
    // The allowance went first: 40 left of it, the credit untouched; then the credit alone.
    assert_eq!(numbers(&c.meter_before), Some((Some(55), 60, 5)));
    assert_eq!(numbers(&c.meter_after), Some((Some(15), 60, 5)));
    assert_eq!(
        decision(&c.meter_after),
        (true, None, Some(AllowReason::Credits))
    );

    // Without credits: lost, no meter after, and the check's reason.
    let x = world(false, None);
    let w =
        x.w.current()
            .what_if(&acme, &[revoke(&x.api)], t(2), None)
            .unwrap();
    assert_eq!(w.lost.len(), 1);
    let c = &w.lost[0];
    assert_eq!((c.before, c.after), (count(100), None));
    assert_eq!(numbers(&c.meter_before), Some((Some(35), 60, 5)));
    assert_eq!(numbers(&c.meter_after), None);
    assert_eq!(
        decision(&c.meter_after),
        (false, Some(Justification::MissingFeature), None)
    );
}

#[test]
fn a_gained_feature_starts_on_a_fresh_meter_and_a_later_instant_on_the_next_period() {
    let x = world(false, None);
    let idx = x.w.current();
    let w = idx
        .what_if(&Subject::account("solo"), &[give(&x.own)], t(2), None)
        .unwrap();
    assert_eq!(w.gained.len(), 1);
    let c = &w.gained[0];
    assert_eq!((c.before, c.after), (None, count(10)));
    assert_eq!(numbers(&c.meter_before), None);
    assert_eq!(
        decision(&c.meter_before),
        (false, Some(Justification::MissingFeature), None)
    );
    // Never written: the whole allowance, nothing drawn.
    assert_eq!(numbers(&c.meter_after), Some((Some(10), 0, 0)));

    // Asked in the next period (t(30)): its usage is zero and the allowance issued afresh;
    // the hold expired at t(20).
    let w = idx
        .what_if(
            &Subject::account("acme"),
            &[revoke(&x.api), give(&x.pro)],
            t(30),
            None,
        )
        .unwrap();
    let c = only_changed(&w);
    assert_eq!(numbers(&c.meter_before), Some((Some(100), 0, 0)));
    assert_eq!(numbers(&c.meter_after), Some((Some(1_000), 0, 0)));
    let r = c.meter_after.as_ref().unwrap().reading.unwrap();
    assert_eq!(r.period_start, t(24));
}

#[test]
fn an_own_allocation_moves_a_sub_account_off_its_pool_and_a_revocation_back() {
    let mut x = world(false, None);
    let idx = x.w.current();
    let team = Subject::account("team");
    let w = idx.what_if(&team, &[give(&x.own)], t(2), Some(20)).unwrap();
    let c = only_changed(&w);
    assert_eq!((c.before, c.after), (count(100), count(10)));
    // The pool's 30 stay on the pool; team starts its own meter.
    assert_eq!(numbers(&c.meter_before), Some((Some(70), 30, 0)));
    assert_eq!(owner(&c.meter_before), (Some("org"), None));
    assert_eq!(numbers(&c.meter_after), Some((Some(10), 0, 0)));
    assert_eq!(owner(&c.meter_after), (None, None));
    assert_eq!(decision(&c.meter_before), ALLOWED);
    assert_eq!(
        decision(&c.meter_after),
        (false, Some(Justification::InsufficientBalance), None)
    );

    // Held: revoking it sends team back to the pool.
    x.w.apply([IndexChange::UpsertGrant(grant(
        &x.own, "team", None, -1, None,
    ))]);
    let w =
        x.w.current()
            .what_if(&team, &[revoke(&x.own)], t(2), None)
            .unwrap();
    let c = only_changed(&w);
    assert_eq!(owner(&c.meter_after), (Some("org"), None));
    assert_eq!(numbers(&c.meter_after), Some((Some(70), 30, 0)));
}

#[test]
fn a_user_losing_its_own_meter_is_changed_even_when_issued_the_same_amount() {
    // u1 of team holds `pool` itself: its own meter, issued 100, 8 drawn.
    let mut x = world(false, None);
    let user_grant = grant(&x.pool, "team", Some("u1"), -1, None);
    let mut state = MeterState::open(&x.spec, t(1)).unwrap();
    state
        .draw(&x.spec, t(1), 8, &|_| Limit::Finite(100))
        .unwrap();
    x.w.apply([
        IndexChange::UpsertGrant(user_grant.clone()),
        IndexChange::UpsertMeter {
            tenant_id: "team".into(),
            user_id: Some("u1".into()),
            feature_id: x.feature.id,
            state: Box::new(state),
        },
    ]);
    let u1 = Subject::user("team", "u1");
    let w =
        x.w.current()
            .what_if(
                &u1,
                &[Hypothetical::RevokeGrant {
                    grant_id: user_grant.id,
                }],
                t(2),
                None,
            )
            .unwrap();
    // 100 issued either way (its own, then org's pool): the meter is what changes.
    let c = only_changed(&w);
    assert_eq!((c.before, c.after), (count(100), count(100)));
    assert_eq!(owner(&c.meter_before), (None, Some("u1")));
    assert_eq!(numbers(&c.meter_before), Some((Some(92), 8, 0)));
    assert_eq!(owner(&c.meter_after), (Some("org"), None));
    assert_eq!(numbers(&c.meter_after), Some((Some(70), 30, 0)));

    // u2 gains a meter of its own by a grant to the user: fresh, issued the user's 10.
    let u2 = Subject::user("team", "u2");
    let w =
        x.w.current()
            .what_if(&u2, &[Hypothetical::grant_plan(x.own.id, true)], t(2), None)
            .unwrap();
    let c = only_changed(&w);
    assert_eq!((c.before, c.after), (count(100), count(10)));
    assert_eq!(owner(&c.meter_after), (None, Some("u2")));
    assert_eq!(numbers(&c.meter_after), Some((Some(10), 0, 0)));
    // A change that moves no meter and no allocation lists nothing.
    let w =
        x.w.current()
            .what_if(&u2, &[give(&x.api), revoke(&x.api)], t(2), None)
            .unwrap();
    assert_eq!(w, WhatIf::default());
}

#[test]
fn at_a_past_instant_both_sides_weigh_the_meters_then_and_unknown_ones_say_so() {
    let x = world(false, None);
    let idx = x.w.current();
    let team = Subject::account("team");
    let changes = [give(&x.own)];
    let asks = idx.what_if_meter_asks(&team, &changes, t(2)).unwrap();
    assert_eq!(
        asks,
        [
            ("org".to_owned(), None, x.feature.id),
            ("team".to_owned(), None, x.feature.id)
        ]
    );
    // The pool then: 12 drawn; team's own meter then: unknown.
    let mut then = MeterState::open(&x.spec, t(1)).unwrap();
    then.draw(&x.spec, t(1), 12, &|_| Limit::Finite(100))
        .unwrap();
    let past = PastMeters::new(vec![
        (asks[0].clone(), PastMeter::Known(Some(then))),
        (asks[1].clone(), PastMeter::Unknown),
    ]);
    let w = idx
        .what_if_past(&team, &changes, t(2), None, &past)
        .unwrap();
    let c = only_changed(&w);
    assert_eq!(numbers(&c.meter_before), Some((Some(88), 12, 0)));
    // Held by its grants (the allocation kept), its meter then unknown: never a guess.
    assert_eq!(c.after, count(10));
    assert_eq!(numbers(&c.meter_after), None);
    assert_eq!(
        decision(&c.meter_after),
        (false, Some(Justification::MeterHistoryUnknown), None)
    );
    // A bad change is refused by the asks as by the what-if.
    assert!(matches!(
        idx.what_if_meter_asks(&team, &[], t(2)),
        Err(IndexError::InvalidArgument { .. })
    ));
}
