//! The reference model: a plain ledger of one account's meter, stepped by the same random
//! operations as the real engine (SQLite, manual clock) — usage in order, late within the
//! period, late from a closed one and duplicated; consumption and its retries; credit grants
//! (priorities, future starts, expiries, rollovers) and voids; reservations held, committed
//! for less, released and left to expire; a plan upgrade mid-period; time travel across
//! resets. After every step the engine's check must report the model's balance, usage,
//! overage and held amount, and every consumption and reservation must get the model's
//! answer. Each sequence runs on a fresh account from a random instant; a mismatch prints its
//! seed and the steps that led to it.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenantry_index::Metering;
use tenantry_index::metering::{PeriodWindow, Recurrence, UsagePeriod};

use super::*;
use crate::app::testing::{TestEngine, engine, feature_doc, t0};
use crate::domain::metering::{NewConsumption, NewCreditGrant, NewUsage, Rollover, UsageOutcome};
use crate::domain::{Aggregation, Allocation, AllocationType, Limit, PlanFeature};

/// Sequences run by default (each of `STEPS` steps, every step compared).
const SEQUENCES: u64 = 1_250;
const STEPS: usize = 8;
const BASE: i64 = 100;
const UPGRADED: i64 = 300;

fn period() -> UsagePeriod {
    UsagePeriod::new(Recurrence::MONTH, t0() - TimeDelta::days(3))
}

/// Priority, no expiry, expiry, start, id: lower burns first.
type BurnKey = (u32, bool, Option<DateTime<Utc>>, DateTime<Utc>, Uuid);

/// A credit as the model keeps it.
#[derive(Debug, Clone)]
struct ModelCredit {
    id: Uuid,
    priority: u32,
    effective_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    voided_at: Option<DateTime<Utc>>,
    remaining: i64,
    rollover: Rollover,
}

impl ModelCredit {
    fn usable_at(&self, at: DateTime<Utc>) -> bool {
        self.effective_at <= at
            && self.expires_at.is_none_or(|e| at < e)
            && self.voided_at.is_none_or(|v| at < v)
    }
}

/// One account's meter of one feature, kept the plain way.
#[derive(Debug, Clone)]
struct Model {
    soft: bool,
    carry: bool,
    /// When the base plan was granted (nothing is issued before).
    granted_at: DateTime<Utc>,
    upgraded_at: Option<DateTime<Utc>>,
    window: PeriodWindow,
    allowance_used: i64,
    usage: i64,
    overage: i64,
    last_draw: DateTime<Utc>,
    credits: Vec<ModelCredit>,
    /// Reservation id → (amount, expiry).
    holds: HashMap<Uuid, (i64, DateTime<Utc>)>,
}

impl Model {
    fn new(soft: bool, carry: bool, now: DateTime<Utc>) -> Self {
        let window = period().containing(now).unwrap();
        Self {
            soft,
            carry,
            granted_at: now,
            upgraded_at: None,
            window,
            allowance_used: 0,
            usage: 0,
            overage: 0,
            last_draw: window.start,
            credits: Vec::new(),
            holds: HashMap::new(),
        }
    }

    /// The plan allowance in force at `at` (a draw dated before a plan began is not covered
    /// by it).
    fn allocation(&self, at: DateTime<Utc>) -> i64 {
        match self.upgraded_at {
            Some(u) if u <= at => UPGRADED,
            _ if self.granted_at <= at => BASE,
            _ => 0,
        }
    }

    /// Closes periods until `at` is in the open one.
    fn advance(&mut self, at: DateTime<Utc>) {
        while at >= self.window.end {
            let end = self.window.end;
            for c in &mut self.credits {
                if c.effective_at < end {
                    c.remaining = c.remaining.max(c.rollover.min).min(c.rollover.max);
                }
            }
            self.credits.retain(|c| {
                c.expires_at.is_none_or(|e| end < e)
                    && c.voided_at.is_none_or(|v| end < v)
                    && c.remaining > 0
            });
            let carried = if self.carry { self.overage } else { 0 };
            self.window = period().window(self.window.index + 1).unwrap();
            self.allowance_used = 0;
            self.usage = 0;
            self.overage = 0;
            self.last_draw = self.window.start;
            if carried > 0 {
                let start = self.window.start;
                self.overage = self.take(start, carried);
            }
        }
    }

