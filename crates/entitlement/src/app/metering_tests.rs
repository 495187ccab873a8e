//! Metering through the use-cases, on SQLite and PostgreSQL, with a manual clock.

use chrono::{DateTime, TimeDelta, Utc};
use tenantry_index::metering::{Recurrence, UsagePeriod};

use super::*;
use crate::app::testing::{TestEngine, engine, engine_on, feature_doc, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{
    ALLOWANCE_ID, ConsumeAnswer, NewConsumption, StoredOutcome, StoredUsage,
};
use crate::domain::{Allocation, Justification, PlanFeature};
use tenantry_index::Metering;

pub(crate) async fn metered_feature(e: &TestEngine, key: &str, soft_limit: bool) {
    let mut doc = feature_doc(key, AllocationType::Metered, &[]);
    doc.feature.metering = Some(Metering {
        unit: "call".into(),
        aggregation: Aggregation::Sum,
        period: UsagePeriod::new(Recurrence::MONTH, t0() - TimeDelta::days(3)),
        soft_limit,
        carry_overage: false,
    });
    e.engine
        .create_feature(doc, None)
        .await
        .expect("metered feature");
}

/// `acme` on a plan issuing 100 `calls` a month.
pub(crate) async fn setup(e: &TestEngine) {
    e.account("acme", None).await;
    metered_feature(e, "calls", false).await;
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

fn event(id: &str, amount: i64, at: Option<DateTime<Utc>>) -> NewUsage {
    NewUsage {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: None,
        feature_key: "calls".into(),
        amount,
        at,
        unique: None,
    }
}

fn consumption(id: &str, amount: i64) -> NewConsumption {
    NewConsumption {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: Some("u1".into()),
        feature_key: "calls".into(),
        amount,
    }
}

pub(crate) async fn balance(e: &TestEngine) -> Option<i64> {
    e.check("acme", None, "calls").await.meter.unwrap().balance
}

#[tokio::test]
async fn usage_draws_the_balance_down_once_per_event_id() {
    let e = engine().await;
    setup(&e).await;
    let (outcomes, revision) = e
        .engine
        .record_usage(vec![
            event("a", 30, None),
            event("b", 20, None),
            event("a", 30, None),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            UsageOutcome::Recorded,
            UsageOutcome::Recorded,
            UsageOutcome::Duplicate
        ]
    );
    assert!(revision > 0);
    assert_eq!(balance(&e).await, Some(50));
    // A retry of the whole batch counts nothing again.
    let (again, revision) = e
        .engine
        .record_usage(vec![event("a", 30, None), event("b", 20, None)])
        .await
        .unwrap();
    assert_eq!(again, [UsageOutcome::Duplicate, UsageOutcome::Duplicate]);
    assert_eq!(revision, 0);
    let d = e.check("acme", None, "calls").await;
    assert_eq!(
        (d.meter.unwrap().usage, d.meter.unwrap().balance),
        (50, Some(50))
    );
}

#[tokio::test]
async fn the_balance_resets_with_the_period_and_late_usage_stays_in_its_own() {
    let e = engine().await;
    setup(&e).await;
    e.engine
        .record_usage(vec![event("a", 80, None)])
        .await
        .unwrap();
    assert_eq!(balance(&e).await, Some(20));
    // The next month: a fresh 100; an event about last month is counted there.
    e.clock.advance(TimeDelta::days(31));
    assert_eq!(balance(&e).await, Some(100));
    let (outcomes, _) = e
        .engine
        .record_usage(vec![
            event("late", 50, Some(e.engine.now() - TimeDelta::days(30))),
            event("now", 5, None),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [UsageOutcome::Late, UsageOutcome::Recorded]);
    assert_eq!(balance(&e).await, Some(95));
}

#[tokio::test]
async fn a_consumption_is_refused_past_a_hard_limit_and_a_retry_answers_the_same() {
    let e = engine().await;
    setup(&e).await;
    let (first, replayed) = e.engine.consume_usage(consumption("c1", 70)).await.unwrap();
    assert!(first.consumed && !replayed);
    assert_eq!(first.meter.unwrap().balance, Some(30));
    let (refused, _) = e.engine.consume_usage(consumption("c2", 31)).await.unwrap();
    assert!(!refused.consumed);
    assert_eq!(
        refused.justification,
        Some(Justification::InsufficientBalance)
    );
    // Retries: the first answers again and nothing more is consumed.
    let (again, replayed) = e.engine.consume_usage(consumption("c1", 70)).await.unwrap();
    assert!(replayed && again.consumed);
    assert_eq!(balance(&e).await, Some(30));
    // The same id for a different request is refused.
    assert!(matches!(
        e.engine.consume_usage(consumption("c1", 5)).await,
        Err(DomainError::IdempotencyKeyReused(_))
    ));
    let (rest, _) = e.engine.consume_usage(consumption("c3", 30)).await.unwrap();
    assert!(rest.consumed);
    let (spent, _) = e.engine.consume_usage(consumption("c4", 1)).await.unwrap();
    assert_eq!(spent.justification, Some(Justification::UsageLimitReached));
}

#[tokio::test]
async fn a_top_up_extends_a_plan_managed_limit_and_voiding_it_is_not_retroactive() {
    let e = engine().await;
    setup(&e).await;
    let top_up = e
        .engine
        .create_credit_grant(NewCreditGrant {
            user_id: None,
            tenant_id: "acme".into(),
            feature_key: "calls".into(),
            amount: 50,
            priority: None,
            effective_at: None,
            expires_at: None,
            rollover: None,
            metadata: serde_json::json!({"reason": "compensation"}),
        })
        .await
        .unwrap()
        .value;
    assert_eq!(balance(&e).await, Some(150));
    e.engine
        .record_usage(vec![event("a", 120, None)])
        .await
        .unwrap();
    let view = e.engine.meter_view("acme", None, "calls", 0).await.unwrap();
    assert_eq!(view.reading.balance, Some(30));
    // The allowance (expiring at the reset) went first.
    assert_eq!(
        view.credits,
        [(ALLOWANCE_ID, Some(0)), (top_up.id, Some(30))]
    );
    let voided = e.engine.void_credit_grant(top_up.id).await.unwrap().value;
    assert!(voided.voided_at.is_some());
    let after = e.check("acme", None, "calls").await.meter.unwrap();
    assert_eq!((after.balance, after.usage), (Some(0), 120));
    let listed = e.engine.credit_grants("acme", Some("calls")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].voided_at.is_some());
}

#[tokio::test]
async fn bad_usage_is_refused_whole_with_every_bad_event_named() {
    let e = engine().await;
    setup(&e).await;
    e.feature("seats", AllocationType::MaxCount, &[]).await;
    let mut not_metered = event("x", 1, None);
    not_metered.feature_key = "seats".into();
    let mut unknown_account = event("y", 1, None);
    unknown_account.tenant_id = "nobody".into();
    let future = event("z", 1, Some(e.engine.now() + TimeDelta::hours(1)));
    let err = e
        .engine
        .record_usage(vec![
            event("ok", 1, None),
            not_metered,
            unknown_account,
            future,
        ])
        .await
        .unwrap_err();
    let DomainError::InvalidItems(items) = err else {
        panic!("expected item errors, got {err:?}");
    };
    let fields: Vec<(usize, &str)> = items.iter().map(|i| (i.index, i.field.as_str())).collect();
    assert_eq!(
        fields,
        [(1, "feature_key"), (2, "tenant_id"), (3, "timestamp")]
    );
    // Nothing of the batch was counted.
    assert_eq!(balance(&e).await, Some(100));
}

/// Two replicas on one PostgreSQL consume the last units of a hard limit at once: together
/// they never exceed it.
#[tokio::test]
async fn parallel_consumers_on_two_replicas_never_overdraw_a_hard_limit() {
    let url = tenantry_common::testing::postgres().create_database().await;
    let clock = ManualClock::new(t0());
    let a = engine_on(&url, clock.clone()).await;
    setup(&a).await;
    let b = engine_on(&url, clock.clone()).await;
    b.engine.catch_up().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let (a, b) = (Arc::new(a), Arc::new(b));
    for i in 0..40 {
        let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            replica
                .engine
                .consume_usage(consumption(&format!("p{i}"), 3))
                .await
                .unwrap()
                .0
                .consumed
        });
    }
    let consumed = tasks.join_all().await.into_iter().filter(|c| *c).count();
    // 100 / 3: exactly 33 fit.
    assert_eq!(consumed, 33);
    a.engine.catch_up().await.unwrap();
    let meter = a.check("acme", None, "calls").await.meter.unwrap();
    assert_eq!((meter.usage, meter.balance), (99, Some(1)));
}

