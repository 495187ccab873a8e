//! Two scheduler replicas over one database (SQLite, and the test run's PostgreSQL), a manual
//! clock: each transition's event reaches the outbox exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::EntityTrait;
use serde_json::Value;
use uuid::Uuid;

use crate::app::ports::{Transactional, TransitionStore};
use crate::app::testing::{TestEngine, engine_on, t0};
use crate::clock::ManualClock;
use crate::domain::webhook::types;
use crate::domain::{AllocationType, Grant, GrantInput, GrantPatch, GrantSource, PlanFeature};
use crate::storage::entities::webhook_outbox;

const DAY: i64 = 86_400;

fn leads() -> Vec<Duration> {
    vec![Duration::from_secs(7 * 86_400), Duration::from_secs(86_400)]
}

fn at(days: f64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds((days * DAY as f64) as i64)
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// A transition event as received: type, grant, lead (seconds), due time.
type Seen = (&'static str, Uuid, i64, DateTime<Utc>);

struct Replicas {
    a: TestEngine,
    b: TestEngine,
    clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
}

async fn replicas(url: String, dir: Option<tempfile::TempDir>) -> Replicas {
    let clock = ManualClock::new(t0());
    let a = engine_on(&url, clock.clone()).await;
    let b = engine_on(&url, clock.clone()).await;
    a.account("acme", None).await;
    a.feature("reports", AllocationType::Bool, &[]).await;
    a.plan("pro", vec![PlanFeature::bare("reports")]).await;
    a.webhook_endpoint().await;
    let r = Replicas {
        a,
        b,
        clock,
        _dir: dir,
    };
    // The first round starts the scheduler's clock.
    r.round().await;
    r
}

async fn sqlite() -> Replicas {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("e.db").display());
    replicas(url, Some(dir)).await
}

async fn postgres() -> Replicas {
    let url = tenantry_common::testing::postgres().create_database().await;
    replicas(url, None).await
}

impl Replicas {
    /// Both replicas run a round at the same time; answers how many events they sent.
    async fn round(&self) -> usize {
        let leads = leads();
        let (a, b) = tokio::join!(
            self.a.engine.fire_transitions(&leads),
            self.b.engine.fire_transitions(&leads)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(!a.more && !b.more);
        a.sent + b.sent
    }

    /// Rounds every `step_hours` until `until`.
    async fn run_until(&self, until: DateTime<Utc>, step_hours: i64) {
        while self.clock.now_for_tests() < until {
            self.clock.advance(chrono::Duration::hours(step_hours));
            self.round().await;
        }
    }

    async fn grant(&self, starts: Option<f64>, expires: Option<f64>) -> Grant {
        let input = GrantInput {
            plan_id: "pro".into(),
            tenant_id: "acme".into(),
            starts_at: starts.map(|d| rfc(at(d))),
            expires_at: expires.map(|d| rfc(at(d))),
            ..GrantInput::default()
        };
        self.a
            .engine
            .create_grant(input, Some("tester"), None)
            .await
            .unwrap()
            .0
            .grants
            .remove(0)
            .grant
    }

    /// Every transition event in the outbox, each once (the test fails on a repeated ID).
    async fn seen(&self) -> Vec<Seen> {
        let rows = webhook_outbox::Entity::find()
            .all(self.a.engine.store().connection())
            .await
            .unwrap();
        let mut ids = BTreeMap::new();
        let mut seen = Vec::new();
        for row in rows {
            let events: Vec<Value> = serde_json::from_str(&row.events).unwrap();
            for event in events {
                let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
                let kind = [
                    types::GRANT_STARTED,
                    types::GRANT_EXPIRING,
                    types::GRANT_EXPIRED,
                ]
                .into_iter()
                .find(|t| body["type"] == *t);
                let Some(kind) = kind else { continue };
                let id = body["id"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone(), ()).is_none(), "{id} sent twice");
                assert_eq!(body["subject"], "acme");
                assert_eq!(body["data"]["planKey"], "pro");
                assert_eq!(body["data"]["featureKeys"], serde_json::json!(["reports"]));
                assert!(body["tenantryrevision"].as_u64().unwrap() > 0);
                let due: DateTime<Utc> = body["data"]["dueAt"].as_str().unwrap().parse().unwrap();
                assert_eq!(body["time"], body["data"]["dueAt"]);
                seen.push((
                    kind,
                    body["data"]["grant"]["id"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                    body["data"]["leadSeconds"].as_i64().unwrap_or(0),
                    due,
                ));
            }
        }
        seen.sort();
        seen
    }
}

fn sorted(mut v: Vec<Seen>) -> Vec<Seen> {
    v.sort();
    v
}

/// `expiring` once at each lead time, `expired` once at expiry, `started` once for a scheduled
/// grant; an extended grant fires at its new times only; a revoked one fires nothing.
async fn each_transition_fires_once(r: Replicas) {
    let trial = r.grant(None, Some(10.0)).await;
    let scheduled = r.grant(Some(2.0), Some(20.0)).await;
    let revoked = r.grant(None, Some(10.0)).await;
    let extended = r.grant(None, Some(5.0)).await;
    let forever = r.grant(None, None).await;
    r.run_until(at(1.0), 6).await;
    r.a.engine
        .revoke_grant(revoked.id, Some("tester"), None)
        .await
        .unwrap();
    r.a.engine
        .update_grant(
            extended.id,
            GrantPatch {
                id: extended.id.to_string(),
                expires_at: Some(Some(rfc(at(15.0)))),
                ..GrantPatch::default()
            },
            r.clock.now_for_tests(),
        )
        .await
        .unwrap();
    r.run_until(at(25.0), 6).await;
    let (e, x, s) = (
        types::GRANT_EXPIRING,
        types::GRANT_EXPIRED,
        types::GRANT_STARTED,
    );
    assert_eq!(
        r.seen().await,
        sorted(vec![
            (e, trial.id, 7 * DAY, at(3.0)),
            (e, trial.id, DAY, at(9.0)),
            (x, trial.id, 0, at(10.0)),
            (s, scheduled.id, 0, at(2.0)),
            (e, scheduled.id, 7 * DAY, at(13.0)),
            (e, scheduled.id, DAY, at(19.0)),
            (x, scheduled.id, 0, at(20.0)),
            // Its 7-day notice fell before it existed; its old 1-day notice (day 4) and expiry
            // (day 5) were moved before they were due.
            (e, extended.id, 7 * DAY, at(8.0)),
            (e, extended.id, DAY, at(14.0)),
            (x, extended.id, 0, at(15.0)),
        ])
    );
    assert!(
        r.seen()
            .await
            .iter()
            .all(|s| s.1 != forever.id && s.1 != revoked.id)
    );
    // Nothing more, however often the replicas look again.
    r.clock.advance(chrono::Duration::days(400));
    assert_eq!(r.round().await, 0);
}

/// After downtime the first round sends what fell due meanwhile, once; an `expiring` notice
/// the expiry overtook is not sent late.
async fn catch_up_after_downtime(r: Replicas) {
    let soon = r.grant(None, Some(10.0)).await;
    let later = r.grant(Some(4.0), Some(20.0)).await;
    r.clock.set(at(9.5));
    assert_eq!(
        r.round().await,
        3,
        "two notices of the first grant, the start of the second"
    );
    assert_eq!(r.round().await, 0);
    r.clock.set(at(30.0));
    assert_eq!(
        r.round().await,
        2,
        "both expiries, not the second grant's overtaken notices"
    );
    assert_eq!(r.round().await, 0);
    let (e, x, s) = (
        types::GRANT_EXPIRING,
        types::GRANT_EXPIRED,
        types::GRANT_STARTED,
    );
    assert_eq!(
        r.seen().await,
        sorted(vec![
            (e, soon.id, 7 * DAY, at(3.0)),
            (e, soon.id, DAY, at(9.0)),
            (x, soon.id, 0, at(10.0)),
            (s, later.id, 0, at(4.0)),
            (x, later.id, 0, at(20.0)),
        ])
    );
}

#[tokio::test]
async fn sqlite_each_transition_fires_once_across_replicas() {
    each_transition_fires_once(sqlite().await).await;
}

#[tokio::test]
async fn postgres_each_transition_fires_once_across_replicas() {
    each_transition_fires_once(postgres().await).await;
}

#[tokio::test]
async fn sqlite_catch_up_after_downtime_fires_each_missed_transition_once() {
    catch_up_after_downtime(sqlite().await).await;
}

#[tokio::test]
async fn postgres_catch_up_after_downtime_fires_each_missed_transition_once() {
    catch_up_after_downtime(postgres().await).await;
}

/// A full batch leaves the rest to the next round at once: none is lost or sent twice.
#[tokio::test]
async fn sqlite_a_backlog_larger_than_a_batch_drains_once() {
    let r = sqlite().await;
    let inputs: Vec<GrantInput> = (0..super::BATCH + 20)
        .map(|_| GrantInput {
            plan_id: "pro".into(),
            tenant_id: "acme".into(),
            expires_at: Some(rfc(at(0.5))),
            ..GrantInput::default()
        })
        .collect();
    let created =
        r.a.engine
            .create_grants(inputs, GrantSource::Api, Some("tester"), None)
            .await
            .unwrap();
    assert!(created.grants.is_some());
    r.clock.set(at(1.0));
    let leads = leads();
    let first = r.a.engine.fire_transitions(&leads).await.unwrap();
    assert!(first.more);
    assert_eq!(first.sent as u64, super::BATCH);
    let second = r.b.engine.fire_transitions(&leads).await.unwrap();
    assert_eq!(second.sent, 20);
    assert!(!second.more);
    let seen = r.seen().await;
    assert_eq!(seen.len() as u64, super::BATCH + 20);
    assert!(seen.iter().all(|s| s.0 == types::GRANT_EXPIRED));
}

/// An idle round reads only: it waits for no writer holding the database (SQLite's write lock
/// here), and moves the cursor once a minute.
#[tokio::test]
async fn sqlite_an_idle_round_takes_no_write_lock() {
    let r = sqlite().await;
    let store = r.a.engine.store();
    r.grant(None, Some(10.0)).await;
    assert_eq!(store.transition_cursor().await.unwrap(), Some(t0()));
    r.clock.advance(chrono::Duration::seconds(30));
    let writer = store.begin().await.unwrap();
    let round = tokio::time::timeout(
        Duration::from_secs(2),
        r.b.engine.fire_transitions(&leads()),
    )
    .await
    .expect("an idle round waits for no writer")
    .unwrap();
    assert_eq!(round.sent, 0);
    drop(writer);
    assert_eq!(store.transition_cursor().await.unwrap(), Some(t0()));
    r.clock.advance(chrono::Duration::seconds(60));
    assert_eq!(r.round().await, 0);
    assert_eq!(
        store.transition_cursor().await.unwrap(),
        Some(t0() + chrono::Duration::seconds(90))
    );
}
