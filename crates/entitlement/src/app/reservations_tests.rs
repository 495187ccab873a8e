//! Reservations through the use-cases, on SQLite and PostgreSQL, with a manual clock.

use std::sync::Arc;

use chrono::TimeDelta;

use super::*;
use crate::app::metering::tests::{balance, setup};
use crate::app::testing::{engine, engine_on, t0};
use crate::clock::ManualClock;
use crate::domain::Justification;
use crate::domain::metering::{NewConsumption, NewUsage};

fn ask(id: &str, amount: i64, ttl_minutes: i64) -> NewReservation {
    NewReservation {
        id: id.into(),
        tenant_id: "acme".into(),
        user_id: Some("u1".into()),
        feature_key: "calls".into(),
        amount,
        ttl: TimeDelta::minutes(ttl_minutes),
    }
}

#[tokio::test]
async fn a_hold_counts_as_spent_until_committed_for_less_and_the_rest_returns() {
    let e = engine().await;
    setup(&e).await;
    let (held, answer, replayed) = e.engine.reserve(ask("job-1", 60, 10)).await.unwrap();
    assert!(answer.held && !replayed);
    assert_eq!(held.status, ReservationStatus::Held);
    let meter = answer.meter.unwrap();
    assert_eq!((meter.balance, meter.held, meter.usage), (Some(40), 60, 0));
    // Every check counts the hold: 41 is more than is left.
    assert_eq!(balance(&e).await, Some(40));
    let consumed = e
        .engine
        .consume_usage(NewConsumption {
            id: "c1".into(),
            tenant_id: "acme".into(),
            user_id: None,
            feature_key: "calls".into(),
            amount: 41,
        })
        .await
        .unwrap()
        .0;
    assert_eq!(
        (consumed.consumed, consumed.justification),
        (false, Some(Justification::InsufficientBalance))
    );
    // The job used 25 of the 60 it held.
    let done = e
        .engine
        .commit_reservation(held.id, Some(25))
        .await
        .unwrap();
    assert_eq!(done.reservation.status, ReservationStatus::Committed);
    assert_eq!(done.reservation.committed_amount, Some(25));
    assert_eq!(
        (done.meter.balance, done.meter.usage, done.meter.held),
        (Some(75), 25, 0)
    );
    assert_eq!(balance(&e).await, Some(75));
    // A retried commit answers the same and draws nothing more; another amount is refused.
    let again = e
        .engine
        .commit_reservation(held.id, Some(25))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(balance(&e).await, Some(75));
    assert!(matches!(
        e.engine.commit_reservation(held.id, Some(30)).await,
        Err(DomainError::Reservation(ReservationRefusal::Settled(
            ReservationStatus::Committed
        )))
    ));
    assert!(matches!(
        e.engine.release_reservation(held.id).await,
        Err(DomainError::Reservation(ReservationRefusal::Settled(
            ReservationStatus::Committed
        )))
    ));
}

#[tokio::test]
async fn a_reservation_is_idempotent_on_its_key_and_refused_past_a_hard_limit() {
    let e = engine().await;
    setup(&e).await;
    let (first, _, _) = e.engine.reserve(ask("job-1", 70, 10)).await.unwrap();
    let (again, answer, replayed) = e.engine.reserve(ask("job-1", 70, 10)).await.unwrap();
    assert!(replayed && answer.held);
    assert_eq!(again.id, first.id);
    assert_eq!(balance(&e).await, Some(30));
    assert!(matches!(
        e.engine.reserve(ask("job-1", 71, 10)).await,
        Err(DomainError::IdempotencyKeyReused(_))
    ));
    let (refused, answer, _) = e.engine.reserve(ask("job-2", 31, 10)).await.unwrap();
    assert_eq!(refused.status, ReservationStatus::Refused);
    assert_eq!(
        (answer.held, answer.justification),
        (false, Some(Justification::InsufficientBalance))
    );
    assert!(matches!(
        e.engine.commit_reservation(refused.id, None).await,
        Err(DomainError::Reservation(ReservationRefusal::Settled(
            ReservationStatus::Refused
        )))
    ));
    // Released: the 70 return; releasing again changes nothing.
    let released = e.engine.release_reservation(first.id).await.unwrap();
    assert_eq!(released.reservation.status, ReservationStatus::Released);
    assert_eq!(balance(&e).await, Some(100));
    assert!(
        e.engine
            .release_reservation(first.id)
            .await
            .unwrap()
            .replayed
    );
    assert!(matches!(
        e.engine.commit_reservation(first.id, None).await,
        Err(DomainError::Reservation(ReservationRefusal::Settled(
            ReservationStatus::Released
        )))
    ));
}