/// A batch's events are stored meter by meter in one statement each: an id counts once per
/// account across the batch's meters, and against the account's earlier consumptions, on both
/// databases.
async fn an_id_counts_once_across_meters_and_consumptions(e: &TestEngine) {
    setup(e).await;
    metered_feature(e, "tokens", false).await;
    e.plan(
        "llm",
        vec![PlanFeature {
            feature_key: "tokens".into(),
            allocation: Some(Allocation::MaxCount(Limit::Finite(100))),
        }],
    )
    .await;
    e.grant("llm", "acme", None).await;
    let (answer, _) = e.engine.consume_usage(consumption("c", 10)).await.unwrap();
    assert!(answer.consumed);
    let tokens = |id: &str, amount| NewUsage {
        feature_key: "tokens".into(),
        ..event(id, amount, None)
    };
    let (outcomes, _) = e
        .engine
        .record_usage(vec![
            event("x", 5, None),
            tokens("x", 7),
            tokens("c", 1),
            tokens("y", 2),
            tokens("y", 2),
        ])
        .await
        .unwrap();
    // "x" is counted on whichever meter the batch writes first, and only there.
    let x = &outcomes[..2];
    assert!(
        x == [UsageOutcome::Recorded, UsageOutcome::Duplicate]
            || x == [UsageOutcome::Duplicate, UsageOutcome::Recorded],
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[2..],
        [
            UsageOutcome::Duplicate,
            UsageOutcome::Recorded,
            UsageOutcome::Duplicate
        ]
    );
    let calls = e.check("acme", None, "calls").await.meter.unwrap().usage;
    let tokens = e.check("acme", None, "tokens").await.meter.unwrap().usage;
    let x_on_calls = outcomes[0] == UsageOutcome::Recorded;
    assert_eq!((calls, tokens), if x_on_calls { (15, 2) } else { (10, 9) });
}

