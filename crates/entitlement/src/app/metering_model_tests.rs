//! The reference model: a plain ledger of one account's meter, stepped by the same random
//! operations as the real engine (manual clock; SQLite, and PostgreSQL with fewer sequences) —
//! usage in batches, in order, late within the period, late from a closed one and duplicated,
//! under each aggregation (SUM, COUNT, MAX, UNIQUE_COUNT); consumption and its retries;
//! credit grants (priorities, future starts, expiries, rollovers) and voids; reservations
//! held, retried, committed for less, released and left to expire; plan changes (upgrades, to
//! an unlimited plan too, a downgrade or a revocation, an expiry set mid-period, a grant
//! deleted, a plan granted again) under both merge policies; manual resets; the account
//! deleted and reactivated; time travel across resets; hard and soft limits, with and without
//! carried overage. After every step the engine's check (one unit or a random amount) must
//! give the model's answer and report its balance, usage, overage and held amount, the
//! meter's own reading must agree, and every write must get the model's answer; every
//! `REPLICA_EVERY` sequences a new replica loads the index and answers for each account. Each
//! sequence runs on a fresh account from a random instant; a mismatch prints its seed, its
//! start and the steps that led to it, and how to run that one sequence again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenantry_index::Metering;
use tenantry_index::metering::{PeriodWindow, Recurrence, UsagePeriod};