    /// Takes `amount` in burn-down order at `at`; answers what nothing covered.
    fn take(&mut self, at: DateTime<Utc>, amount: i64) -> i64 {
        // The allowance is a credit of priority 10 expiring at the period's end, issued at its
        // start, with the nil id.
        let allowance_key = (
            10,
            false,
            Some(self.window.end),
            self.window.start,
            Uuid::nil(),
        );
        let mut order: Vec<BurnKey> = self
            .credits
            .iter()
            .filter(|c| c.usable_at(at))
            .map(|c| {
                (
                    c.priority,
                    c.expires_at.is_none(),
                    c.expires_at,
                    c.effective_at,
                    c.id,
                )
            })
            .collect();
        order.push(allowance_key);
        order.sort();
        let mut rest = amount;
        for key in order {
            if key.4.is_nil() {
                let left = (self.allocation(at) - self.allowance_used).max(0);
                let taken = left.min(rest);
                self.allowance_used += taken;
                rest -= taken;
            } else {
                let c = self.credits.iter_mut().find(|c| c.id == key.4).unwrap();
                let taken = c.remaining.min(rest);
                c.remaining -= taken;
                rest -= taken;
            }
        }
        rest
    }

    fn draw(&mut self, at: DateTime<Utc>, amount: i64) {
        self.advance(at);
        let at = at.max(self.last_draw);
        self.last_draw = at;
        let uncovered = self.take(at, amount);
        self.usage += amount;
        self.overage += uncovered;
    }

    /// (balance after holds, usage, overage, held) at `at`.
    fn reading(&self, at: DateTime<Utc>) -> (i64, i64, i64, i64) {
        let mut ahead = self.clone();
        ahead.advance(at);
        let at_in = at.max(ahead.window.start);
        let credits: i64 = ahead
            .credits
            .iter()
            .filter(|c| c.usable_at(at_in))
            .map(|c| c.remaining)
            .sum();
        let held: i64 = self
            .holds
            .values()
            .filter(|(_, expires)| at < *expires)
            .map(|(a, _)| a)
            .sum();
        let balance = (ahead.allocation(at) - ahead.allowance_used).max(0) + credits;
        ((balance - held).max(0), ahead.usage, ahead.overage, held)
    }

    /// Whether `amount` may be consumed or held at `at`.
    fn allows(&self, at: DateTime<Utc>, amount: i64) -> bool {
        self.soft || self.reading(at).0 >= amount
    }
}

/// The steps of one sequence so far, for a failure's message.
struct Log {
    seed: u64,
    steps: Vec<String>,
}

impl Log {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "sequence seed {}: {what}\nsteps:\n  {}",
            self.seed,
            self.steps.join("\n  ")
        );
    }
}

async fn world() -> TestEngine {
    let e = engine().await;
    for (key, soft, carry) in [("hard", false, false), ("soft", true, true)] {
        let mut doc = feature_doc(key, AllocationType::Metered, &[]);
        doc.feature.metering = Some(Metering {
            unit: "call".into(),
            aggregation: Aggregation::Sum,
            period: period(),
            soft_limit: soft,
            carry_overage: carry,
        });
        e.engine.create_feature(doc, None).await.unwrap();
    }
    for (plan, amount) in [("base", BASE), ("big", UPGRADED)] {
        e.plan(
            plan,
            ["hard", "soft"]
                .into_iter()
                .map(|key| PlanFeature {
                    feature_key: key.into(),
                    allocation: Some(Allocation::MaxCount(Limit::Finite(amount as u64))),
                })
                .collect(),
        )
        .await;
    }
    e
}