#[tokio::test]
async fn an_id_counts_once_across_meters_and_consumptions_on_sqlite() {
    an_id_counts_once_across_meters_and_consumptions(&engine().await).await;
}

#[tokio::test]
async fn an_id_counts_once_across_meters_and_consumptions_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    an_id_counts_once_across_meters_and_consumptions(
        &engine_on(&url, ManualClock::new(t0())).await,
    )
    .await;
}

/// Consumptions arriving together are committed together (fewer revisions than consumptions)
/// and each answers as it would alone: the limit holds across the group, a retry inside the
/// group replays the first answer, a key reused with another amount and an unknown feature are
/// refused without failing the others.
async fn consumptions_arriving_together_commit_together(e: TestEngine) {
    setup(&e).await;
    let e = Arc::new(e);
    let mut tasks = tokio::task::JoinSet::new();
    let asks = (0..40)
        .map(|i| consumption(&format!("g{i}"), 3))
        .chain((0..4).map(|_| consumption("same", 1)))
        .chain([consumption("reused", 1), consumption("reused", 2)])
        .chain([NewConsumption {
            feature_key: "nope".into(),
            ..consumption("unknown", 1)
        }]);
    for (i, ask) in asks.enumerate() {
        let e = e.clone();
        tasks.spawn(async move { (i, ask.clone(), e.engine.consume_usage(ask).await) });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(i, ..)| *i);
    let ok = |i: usize| answers[i].2.as_ref().unwrap();
    // 100 units: "same" (1, once) and one of "reused" (1 or 2) are drawn with the 3-unit asks.
    let consumed: Vec<&ConsumeAnswer> = (0..40)
        .map(ok)
        .map(|(a, _)| a)
        .filter(|a| a.consumed)
        .collect();
    let same: Vec<_> = (40..44).map(ok).collect();
    assert_eq!(same.iter().filter(|(_, replayed)| !replayed).count(), 1);
    assert!(
        same.iter()
            .all(|(a, _)| a.consumed && a.meter == same[0].0.meter)
    );
    let reused: Vec<_> = answers[44..46].iter().map(|(.., r)| r).collect();
    let first = reused.iter().filter(|r| r.is_ok()).count();
    assert_eq!(first, 1, "{reused:?}");
    assert!(
        reused
            .iter()
            .any(|r| matches!(r, Err(DomainError::IdempotencyKeyReused(id)) if id == "reused"))
    );
    assert!(
        matches!(answers[46].2, Err(DomainError::NotFound { .. })),
        "{:?}",
        answers[46].2
    );
    let reused_amount = answers[44..46]
        .iter()
        .find(|(.., r)| r.as_ref().is_ok_and(|(a, _)| a.consumed))
        .map_or(0, |(_, ask, _)| ask.amount);
    let usage = e.check("acme", None, "calls").await.meter.unwrap().usage;
    assert_eq!(usage, 3 * consumed.len() as i64 + 1 + reused_amount);
    assert!(usage <= 100 && usage > 97, "usage {usage}");
    // Grouped: the consumptions share fewer revisions than there are of them.
    let mut revisions: Vec<u64> = consumed.iter().map(|a| a.revision).collect();
    assert!(revisions.iter().all(|r| *r > 0));
    revisions.sort_unstable();
    revisions.dedup();
    assert!(
        revisions.len() < consumed.len(),
        "{} revisions",
        revisions.len()
    );
}