use super::*;
use crate::app::checks::CheckQuery;
use crate::app::testing::{TestEngine, engine_on, feature_doc, feature_query, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{NewConsumption, NewCreditGrant, NewUsage, Rollover, UsageOutcome};
use crate::domain::{
    Aggregation, Allocation, AllocationType, AllowReason, GrantPatch, Justification, Limit,
    MergePolicy, PlanFeature,
};

/// Sequences run by default on SQLite (each of `STEPS` steps, every step compared).
const SEQUENCES: u64 = 1_250;
/// Sequences run by default on PostgreSQL (the same engine over the other database).
const PG_SEQUENCES: u64 = 150;
const STEPS: usize = 8;
const BASE: i64 = 100;
const UPGRADED: i64 = 300;
/// The plans: key and amount a period (`None`: unlimited).
const PLANS: [(&str, Option<i64>); 3] = [
    ("base", Some(BASE)),
    ("big", Some(UPGRADED)),
    ("unlimited", None),
];

fn period() -> UsagePeriod {
    UsagePeriod::new(Recurrence::MONTH, t0() - TimeDelta::days(3))
}

/// How the sequence's feature counts.
#[derive(Debug, Clone, Copy)]
struct Kind {
    aggregation: Aggregation,
    soft: bool,
    carry: bool,
    /// Stacked plans' allocations add up (else the largest wins).
    summed: bool,
}

impl Kind {
    fn all() -> Vec<Kind> {
        let mut kinds = Vec::new();
        for aggregation in [
            Aggregation::Sum,
            Aggregation::Count,
            Aggregation::Max,
            Aggregation::UniqueCount,
        ] {
            for (soft, carry) in [(false, false), (false, true), (true, false), (true, true)] {
                for summed in [false, true] {
                    kinds.push(Kind {
                        aggregation,
                        soft,
                        carry,
                        summed,
                    });
                }
            }
        }
        kinds
    }

    fn key(self) -> String {
        format!(
            "{:?}-{}{}{}",
            self.aggregation,
            if self.soft { "soft" } else { "hard" },
            if self.carry { "-carry" } else { "" },
            if self.summed { "-summed" } else { "" }
        )
        .to_lowercase()
    }
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

/// A plan granted to the account: `amount` a period while it is active (`None`: unlimited).
#[derive(Debug, Clone)]
struct ModelGrant {
    id: Uuid,
    amount: Option<i64>,
    starts_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl ModelGrant {
    fn active_at(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at
            && self.expires_at.is_none_or(|e| at < e)
            && self.revoked_at.is_none_or(|r| at < r)
    }
}

/// What a check (or a consumption, or a reservation) should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    result: bool,
    /// The metering justification (`None` when the answer is a plan's, not the meter's).
    justification: Option<Justification>,
    allow_reason: Option<AllowReason>,
    /// Whether the answer carries the meter.
    metered: bool,
}

/// One account's meter of one feature, kept the plain way.
#[derive(Debug, Clone)]
struct Model {
    kind: Kind,
    deleted: bool,
    grants: Vec<ModelGrant>,
    window: PeriodWindow,
    allowance_used: i64,
    usage: i64,
    overage: i64,
    last_draw: DateTime<Utc>,
    credits: Vec<ModelCredit>,
    /// Reservation id → (amount, expiry).
    holds: HashMap<Uuid, (i64, DateTime<Utc>)>,
    /// The `unique` values counted in the open period.
    uniques: HashSet<String>,
}

impl Model {
    fn new(kind: Kind, now: DateTime<Utc>) -> Self {
        let window = period().containing(now).unwrap();
        Self {
            kind,
            deleted: false,
            grants: Vec::new(),
            window,
            allowance_used: 0,
            usage: 0,
            overage: 0,
            last_draw: window.start,
            credits: Vec::new(),
            holds: HashMap::new(),
            uniques: HashSet::new(),
        }
    }

    /// The plan allowance in force at `at` (`None`: unlimited): the plans active then merged
    /// (the largest, or the sum), nothing without one. A draw dated before a plan began is
    /// not covered by it.
    fn allocation(&self, at: DateTime<Utc>) -> Option<i64> {
        let mut merged = Some(0);
        for g in self.grants.iter().filter(|g| g.active_at(at)) {
            merged = match (merged, g.amount) {
                (Some(a), Some(b)) if self.kind.summed => Some(a + b),
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        merged
    }

    fn planned(&self, at: DateTime<Utc>) -> bool {
        self.grants.iter().any(|g| g.active_at(at))
    }

    /// Closes the open period at `end` and opens `next`.
    fn close(&mut self, end: DateTime<Utc>, next: PeriodWindow) {
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
        let carried = if self.kind.carry { self.overage } else { 0 };
        self.window = next;
        self.allowance_used = 0;
        self.usage = 0;
        self.overage = 0;
        self.last_draw = next.start;
        self.uniques.clear();
        if carried > 0 {
            self.overage = self.take(next.start, carried);
        }
    }

    /// Closes periods until `at` is in the open one.
    fn advance(&mut self, at: DateTime<Utc>) {
        while at >= self.window.end {
            let next = period().window(self.window.index + 1).unwrap();
            self.close(self.window.end, next);
        }
    }

    /// A manual reset at `now`: the open period closes there — after its start and its latest
    /// draw (a microsecond after, at least), so the draw is the closed period's — and a new
    /// one runs to the scheduled end (a reset pushed to the scheduled end is that reset).
    fn reset(&mut self, now: DateTime<Utc>) {
        self.advance(now);
        let at = now.max(self.last_draw + TimeDelta::microseconds(1));
        if at >= self.window.end {
            self.advance(at);
            if at == self.window.start {
                return;
            }
        }
        let next = PeriodWindow {
            start: at,
            end: self.window.end,
            index: self.window.index,
        };
        self.close(at, next);
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
                let left = self
                    .allocation(at)
                    .map_or(rest, |a| (a - self.allowance_used).max(0));
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

    /// What a reported event of the open period counts (the meter brought to now first).
    fn counted(&mut self, amount: i64, unique: &str) -> i64 {
        match self.kind.aggregation {
            Aggregation::Sum => amount,
            Aggregation::Count => 1,
            Aggregation::Max => (amount - self.usage).max(0),
            Aggregation::UniqueCount => i64::from(self.uniques.insert(unique.to_owned())),
        }
    }

    fn draw(&mut self, at: DateTime<Utc>, amount: i64) {
        self.advance(at);
        let at = at.max(self.last_draw);
        self.last_draw = at;
        let uncovered = self.take(at, amount);
        self.usage += amount;
        self.overage += uncovered;
    }

    /// (balance after holds — `None` when unlimited —, usage, overage, held) at `at`.
    fn reading(&self, at: DateTime<Utc>) -> (Option<i64>, i64, i64, i64) {
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
        let balance = ahead
            .allocation(at)
            .map(|a| ((a - ahead.allowance_used).max(0) + credits - held).max(0));
        (balance, ahead.usage, ahead.overage, held)
    }

    /// The answer to `requested` units at `at`: a plan entitles (within its balance, or past
    /// it with a soft limit); without one, credits entitle while they hold a balance.
    fn answer(&self, at: DateTime<Utc>, requested: i64) -> Answer {
        if self.deleted {
            return Answer {
                result: false,
                justification: Some(Justification::TenantNotFound),
                allow_reason: None,
                metered: false,
            };
        }
        let balance = self.reading(at).0;
        let planned = self.planned(at);
        if !planned && balance.is_none_or(|b| b <= 0) {
            return Answer {
                result: false,
                justification: None,
                allow_reason: None,
                metered: false,
            };
        }
        let (result, justification, allow_reason) = if balance.is_none_or(|b| b >= requested.max(1))
        {
            let reason = if planned {
                AllowReason::Grant
            } else {
                AllowReason::Credits
            };
            (true, None, Some(reason))
        } else if self.kind.soft {
            (true, None, Some(AllowReason::SoftLimitOverage))
        } else if balance.is_some_and(|b| b <= 0) {
            (false, Some(Justification::UsageLimitReached), None)
        } else {
            (false, Some(Justification::InsufficientBalance), None)
        };
        Answer {
            result,
            justification,
            allow_reason,
            metered: true,
        }
    }
}

/// The steps of one sequence so far, for a failure's message.
struct Log {
    seed: u64,
    start: DateTime<Utc>,
    steps: Vec<String>,
}

impl Log {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "sequence seed {} from {}: {what}\nsteps:\n  {}\nrun it alone: \
             TENANTRY_MODEL_SEED={} TENANTRY_MODEL_START={} cargo nextest run -p \
             tenantry-entitlement reference_model",
            self.seed,
            self.start.to_rfc3339(),
            self.steps.join("\n  "),
            self.seed,
            self.start.to_rfc3339(),
        );
    }
}

/// Whether `err` says the account is unknown (deleted).
fn account_gone(err: &DomainError) -> bool {
    if let DomainError::InvalidItems(items) = err {
        return items.iter().all(|i| i.field == "tenant_id");
    }
    matches!(
        err,
        DomainError::NotFound {
            kind: "account",
            ..
        }
    )
}

async fn world(e: TestEngine) -> TestEngine {
    let kinds = Kind::all();
    for kind in &kinds {
        let mut doc = feature_doc(&kind.key(), AllocationType::Metered, &[]);
        if kind.summed {
            doc.feature.merge_policy = MergePolicy::Sum;
        }
        doc.feature.metering = Some(Metering {
            unit: "call".into(),
            aggregation: kind.aggregation,
            period: period(),
            soft_limit: kind.soft,
            carry_overage: kind.carry,
        });
        e.engine.create_feature(doc, None).await.unwrap();
    }
    for (plan, amount) in PLANS {
        let limit = amount.map_or(Limit::Unlimited, |a| Limit::Finite(a as u64));
        e.plan(
            plan,
            kinds
                .iter()
                .map(|kind| PlanFeature {
                    feature_key: kind.key(),
                    allocation: Some(Allocation::MaxCount(limit)),
                })
                .collect(),
        )
        .await;
    }
    e
}

/// One sequence's state: the engine, the model and what was done so far.
struct Sequence<'a> {
    e: &'a TestEngine,
    rng: StdRng,
    tenant: String,
    key: String,
    model: Model,
    log: Log,
    events: Vec<(String, i64, String)>,
    consumed: Vec<(String, i64, bool)>,
    reservations: Vec<Uuid>,
    /// Reservations asked for: key, amount, time-to-live, whether held, id.
    reserved: Vec<(String, i64, TimeDelta, bool, Uuid)>,
    counter: usize,
}

impl Sequence<'_> {
    fn fail(&self, what: &str) -> ! {
        self.log.fail(what)
    }

    fn step(&mut self, what: String) {
        self.log.steps.push(what);
    }

    /// Compares an error of a write on a deleted account; answers whether it was one.
    fn gone<T: std::fmt::Debug>(&self, got: &std::result::Result<T, DomainError>) -> bool {
        if !self.model.deleted {
            return false;
        }
        match got {
            Err(err) if account_gone(err) => true,
            other => self.fail(&format!(
                "a write on the deleted account answered {other:?}, not that it is unknown"
            )),
        }
    }

    async fn grant(&mut self, plan: &str, amount: Option<i64>) {
        let now = self.e.engine.now();
        let grant = self.e.grant(plan, &self.tenant, None).await;
        self.model.grants.push(ModelGrant {
            id: grant.id,
            amount,
            starts_at: grant.starts_at.max(now),
            expires_at: None,
            revoked_at: None,
        });
    }

    /// A batch of one to four events: now or late, new ids or ids already taken (by an
    /// earlier event, one of the batch, or a consumption).
    async fn usage(&mut self, now: DateTime<Utc>) {
        let n = if self.rng.random_bool(0.6) {
            1
        } else {
            self.rng.random_range(2..=4)
        };
        let mut batch: Vec<(String, i64, Option<DateTime<Utc>>, String)> = Vec::new();
        for j in 0..n {
            let taken: Vec<String> = self
                .events
                .iter()
                .map(|e| e.0.clone())
                .chain(self.consumed.iter().map(|c| c.0.clone()))
                .chain(batch.iter().map(|b| b.0.clone()))
                .collect();
            let id = if !taken.is_empty() && self.rng.random_bool(0.2) {
                taken[self.rng.random_range(0..taken.len())].clone()
            } else {
                format!("u{}-{j}", self.counter)
            };
            let amount = self.rng.random_range(0..40);
            let at = self
                .rng
                .random_bool(0.3)
                .then(|| now - TimeDelta::minutes(self.rng.random_range(0..60 * 24 * 5)));
            let unique = format!("v{}", self.rng.random_range(0..6));
            batch.push((id, amount, at, unique));
        }
        self.step(format!("usage {batch:?}"));
        let events = batch
            .iter()
            .map(|(id, amount, at, unique)| NewUsage {
                id: id.clone(),
                tenant_id: self.tenant.clone(),
                user_id: None,
                feature_key: self.key.clone(),
                amount: *amount,
                at: *at,
                unique: Some(unique.clone()),
            })
            .collect();
        let got = self.e.engine.record_usage(events).await;
        if self.gone(&got) {
            return;
        }
        let (outcomes, _) = got.unwrap();
        // The engine closes the periods since the meter's last write (with the grants as they
        // are now) only when it writes the meter: when something is drawn.
        let mut ahead = self.model.clone();
        ahead.advance(now);
        let mut drawn = false;
        let mut seen: HashSet<String> = self
            .events
            .iter()
            .map(|e| e.0.clone())
            .chain(self.consumed.iter().map(|c| c.0.clone()))
            .collect();
        let mut expected = Vec::new();
        for (id, amount, at, unique) in batch {
            if !seen.insert(id.clone()) {
                expected.push(UsageOutcome::Duplicate);
                continue;
            }
            let at = at.unwrap_or(now.max(ahead.window.start));
            if at < ahead.window.start {
                expected.push(UsageOutcome::Late);
            } else {
                let counted = ahead.counted(amount, &unique);
                ahead.draw(at, counted);
                drawn = true;
                expected.push(UsageOutcome::Recorded);
            }
            self.events.push((id, amount, unique));
        }
        if drawn {
            self.model = ahead;
        }
        if outcomes != expected {
            self.fail(&format!(
                "usage answered {outcomes:?}, the model {expected:?}"
            ));
        }
    }

    async fn duplicate(&mut self) {
        let (id, amount, unique) = self.events[self.rng.random_range(0..self.events.len())].clone();
        self.step(format!("usage again {id}"));
        let got = record(self.e, &self.tenant, &self.key, &id, amount, None, &unique).await;
        if self.gone(&got) {
            return;
        }
        let outcome = got.unwrap();
        if outcome != UsageOutcome::Duplicate {
            self.fail(&format!("a duplicate answered {outcome:?}"));
        }
    }

    async fn consume(&mut self, now: DateTime<Utc>) {
        let retry = !self.consumed.is_empty() && self.rng.random_bool(0.2);
        // A retry may (wrongly) change the amount: the key is refused, nothing consumed.
        let reused = retry && self.rng.random_bool(0.25);
        let (id, amount) = if retry {
            let (id, amount, _) =
                self.consumed[self.rng.random_range(0..self.consumed.len())].clone();
            (id, amount + i64::from(reused))
        } else {
            (format!("c{}", self.counter), self.rng.random_range(1..60))
        };
        self.step(format!("consume {id} {amount} (retry {retry})"));
        let got = self
            .e
            .engine
            .consume_usage(NewConsumption {
                id: id.clone(),
                tenant_id: self.tenant.clone(),
                user_id: None,
                feature_key: self.key.clone(),
                amount,
            })
            .await;
        if self.gone(&got) {
            return;
        }
        if reused {
            if !matches!(got, Err(DomainError::IdempotencyKeyReused(_))) {
                self.fail(&format!("a retry with another amount answered {got:?}"));
            }
            return;
        }
        let (answer, replayed) = got.unwrap();
        if retry {
            let first = self.consumed.iter().find(|c| c.0 == id).unwrap().2;
            if answer.consumed != first || !replayed {
                self.fail(&format!(
                    "a retry answered consumed {} (replayed {replayed}), first {first}",
                    answer.consumed
                ));
            }
            return;
        }
        // A refused consumption does not write the meter.
        let mut ahead = self.model.clone();
        ahead.advance(now);
        let expected = ahead.answer(now, amount);
        if expected.result {
            ahead.draw(now.max(ahead.window.start), amount);
            self.model = ahead;
        }
        self.consumed.push((id, amount, expected.result));
        let got = (answer.consumed, answer.justification, answer.allow_reason);
        let want = (
            expected.result,
            expected.justification,
            expected.allow_reason,
        );
        let same = got.0 == want.0 && (!expected.metered || got == want);
        if !same || replayed {
            self.fail(&format!(
                "consumed {got:?} (replayed {replayed}), the model {want:?}"
            ));
        }
    }

    async fn credit(&mut self, now: DateTime<Utc>) {
        let amount = self.rng.random_range(1..80);
        let priority = [1, 10, 20][self.rng.random_range(0..3)];
        let effective_at = now + TimeDelta::hours(self.rng.random_range(0..3) * 12);
        let expires_at = self
            .rng
            .random_bool(0.5)
            .then(|| effective_at + TimeDelta::hours(self.rng.random_range(1..24 * 45)));
        let min = self.rng.random_range(0..=amount / 2);
        let rollover = Rollover {
            min,
            max: self.rng.random_range(min..=amount),
        };
        self.step(format!(
            "credit {amount} p{priority} from {effective_at} to {expires_at:?} {rollover:?}"
        ));
        let got = self
            .e
            .engine
            .create_credit_grant(NewCreditGrant {
                tenant_id: self.tenant.clone(),
                feature_key: self.key.clone(),
                amount,
                priority: Some(priority),
                effective_at: Some(effective_at),
                expires_at,
                rollover: Some(rollover),
                metadata: serde_json::Value::Null,
            })
            .await;
        if self.gone(&got) {
            return;
        }
        let grant = got.unwrap().value;
        self.model.advance(now);
        self.model.credits.push(ModelCredit {
            id: grant.id,
            priority,
            effective_at,
            expires_at,
            voided_at: None,
            remaining: amount,
            rollover,
        });
    }

    async fn void(&mut self, now: DateTime<Utc>) {
        let id = self.model.credits[self.rng.random_range(0..self.model.credits.len())].id;
        self.step(format!("void {id}"));
        let got = self.e.engine.void_credit_grant(id).await;
        if self.gone(&got) {
            return;
        }
        got.unwrap();
        // Voiding a void credit writes nothing.
        if self
            .model
            .credits
            .iter()
            .any(|c| c.id == id && c.voided_at.is_some())
        {
            return;
        }
        self.model.advance(now);
        if let Some(c) = self.model.credits.iter_mut().find(|c| c.id == id) {
            c.voided_at = Some(now);
        }
    }

    async fn reserve(&mut self, now: DateTime<Utc>) {
        // A retry asks again with the same key: the first answer, nothing more held.
        if !self.reserved.is_empty() && self.rng.random_bool(0.2) {
            let (key, amount, ttl, held, id) =
                self.reserved[self.rng.random_range(0..self.reserved.len())].clone();
            self.step(format!("reserve again {key}"));
            let got = self
                .e
                .engine
                .reserve(NewReservation {
                    id: key,
                    tenant_id: self.tenant.clone(),
                    user_id: None,
                    feature_key: self.key.clone(),
                    amount,
                    ttl,
                })
                .await;
            if self.gone(&got) {
                return;
            }
            let (r, answer, replayed) = got.unwrap();
            if (r.id, answer.held, replayed) != (id, held, true) {
                self.fail(&format!(
                    "a retry answered {:?} held {} (replayed {replayed})",
                    r.id, answer.held
                ));
            }
            return;
        }
        let amount = self.rng.random_range(1..60);
        let ttl = TimeDelta::minutes(self.rng.random_range(1..60 * 24 * 3));
        let key = format!("r{}", self.counter);
        self.step(format!("reserve {key} {amount} for {ttl}"));
        let got = self
            .e
            .engine
            .reserve(NewReservation {
                id: key.clone(),
                tenant_id: self.tenant.clone(),
                user_id: None,
                feature_key: self.key.clone(),
                amount,
                ttl,
            })
            .await;
        if self.gone(&got) {
            return;
        }
        let (r, answer, _) = got.unwrap();
        // A refused reservation does not write the meter.
        let mut ahead = self.model.clone();
        ahead.advance(now);
        let expected = ahead.answer(now, amount);
        let got = (answer.held, answer.justification, answer.allow_reason);
        let want = (
            expected.result,
            expected.justification,
            expected.allow_reason,
        );
        if got.0 != want.0 || (expected.metered && got != want) {
            self.fail(&format!("held {got:?}, the model {want:?}"));
        }
        self.reserved
            .push((key, amount, ttl, expected.result, r.id));
        if expected.result {
            ahead.holds.insert(r.id, (amount, now + ttl));
            self.model = ahead;
            self.reservations.push(r.id);
        }
    }

    async fn settle(&mut self, now: DateTime<Utc>) {
        let at = self.rng.random_range(0..self.reservations.len());
        let id = self.reservations[at];
        let (amount, expires_at) = self.model.holds[&id];
        let live = now < expires_at;
        if self.rng.random_bool(0.7) {
            let part = self.rng.random_range(0..=amount);
            self.step(format!("commit {id} {part} (live {live})"));
            let got = self.e.engine.commit_reservation(id, Some(part)).await;
            if self.gone(&got) {
                return;
            }
            match got {
                Ok(_) if live => {
                    self.model.advance(now);
                    self.model.holds.remove(&id);
                    self.model.draw(now.max(self.model.window.start), part);
                }
                Err(DomainError::Reservation(ReservationRefusal::Expired)) if !live => {
                    self.model.holds.remove(&id);
                }
                other => self.fail(&format!("commit answered {other:?}")),
            }
        } else {
            self.step(format!("release {id} (live {live})"));
            let got = self.e.engine.release_reservation(id).await;
            if self.gone(&got) {
                return;
            }
            let released = got.unwrap();
            let expected = if live {
                ReservationStatus::Released
            } else {
                ReservationStatus::Expired
            };
            if released.reservation.status != expected {
                self.fail(&format!("released as {:?}", released.reservation.status));
            }
            if live {
                self.model.advance(now);
            }
            self.model.holds.remove(&id);
        }
        self.reservations.swap_remove(at);
    }

    /// A plan change: an upgrade (300 a period, merged by max), a downgrade or revocation, an
    /// expiry set mid-period, a grant deleted (its past with it), or the base plan again.
    async fn plan_change(&mut self, now: DateTime<Utc>) {
        let live: Vec<usize> = (0..self.model.grants.len())
            .filter(|&i| self.model.grants[i].revoked_at.is_none())
            .collect();
        match self.rng.random_range(0..5) {
            0 if !self.model.deleted => {
                let (plan, amount) = PLANS[self.rng.random_range(1..PLANS.len())];
                self.step(format!("grant {plan}"));
                self.grant(plan, amount).await;
            }
            1 if !self.model.deleted && !self.model.planned(now) => {
                self.step("grant base again".into());
                self.grant("base", Some(BASE)).await;
            }
            2 if !live.is_empty() => {
                let g = live[self.rng.random_range(0..live.len())];
                let id = self.model.grants[g].id;
                self.step(format!("revoke {:?} ({id})", self.model.grants[g].amount));
                self.e.engine.revoke_grant(id, None, None).await.unwrap();
                self.model.grants[g].revoked_at = Some(now);
            }
            3 if !live.is_empty() => {
                let g = live[self.rng.random_range(0..live.len())];
                let id = self.model.grants[g].id;
                let expires_at = now + TimeDelta::hours(self.rng.random_range(1..24 * 40));
                self.step(format!(
                    "expire {:?} ({id}) at {expires_at}",
                    self.model.grants[g].amount
                ));
                self.e
                    .engine
                    .update_grants(
                        vec![GrantPatch {
                            id: id.to_string(),
                            expires_at: Some(Some(expires_at.to_rfc3339())),
                            ..GrantPatch::default()
                        }],
                        None,
                    )
                    .await
                    .unwrap();
                self.model.grants[g].expires_at = Some(expires_at);
            }
            4 if !self.model.grants.is_empty() => {
                let g = self.rng.random_range(0..self.model.grants.len());
                let id = self.model.grants[g].id;
                self.step(format!(
                    "delete grant {:?} ({id})",
                    self.model.grants[g].amount
                ));
                self.e.engine.delete_grant(id).await.unwrap();
                self.model.grants.remove(g);
            }
            _ => self.step("no plan change".into()),
        }
    }

    async fn reset(&mut self, now: DateTime<Utc>) {
        self.step("reset".into());
        let got = self.e.engine.reset_meter(&self.tenant, &self.key).await;
        if self.gone(&got) {
            return;
        }
        let reset = got.unwrap().value;
        self.model.reset(now);
        let r = reset.reading;
        let got = (r.balance, r.usage, r.overage, r.held);
        let want = self.model.reading(now);
        if got != want {
            self.fail(&format!(
                "after the reset (balance, usage, overage, held) {got:?}, the model {want:?}"
            ));
        }
    }

    /// The account deleted at the tenant service (its grants revoked), or reactivated.
    async fn delete_or_reactivate(&mut self, now: DateTime<Utc>) {
        if self.model.deleted {
            self.step("reactivate the account".into());
            self.e.reactivate_account(&self.tenant, None).await;
            self.model.deleted = false;
        } else {
            self.step("delete the account".into());
            self.e.delete_account(&self.tenant).await;
            self.model.deleted = true;
            for g in &mut self.model.grants {
                g.revoked_at.get_or_insert(now);
            }
        }
    }

    /// The engine's check against the model's.
    async fn compare(&mut self) {
        let now = self.e.engine.now();
        // One unit (the default), or a random amount.
        let requested = if self.rng.random_bool(0.5) {
            1
        } else {
            self.rng.random_range(1..120)
        };
        let query = CheckQuery {
            requested: Some(requested as u64),
            ..feature_query(&self.tenant, None, &self.key)
        };
        let decision = self.e.engine.check(&query, 0).await.unwrap().value;
        let want = self.model.answer(now, requested);
        let got = Answer {
            result: decision.result,
            justification: decision
                .justification
                .filter(|_| want.justification.is_some()),
            allow_reason: decision.allow_reason,
            metered: decision.meter.is_some(),
        };
        if got != want {
            self.fail(&format!("checked {decision:?}, the model {want:?}"));
        }
        let expected = self.model.reading(now);
        if let Some(meter) = decision.meter {
            let got = (meter.balance, meter.usage, meter.overage, meter.held);
            if got != expected {
                self.fail(&format!(
                    "(balance, usage, overage, held) {got:?}, the model {expected:?} \
                     (checking {requested})"
                ));
            }
        }
        // The meter's own reading (GET …/meters/{feature}) closes the periods between as a
        // write would.
        let view = self.e.engine.meter_view(&self.tenant, &self.key, 0).await;
        if self.gone(&view) {
            return;
        }
        let r = view.unwrap().reading;
        let got = (r.balance, r.usage, r.overage, r.held);
        if got != expected {
            self.fail(&format!(
                "the meter read (balance, usage, overage, held) {got:?}, the model {expected:?}"
            ));
        }
    }
}

/// What a sequence leaves behind: its account, feature and model, compared again later by a
/// replica that loads the index from the database (as a restart does).
struct Finished {
    seed: u64,
    tenant: String,
    key: String,
    model: Model,
}

/// Compares every finished sequence's account, now, on `e` and on a fresh replica over the
/// same database: what a restart loads must answer as the replica that wrote it.
async fn compare_replica(e: &TestEngine, url: &str, finished: &[Finished]) {
    let replica = engine_on(url, e.clock.clone()).await;
    let now = e.engine.now();
    for f in finished {
        let want = f.model.answer(now, 1);
        let reading = f.model.reading(now);
        for (who, engine) in [("the writer", e), ("a new replica", &replica)] {
            let d = engine.check(&f.tenant, None, &f.key).await;
            let got = Answer {
                result: d.result,
                justification: d.justification.filter(|_| want.justification.is_some()),
                allow_reason: d.allow_reason,
                metered: d.meter.is_some(),
            };
            let meter = d.meter.map(|m| (m.balance, m.usage, m.overage, m.held));
            if got != want || meter.is_some_and(|m| m != reading) {
                panic!(
                    "sequence seed {} read later at {now} by {who}: checked {d:?}, the model \
                     {want:?} {reading:?}",
                    f.seed
                );
            }
        }
    }
}

/// Runs sequence `seed`, from `start` when given (a reproduction on a fresh engine) or some
/// random time after the previous sequence (the clock only moves forward: a replica never
/// answers as of before a write it has seen).
async fn run_sequence(e: &TestEngine, seed: u64, start: Option<DateTime<Utc>>) -> Finished {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = Kind::all();
    let kind = kinds[rng.random_range(0..kinds.len())];
    let by = TimeDelta::minutes(rng.random_range(0..60 * 24 * 30));
    match start {
        Some(start) => e.clock.advance(start - e.engine.now()),
        None => e.clock.advance(by),
    }
    let tenant = format!("m{seed}");
    e.account(&tenant, None).await;
    let now = e.engine.now();
    let mut s = Sequence {
        e,
        rng,
        key: kind.key(),
        model: Model::new(kind, now),
        log: Log {
            seed,
            start: now,
            steps: vec![format!("{tenant} on {} at {now}", kind.key())],
        },
        tenant,
        events: Vec::new(),
        consumed: Vec::new(),
        reservations: Vec::new(),
        reserved: Vec::new(),
        counter: 0,
    };
    s.grant("base", Some(BASE)).await;
    for _ in 0..STEPS {
        s.counter += 1;
        let now = e.engine.now();
        match s.rng.random_range(0..100) {
            0..=17 => s.usage(now).await,
            18..=22 if !s.events.is_empty() => s.duplicate().await,
            23..=34 => s.consume(now).await,
            35..=43 => s.credit(now).await,
            44..=47 if !s.model.credits.is_empty() => s.void(now).await,
            48..=56 => s.reserve(now).await,
            57..=64 if !s.reservations.is_empty() => s.settle(now).await,
            65..=73 => s.plan_change(now).await,
            74..=76 => s.reset(now).await,
            77..=79 => s.delete_or_reactivate(now).await,
            // Time passes: minutes, hours, days, or past a reset.
            _ => {
                let by = match s.rng.random_range(0..4) {
                    0 => TimeDelta::minutes(s.rng.random_range(1..120)),
                    1 => TimeDelta::hours(s.rng.random_range(1..48)),
                    2 => TimeDelta::days(s.rng.random_range(1..12)),
                    _ => TimeDelta::days(s.rng.random_range(25..70)),
                };
                s.step(format!("time passes {by}"));
                e.clock.advance(by);
            }
        }
        s.compare().await;
    }
    Finished {
        seed,
        tenant: s.tenant,
        key: s.key,
        model: s.model,
    }
}

async fn record(
    e: &TestEngine,
    tenant: &str,
    key: &str,
    id: &str,
    amount: i64,
    at: Option<DateTime<Utc>>,
    unique: &str,
) -> Result<UsageOutcome> {
    e.engine
        .record_usage(vec![NewUsage {
            id: id.into(),
            tenant_id: tenant.into(),
            user_id: None,
            feature_key: key.into(),
            amount,
            at,
            unique: Some(unique.into()),
        }])
        .await
        .map(|(outcomes, _)| outcomes[0])
}

/// Sequences between two comparisons on a new replica.
const REPLICA_EVERY: usize = 250;

/// Runs `default` sequences on the database at `url`, or what the environment asks:
/// `TENANTRY_MODEL_SEQUENCES` more, `TENANTRY_MODEL_SEED` (with `TENANTRY_MODEL_START`, as a
/// failure prints it) one. Every `REPLICA_EVERY` sequences (and at the end) a new replica
/// loads the index and answers for them.
async fn run_all(url: &str, default: u64) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let e = world(engine_on(url, ManualClock::new(t0())).await).await;
    if let Some(seed) = var("TENANTRY_MODEL_SEED") {
        let start = var("TENANTRY_MODEL_START").map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .expect("TENANTRY_MODEL_START is RFC 3339")
                .to_utc()
        });
        let seed = seed.parse().expect("TENANTRY_MODEL_SEED is a number");
        let finished = run_sequence(&e, seed, start).await;
        compare_replica(&e, url, &[finished]).await;
        return;
    }
    let sequences = var("TENANTRY_MODEL_SEQUENCES")
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let mut finished = Vec::new();
    for seed in 0..sequences {
        finished.push(run_sequence(&e, seed, None).await);
        if finished.len() == REPLICA_EVERY || seed + 1 == sequences {
            compare_replica(&e, url, &finished).await;
            finished.clear();
        }
    }
}