#[tokio::test]
async fn an_expired_hold_frees_itself_and_cannot_be_committed() {
    let e = engine().await;
    setup(&e).await;
    let (held, _, _) = e.engine.reserve(ask("job-1", 90, 5)).await.unwrap();
    assert_eq!(balance(&e).await, Some(10));
    e.clock.advance(TimeDelta::minutes(5));
    // No write happened: the check alone sees the hold gone.
    assert_eq!(balance(&e).await, Some(100));
    assert_eq!(
        e.engine.reservation(held.id).await.unwrap().status,
        ReservationStatus::Expired
    );
    assert!(matches!(
        e.engine.commit_reservation(held.id, None).await,
        Err(DomainError::Reservation(ReservationRefusal::Expired))
    ));
    let released = e.engine.release_reservation(held.id).await.unwrap();
    assert!(released.replayed);
    assert_eq!(released.reservation.status, ReservationStatus::Expired);
    // The next write forgets it; usage draws from the whole balance.
    e.engine
        .record_usage(vec![NewUsage {
            id: "u".into(),
            tenant_id: "acme".into(),
            user_id: None,
            feature_key: "calls".into(),
            amount: 100,
            at: None,
            unique: None,
        }])
        .await
        .unwrap();
    assert_eq!(balance(&e).await, Some(0));
    let view = e.engine.meter_view("acme", None, "calls", 0).await.unwrap();
    assert_eq!(view.reading.held, 0);
}

#[tokio::test]
async fn bad_reservations_are_refused_with_their_field() {
    let e = engine().await;
    setup(&e).await;
    for (bad, field) in [
        (ask("", 1, 1), "id"),
        (ask("k", 0, 1), "amount"),
        (
            NewReservation {
                ttl: TimeDelta::zero(),
                ..ask("k", 1, 1)
            },
            "ttl_seconds",
        ),
        (ask("k", 1, 60 * 24 * 8), "ttl_seconds"),
    ] {
        match e.engine.reserve(bad).await {
            Err(DomainError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected {field} refused, got {other:?}"),
        }
    }
    let (held, _, _) = e.engine.reserve(ask("k", 10, 1)).await.unwrap();
    assert!(matches!(
        e.engine.commit_reservation(held.id, Some(11)).await,
        Err(DomainError::InvalidArgument { ref field, .. }) if field == "amount"
    ));
    assert!(matches!(
        e.engine.commit_reservation(Uuid::now_v7(), None).await,
        Err(DomainError::NotFound {
            kind: "reservation",
            ..
        })
    ));
    // Nothing of the refused commits was drawn.
    assert_eq!(balance(&e).await, Some(90));
}

/// Two replicas on one PostgreSQL reserve the last units of a hard limit at once: together
/// they never hold more than it.
#[tokio::test]
async fn parallel_reservations_on_two_replicas_never_hold_more_than_the_limit() {
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
        tasks.spawn(async move {
            let (r, _, _) = replica
                .engine
                .reserve(ask(&format!("r{i}"), 3, 10))
                .await
                .unwrap();
            r
        });
    }
    let held: Vec<Reservation> = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|r| r.status == ReservationStatus::Held)
        .collect();
    assert_eq!(held.len(), 33);
    // Committing them all (alternating replicas) draws exactly what was held.
    for (i, r) in held.iter().enumerate() {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.engine.commit_reservation(r.id, None).await.unwrap();
    }
    a.engine.catch_up().await.unwrap();
    let meter = a.check("acme", None, "calls").await.meter.unwrap();
    assert_eq!((meter.usage, meter.balance, meter.held), (99, Some(1), 0));
}