#[tokio::test]
async fn consumptions_arriving_together_commit_together_on_sqlite() {
    consumptions_arriving_together_commit_together(engine().await).await;
}

#[tokio::test]
async fn consumptions_arriving_together_commit_together_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    consumptions_arriving_together_commit_together(engine_on(&url, ManualClock::new(t0())).await)
        .await;
}

/// A user id or unique value with a NUL is refused naming its field (PostgreSQL cannot store
/// one: it failed the whole batch as a storage error before).
#[tokio::test]
async fn control_characters_in_user_ids_are_refused_naming_the_field() {
    let url = tenantry_common::testing::postgres().create_database().await;
    let e = engine_on(&url, ManualClock::new(t0())).await;
    setup(&e).await;
    let nul = NewUsage {
        user_id: Some("u\0".into()),
        ..event("n", 1, None)
    };
    match e.engine.record_usage(vec![event("ok", 1, None), nul]).await {
        Err(DomainError::InvalidItems(items)) => {
            assert_eq!(items.len(), 1);
            assert_eq!((items[0].index, items[0].field.as_str()), (1, "user_id"));
        }
        other => panic!("{other:?}"),
    }
    let consume = NewConsumption {
        user_id: Some("\0".into()),
        ..consumption("c", 1)
    };
    assert!(matches!(
        e.engine.consume_usage(consume).await,
        Err(DomainError::InvalidArgument { ref field, .. }) if field == "user_id"
    ));
    assert_eq!(balance(&e).await, Some(100));
}