/// `SEQUENCES` × `STEPS` compared steps on SQLite.
#[tokio::test]
async fn the_engine_agrees_with_the_reference_model() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("entitlement.db").display()
    );
    run_all(&url, SEQUENCES).await;
}

/// `PG_SEQUENCES` × `STEPS` compared steps on PostgreSQL (`TENANTRY_MODEL_SEQUENCES` applies
/// to both).
#[tokio::test]
async fn the_engine_agrees_with_the_reference_model_on_postgres() {
    let url = tenantry_common::testing::postgres().create_database().await;
    run_all(&url, PG_SEQUENCES).await;
}

/// What the reference model found, each as the shortest steps that showed it.
mod found {
    use super::*;
    use crate::app::testing::engine;

    fn sqlite_url(dir: &tempfile::TempDir) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("entitlement.db").display()
        )
    }

    fn kind(aggregation: Aggregation, soft: bool, carry: bool) -> String {
        Kind {
            aggregation,
            soft,
            carry,
            summed: false,
        }
        .key()
    }

    async fn meter_of(e: &TestEngine, tenant: &str, key: &str) -> (bool, Option<(i64, i64, i64)>) {
        let d = e.check(tenant, None, key).await;
        let meter = d
            .meter
            .map(|m| (m.balance.unwrap_or(i64::MIN), m.usage, m.overage));
        (d.result, meter)
    }

    fn credit(tenant: &str, key: &str, amount: i64) -> NewCreditGrant {
        NewCreditGrant {
            tenant_id: tenant.into(),
            feature_key: key.into(),
            amount,
            priority: None,
            effective_at: None,
            expires_at: None,
            rollover: None,
            metadata: serde_json::Value::Null,
        }
    }

    /// A reactivated account's checks answered a fresh meter (nothing used, its credits gone)
    /// until its next write or a restart loaded the stored one.
    #[tokio::test]
    async fn a_reactivated_account_gets_its_meter_back() {
        let e = world(engine().await).await;
        let key = kind(Aggregation::Sum, true, false);
        e.account("acme", None).await;
        e.grant("base", "acme", None).await;
        e.engine
            .create_credit_grant(credit("acme", &key, 70))
            .await
            .unwrap();
        record(&e, "acme", &key, "u1", 27, None, "v").await.unwrap();
        assert_eq!(meter_of(&e, "acme", &key).await, (true, Some((143, 27, 0))));
        e.delete_account("acme").await;
        let gone = e.check("acme", None, &key).await;
        assert_eq!(gone.justification, Some(Justification::TenantNotFound));
        e.reactivate_account("acme", None).await;
        // The plan stays revoked; the credits and the period's usage come back.
        assert_eq!(meter_of(&e, "acme", &key).await, (true, Some((70, 27, 0))));
        assert_eq!(
            e.check("acme", None, &key).await.allow_reason,
            Some(AllowReason::Credits)
        );
    }

    /// Committing a reservation or voiding a credit of a deleted account wrote its meter and
    /// brought the account back into the index: checks and usage answered it as live.
    #[tokio::test]
    async fn a_deleted_accounts_meter_takes_no_writes() {
        let e = world(engine().await).await;
        let key = kind(Aggregation::Sum, false, false);
        e.account("acme", None).await;
        e.grant("base", "acme", None).await;
        let credit = e
            .engine
            .create_credit_grant(credit("acme", &key, 10))
            .await
            .unwrap()
            .value;
        let (held, _, _) = e
            .engine
            .reserve(NewReservation {
                id: "r1".into(),
                tenant_id: "acme".into(),
                user_id: None,
                feature_key: key.clone(),
                amount: 5,
                ttl: TimeDelta::hours(1),
            })
            .await
            .unwrap();
        e.delete_account("acme").await;
        let commit = e.engine.commit_reservation(held.id, None).await;
        assert!(commit.as_ref().is_err_and(account_gone), "{commit:?}");
        let release = e.engine.release_reservation(held.id).await;
        assert!(release.as_ref().is_err_and(account_gone), "{release:?}");
        let void = e.engine.void_credit_grant(credit.id).await;
        assert!(void.as_ref().is_err_and(account_gone), "{void:?}");
        let usage = record(&e, "acme", &key, "u1", 1, None, "v").await;
        assert!(usage.as_ref().is_err_and(account_gone), "{usage:?}");
        let d = e.check("acme", None, &key).await;
        assert_eq!(
            (d.result, d.justification, d.meter),
            (false, Some(Justification::TenantNotFound), None)
        );
    }

    /// With overage carried, a check in a later period than the meter's open one drew the
    /// carried overage from the allowance at the check instead of the one issued at the reset
    /// (a plan granted since paid off what the period had started owing); the next write then
    /// answered otherwise.
    #[tokio::test]
    async fn carried_overage_read_ahead_draws_on_the_allowance_issued_at_the_reset() {
        let e = world(engine().await).await;
        let key = kind(Aggregation::Sum, false, true);
        e.account("acme", None).await;
        let base = e.grant("base", "acme", None).await;
        record(&e, "acme", &key, "u1", 130, None, "v")
            .await
            .unwrap();
        e.engine.revoke_grant(base.id, None, None).await.unwrap();
        e.clock.advance(TimeDelta::days(40));
        e.grant("big", "acme", None).await;
        // Nothing was issued at the reset: the 30 owed stay overage; 300 issued since.
        let ahead = meter_of(&e, "acme", &key).await;
        assert_eq!(ahead, (true, Some((300, 0, 30))));
        record(&e, "acme", &key, "u2", 0, None, "v").await.unwrap();
        assert_eq!(meter_of(&e, "acme", &key).await, ahead);
    }

    /// A reset happened at the latest draw when that was not before the clock: after an event
    /// dated a little ahead (up to 5 minutes is accepted) the new period began ahead of the
    /// clock, and until then every consumption was refused as "a period that has closed" and
    /// events without a time were LATE.
    #[tokio::test]
    async fn right_after_a_reset_following_an_event_dated_ahead_usage_counts_in_the_new_period() {
        let e = world(engine().await).await;
        let key = kind(Aggregation::Sum, false, false);
        e.account("acme", None).await;
        e.grant("base", "acme", None).await;
        let ahead = e.engine.now() + TimeDelta::minutes(2);
        record(&e, "acme", &key, "u1", 30, Some(ahead), "v")
            .await
            .unwrap();
        e.engine.reset_meter("acme", &key).await.unwrap();
        let (answer, _) = e
            .engine
            .consume_usage(NewConsumption {
                id: "c1".into(),
                tenant_id: "acme".into(),
                user_id: None,
                feature_key: key.clone(),
                amount: 10,
            })
            .await
            .unwrap();
        assert!(answer.consumed);
        let outcome = record(&e, "acme", &key, "u2", 5, None, "v").await;
        assert_eq!(outcome.unwrap(), UsageOutcome::Recorded);
        assert_eq!(meter_of(&e, "acme", &key).await, (true, Some((85, 15, 0))));
    }

    /// Two resets at one instant opened two periods starting together; a `UNIQUE_COUNT` value
    /// counted in the first was taken as already seen in the second.
    #[tokio::test]
    async fn a_second_reset_at_the_same_instant_starts_a_period_of_its_own() {
        let e = world(engine().await).await;
        let key = kind(Aggregation::UniqueCount, false, false);
        e.account("acme", None).await;
        e.grant("base", "acme", None).await;
        e.engine.reset_meter("acme", &key).await.unwrap();
        record(&e, "acme", &key, "u1", 1, None, "v2").await.unwrap();
        e.engine.reset_meter("acme", &key).await.unwrap();
        record(&e, "acme", &key, "u2", 1, None, "v2").await.unwrap();
        assert_eq!(meter_of(&e, "acme", &key).await, (true, Some((99, 1, 0))));
    }

    /// A consumption refused on a meter never written leaves its locked row without a state;
    /// loading the index (a restart, a new replica) failed on it.
    #[tokio::test]
    async fn a_new_replica_loads_a_meter_only_refusals_touched() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        let e = world(engine_on(&url, ManualClock::new(t0())).await).await;
        let key = kind(Aggregation::Sum, false, false);
        e.account("acme", None).await;
        let (answer, _) = e
            .engine
            .consume_usage(NewConsumption {
                id: "c1".into(),
                tenant_id: "acme".into(),
                user_id: None,
                feature_key: key.clone(),
                amount: 1,
            })
            .await
            .unwrap();
        assert!(!answer.consumed);
        let replica = engine_on(&url, e.clock.clone()).await;
        e.grant("base", "acme", None).await;
        replica.engine.catch_up().await.unwrap();
        assert_eq!(
            meter_of(&replica, "acme", &key).await,
            (true, Some((100, 0, 0)))
        );
    }
}