async fn run_sequence(e: &TestEngine, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let tenant = format!("m{seed}");
    let soft = rng.random_bool(0.5);
    let key = if soft { "soft" } else { "hard" };
    // Some random time later (the clock only moves forward: a replica never answers as of
    // before a write it has seen).
    e.clock
        .advance(TimeDelta::minutes(rng.random_range(0..60 * 24 * 30)));
    e.account(&tenant, None).await;
    e.grant("base", &tenant, None).await;
    let mut model = Model::new(soft, soft, e.engine.now());
    let mut log = Log {
        seed,
        steps: vec![format!("{tenant} on {key} at {}", e.engine.now())],
    };
    let mut event_ids: Vec<(String, i64)> = Vec::new();
    let mut consumed: Vec<(String, i64, bool)> = Vec::new();
    let mut reservations: Vec<Uuid> = Vec::new();
    let mut counter = 0;
    for _ in 0..STEPS {
        counter += 1;
        let now = e.engine.now();
        match rng.random_range(0..100) {
            // Usage now, or late within the open period.
            0..=21 => {
                let amount = rng.random_range(0..40);
                let at = if rng.random_bool(0.3) {
                    Some(now - TimeDelta::minutes(rng.random_range(0..60 * 24 * 5)))
                } else {
                    None
                };
                let id = format!("u{counter}");
                log.steps.push(format!("usage {id} {amount} at {at:?}"));
                let outcome = record(e, &tenant, key, &id, amount, at).await;
                model.advance(now);
                let at = at.unwrap_or(now);
                let expected = if at < model.window.start {
                    UsageOutcome::Late
                } else {
                    model.draw(at, amount);
                    UsageOutcome::Recorded
                };
                if outcome != expected {
                    log.fail(&format!(
                        "usage answered {outcome:?}, the model {expected:?}"
                    ));
                }
                event_ids.push((id, amount));
            }
            // A duplicate.
            22..=27 if !event_ids.is_empty() => {
                let (id, amount) = event_ids[rng.random_range(0..event_ids.len())].clone();
                log.steps.push(format!("usage again {id}"));
                let outcome = record(e, &tenant, key, &id, amount, None).await;
                if outcome != UsageOutcome::Duplicate {
                    log.fail(&format!("a duplicate answered {outcome:?}"));
                }
            }
            // Consumption, or a retry of one.
            28..=41 => {
                let retry = !consumed.is_empty() && rng.random_bool(0.2);
                let (id, amount) = if retry {
                    let (id, amount, _) = consumed[rng.random_range(0..consumed.len())].clone();
                    (id, amount)
                } else {
                    (format!("c{counter}"), rng.random_range(1..60))
                };
                log.steps
                    .push(format!("consume {id} {amount} (retry {retry})"));
                let (answer, replayed) = e
                    .engine
                    .consume_usage(NewConsumption {
                        id: id.clone(),
                        tenant_id: tenant.clone(),
                        user_id: None,
                        feature_key: key.into(),
                        amount,
                    })
                    .await
                    .unwrap();
                let expected = if retry {
                    consumed.iter().find(|c| c.0 == id).unwrap().2
                } else {
                    model.advance(now);
                    let allowed = model.allows(now, amount);
                    if allowed {
                        model.draw(now, amount);
                    }
                    consumed.push((id, amount, allowed));
                    allowed
                };
                if answer.consumed != expected || replayed != retry {
                    log.fail(&format!(
                        "consumed {} (replayed {replayed}), the model {expected}",
                        answer.consumed
                    ));
                }
            }
            // A credit grant.
            42..=51 => {
                let amount = rng.random_range(1..80);
                let priority = [1, 10, 20][rng.random_range(0..3)];
                let effective_at = now + TimeDelta::hours(rng.random_range(0..3) * 12);
                let expires_at = rng
                    .random_bool(0.5)
                    .then(|| effective_at + TimeDelta::hours(rng.random_range(1..24 * 45)));
                let min = rng.random_range(0..=amount / 2);
                let rollover = Rollover {
                    min,
                    max: rng.random_range(min..=amount),
                };
                log.steps.push(format!(
                    "credit {amount} p{priority} from {effective_at} to {expires_at:?} {rollover:?}"
                ));
                let grant = e
                    .engine
                    .create_credit_grant(NewCreditGrant {
                        tenant_id: tenant.clone(),
                        feature_key: key.into(),
                        amount,
                        priority: Some(priority),
                        effective_at: Some(effective_at),
                        expires_at,
                        rollover: Some(rollover),
                        metadata: serde_json::Value::Null,
                    })
                    .await
                    .unwrap()
                    .value;
                model.advance(now);
                model.credits.push(ModelCredit {
                    id: grant.id,
                    priority,
                    effective_at,
                    expires_at,
                    voided_at: None,
                    remaining: amount,
                    rollover,
                });
            }
            // A void.
            52..=55 if !model.credits.is_empty() => {
                let id = model.credits[rng.random_range(0..model.credits.len())].id;
                log.steps.push(format!("void {id}"));
                e.engine.void_credit_grant(id).await.unwrap();
                model.advance(now);
                if let Some(c) = model.credits.iter_mut().find(|c| c.id == id) {
                    c.voided_at = Some(c.voided_at.map_or(now, |v| v.min(now)));
                }
            }
            // A reservation.
            56..=65 => {
                let amount = rng.random_range(1..60);
                let ttl = TimeDelta::minutes(rng.random_range(1..60 * 24 * 3));
                log.steps.push(format!("reserve {amount} for {ttl}"));
                let (r, answer, _) = e
                    .engine
                    .reserve(NewReservation {
                        id: format!("r{counter}"),
                        tenant_id: tenant.clone(),
                        user_id: None,
                        feature_key: key.into(),
                        amount,
                        ttl,
                    })
                    .await
                    .unwrap();
                model.advance(now);
                let expected = model.allows(now, amount);
                if answer.held != expected {
                    log.fail(&format!("held {}, the model {expected}", answer.held));
                }
                if expected {
                    model.holds.insert(r.id, (amount, now + ttl));
                    reservations.push(r.id);
                }
            }
            // A commit (perhaps for less, perhaps too late) or a release.
            66..=75 if !reservations.is_empty() => {
                let id = reservations.swap_remove(rng.random_range(0..reservations.len()));
                let (amount, expires_at) = model.holds[&id];
                let live = now < expires_at;
                model.advance(now);
                if rng.random_bool(0.7) {
                    let part = rng.random_range(0..=amount);
                    log.steps.push(format!("commit {id} {part} (live {live})"));
                    match e.engine.commit_reservation(id, Some(part)).await {
                        Ok(_) if live => {
                            model.holds.remove(&id);
                            model.draw(now, part);
                        }
                        Err(DomainError::Reservation(ReservationRefusal::Expired)) if !live => {
                            model.holds.remove(&id);
                        }
                        other => log.fail(&format!("commit answered {other:?}")),
                    }
                } else {
                    log.steps.push(format!("release {id} (live {live})"));
                    let released = e.engine.release_reservation(id).await.unwrap();
                    let expected = if live {
                        ReservationStatus::Released
                    } else {
                        ReservationStatus::Expired
                    };
                    if released.reservation.status != expected {
                        log.fail(&format!("released as {:?}", released.reservation.status));
                    }
                    model.holds.remove(&id);
                }
            }
            // A plan upgrade (merged by max: 300 a period from now on).
            76..=78 if model.upgraded_at.is_none() => {
                log.steps.push("upgrade".into());
                e.grant("big", &tenant, None).await;
                model.upgraded_at = Some(now);
            }
            // Time passes: minutes, hours, days, or past a reset.
            _ => {
                let by = match rng.random_range(0..4) {
                    0 => TimeDelta::minutes(rng.random_range(1..120)),
                    1 => TimeDelta::hours(rng.random_range(1..48)),
                    2 => TimeDelta::days(rng.random_range(1..12)),
                    _ => TimeDelta::days(rng.random_range(25..70)),
                };
                log.steps.push(format!("time passes {by}"));
                e.clock.advance(by);
            }
        }
        let now = e.engine.now();
        let meter = e
            .check(&tenant, None, key)
            .await
            .meter
            .unwrap_or_else(|| log.fail("the check reported no meter"));
        let got = (
            meter.balance.unwrap_or(i64::MIN),
            meter.usage,
            meter.overage,
            meter.held,
        );
        let expected = model.reading(now);
        if got != expected {
            log.fail(&format!(
                "(balance, usage, overage, held) {got:?}, the model {expected:?}"
            ));
        }
    }
}

async fn record(
    e: &TestEngine,
    tenant: &str,
    key: &str,
    id: &str,
    amount: i64,
    at: Option<DateTime<Utc>>,
) -> UsageOutcome {
    e.engine
        .record_usage(vec![NewUsage {
            id: id.into(),
            tenant_id: tenant.into(),
            user_id: None,
            feature_key: key.into(),
            amount,
            at,
            unique: None,
        }])
        .await
        .unwrap()
        .0[0]
}

/// `SEQUENCES` × `STEPS` compared steps (`TENANTRY_MODEL_SEQUENCES` runs more).
#[tokio::test]
async fn the_engine_agrees_with_the_reference_model() {
    let sequences = std::env::var("TENANTRY_MODEL_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEQUENCES);
    let e = world().await;
    for seed in 0..sequences {
        run_sequence(&e, seed).await;
    }
}