/// Ids and user ids are stored as sent, whatever characters they hold (PostgreSQL receives
/// them inside array literals, where quotes, backslashes, commas, braces and the word NULL
/// mean something): a retry of each is a duplicate, a consumption's retry replays its answer.
async fn ids_with_array_syntax_are_stored_as_sent(e: &TestEngine) {
    setup(e).await;
    let ids = [
        r#"q"uote"#,
        r"back\slash",
        "com,ma",
        "{brace}",
        "NULL",
        r#"\""#,
    ];
    let events: Vec<NewUsage> = ids
        .iter()
        .map(|id| NewUsage {
            user_id: Some(format!("zoë {id}")),
            ..event(id, 1, None)
        })
        .collect();
    let (first, _) = e.engine.record_usage(events.clone()).await.unwrap();
    assert_eq!(first, vec![UsageOutcome::Recorded; ids.len()]);
    let (again, _) = e.engine.record_usage(events).await.unwrap();
    assert_eq!(again, vec![UsageOutcome::Duplicate; ids.len()]);
    let (answer, replayed) = e
        .engine
        .consume_usage(consumption(r#"c"{1,NULL}\"#, 3))
        .await
        .unwrap();
    assert!(answer.consumed && !replayed);
    let (retry, replayed) = e
        .engine
        .consume_usage(consumption(r#"c"{1,NULL}\"#, 3))
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(retry, answer);
    assert_eq!(balance(e).await, Some(100 - ids.len() as i64 - 3));
}

#[tokio::test]
async fn ids_with_array_syntax_are_stored_as_sent_on_sqlite() {
    ids_with_array_syntax_are_stored_as_sent(&engine().await).await;
}

#[tokio::test]
async fn ids_with_array_syntax_are_stored_as_sent_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    ids_with_array_syntax_are_stored_as_sent(&engine_on(&url, ManualClock::new(t0())).await).await;
}

/// A retry answers as the first call did, its revision too (stored before its commit knew
/// it): a client passing it as `min_revision` reads the consumption on any replica.
async fn a_replayed_consumption_answers_the_revision_of_its_write(e: &TestEngine) {
    setup(e).await;
    let (first, _) = e
        .engine
        .consume_usage(consumption("once", 4))
        .await
        .unwrap();
    assert!(first.consumed && first.revision > 0);
    let (retry, replayed) = e
        .engine
        .consume_usage(consumption("once", 4))
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(retry, first);
    // Later writes move the newest revision on: a replay's is at or after its own write's.
    e.engine
        .consume_usage(consumption("next", 1))
        .await
        .unwrap();
    let (late, _) = e
        .engine
        .consume_usage(consumption("once", 4))
        .await
        .unwrap();
    assert!(late.revision > first.revision, "{late:?}");
    assert_eq!(balance(e).await, Some(95));
}

#[tokio::test]
async fn a_replayed_consumption_answers_the_revision_of_its_write_on_sqlite() {
    a_replayed_consumption_answers_the_revision_of_its_write(&engine().await).await;
}

/// On PostgreSQL the first call goes down the single-statement path and the retries down the
/// locked one (the key is taken).
#[tokio::test]
async fn a_replayed_consumption_answers_the_revision_of_its_write_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    a_replayed_consumption_answers_the_revision_of_its_write(
        &engine_on(&url, ManualClock::new(t0())).await,
    )
    .await;
}

/// A replica decides a consumption on the meter as its index holds it and writes it only if
/// the meter is still stored so: one that has not yet followed another replica's draws
/// decides on the stored meter instead, neither handing out units already taken nor writing
/// its stale meter over the other's draws.
#[tokio::test]
async fn a_replica_behind_another_decides_on_the_stored_meter() {
    let url = tenantry_common::testing::postgres().create_database().await;
    let clock = ManualClock::new(t0());
    let a = engine_on(&url, clock.clone()).await;
    setup(&a).await;
    let (first, _) = a.engine.consume_usage(consumption("a1", 1)).await.unwrap();
    assert!(first.consumed);
    // `b` holds the meter with 99 left, and does not hear of what `a` draws next.
    let b = engine_on(&url, clock.clone()).await;
    assert_eq!(balance(&b).await, Some(99));
    let (most, _) = a.engine.consume_usage(consumption("a2", 90)).await.unwrap();
    assert!(most.consumed);
    let reading = |answer: &ConsumeAnswer| {
        let meter = answer.meter.unwrap();
        (answer.consumed, meter.usage, meter.balance)
    };
    let (fits, _) = b.engine.consume_usage(consumption("b1", 5)).await.unwrap();
    assert_eq!(reading(&fits), (true, 96, Some(4)));
    let (too_much, _) = b.engine.consume_usage(consumption("b2", 5)).await.unwrap();
    assert_eq!(reading(&too_much), (false, 96, Some(4)));
    a.engine.catch_up().await.unwrap();
    b.engine.catch_up().await.unwrap();
    for e in [&a, &b] {
        let meter = e.check("acme", None, "calls").await.meter.unwrap();
        assert_eq!((meter.usage, meter.balance), (96, Some(4)));
    }
}

/// A usage batch, like a consumption, is decided on the meter as the replica's index holds it
/// and written only if the meter is still stored so: a replica behind another counts its
/// events on the stored meter, not over the other's.
#[tokio::test]
async fn a_batch_on_a_replica_behind_another_counts_on_the_stored_meter() {
    let url = tenantry_common::testing::postgres().create_database().await;
    let clock = ManualClock::new(t0());
    let a = engine_on(&url, clock.clone()).await;
    setup(&a).await;
    a.engine
        .record_usage(vec![event("a1", 10, None)])
        .await
        .unwrap();
    // `b` holds the meter with 90 left, and does not hear of what `a` records next.
    let b = engine_on(&url, clock.clone()).await;
    assert_eq!(balance(&b).await, Some(90));
    a.engine
        .record_usage(vec![event("a2", 20, None)])
        .await
        .unwrap();
    let (outcomes, _) = b
        .engine
        .record_usage(vec![event("b1", 5, None), event("b2", 1, None)])
        .await
        .unwrap();
    assert_eq!(outcomes, [UsageOutcome::Recorded; 2]);
    a.engine.catch_up().await.unwrap();
    b.engine.catch_up().await.unwrap();
    for e in [&a, &b] {
        let meter = e.check("acme", None, "calls").await.meter.unwrap();
        assert_eq!((meter.usage, meter.balance), (36, Some(64)));
    }
}

/// Consumption groups arriving faster than one announcement a window (`storage::notify`)
/// commit without a notification of their own, but a listening replica still hears of the
/// last of them, with no write after it to carry the announcement: it is woken without
/// waiting for its poll.
#[tokio::test]
async fn the_last_of_a_burst_of_consumptions_is_announced_to_listening_replicas() {
    use sea_orm::sqlx::postgres::PgListener;
    let url = tenantry_common::testing::postgres().create_database().await;
    let e = engine_on(&url, ManualClock::new(t0())).await;
    setup(&e).await;
    // The meter's first write (the locked path) announces itself like every locked write.
    e.engine.consume_usage(consumption("c0", 1)).await.unwrap();
    let store = &e.engine.store;
    let mut listener = PgListener::connect_with(store.connection().get_postgres_connection_pool())
        .await
        .unwrap();
    listener.listen(store.channel()).await.unwrap();
    // Back to back: the first announces itself, those after it fall inside its window.
    let mut last = 0;
    for i in 1..=5 {
        let (answer, _) = e
            .engine
            .consume_usage(consumption(&format!("c{i}"), 1))
            .await
            .unwrap();
        assert!(answer.consumed);
        last = answer.revision;
    }
    let announced = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let payload = listener.recv().await.unwrap().payload().to_owned();
            let revision: u64 = payload.split(' ').next().unwrap().parse().unwrap();
            if revision >= last {
                return revision;
            }
        }
    })
    .await;
    assert_eq!(
        announced.ok(),
        Some(last),
        "revision {last} was never announced"
    );
}

/// A consumption group's single statement writes only over meters stored as they were decided
/// on, and nothing at all when one moved or an event key is taken.
#[tokio::test]
async fn a_group_statement_writes_only_over_the_meters_it_decided_on() {
    use crate::app::ports::{DrawLane, MeterStore, Revisions, SeenMeter, Transactional};
    let url = tenantry_common::testing::postgres().create_database().await;
    let e = engine_on(&url, ManualClock::new(t0())).await;
    setup(&e).await;
    // The first consumption creates the meter (the locked path); the index then holds it.
    e.engine.consume_usage(consumption("c0", 1)).await.unwrap();
    let index = e.engine.index.current();
    let feature = metered_or_error(&index, "calls").unwrap().id;
    let owner = MeterKey::account("acme");
    let stored = index.meter("acme", None, feature).unwrap().clone();
    let mut after = stored.clone();
    after.usage += 5;
    after.allowance_used += 5;
    let mut other = after.clone();
    other.usage += 1;
    let usage = |id: &str| StoredUsage {
        tenant_id: "acme".into(),
        event_id: id.into(),
        feature_id: feature,
        user_id: None,
        amount: 5,
        counted: 5,
        occurred_at: t0(),
        received_at: t0(),
        outcome: StoredOutcome::Consumed,
        answer: None,
        unique: None,
        drawn: None,
    };
    let change = |state: &MeterState| {
        vec![IndexChange::UpsertMeter {
            tenant_id: "acme".into(),
            user_id: None,
            feature_id: feature,
            state: Box::new(state.clone()),
        }]
    };
    async fn draw(
        e: &TestEngine,
        (owner, feature): (&MeterKey, Uuid),
        (before, to): (&MeterState, &MeterState),
        usage: StoredUsage,
        changes: Vec<IndexChange>,
    ) -> Option<u64> {
        let seen = [SeenMeter {
            owner,
            feature_id: feature,
            before,
            after: Some(to),
        }];
        e.engine
            .store
            .draw_if_unchanged(&seen, &[usage], &changes, t0(), DrawLane::Pooled)
            .await
            .unwrap()
    }
    let write = |before, to, id| draw(&e, (&owner, feature), (before, to), usage(id), change(to));
    let revision = e.engine.store.revision().await.unwrap();
    // Unchanged: written, under the next revision.
    assert_eq!(write(&stored, &after, "d1").await, Some(revision + 1));
    // Moved (it is `after` now): nothing written.
    assert_eq!(write(&stored, &other, "d2").await, None);
    // A taken key: nothing written, the meter neither.
    assert_eq!(write(&after, &other, "d1").await, None);
    assert_eq!(e.engine.store.revision().await.unwrap(), revision + 1);
    let txn = e.engine.store.begin().await.unwrap();
    let keys = e
        .engine
        .store
        .stored_usage_keys(&txn, &[("acme", "d1"), ("acme", "d2")])
        .await
        .unwrap();
    e.engine.store.commit_plain(txn).await.unwrap();
    assert_eq!(keys, [("acme".to_owned(), "d1".to_owned())].into());
    // A replica loading the database holds `after`.
    let fresh = engine_on(&url, ManualClock::new(t0())).await;
    assert_eq!(
        fresh.engine.index.current().meter("acme", None, feature),
        Some(&after)
    );
}
