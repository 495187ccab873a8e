//! The reference model: a plain ledger of each account's meter, stepped by the same random
//! operations as the real engine (manual clock; SQLite, and PostgreSQL with fewer sequences) on
//! one account alone or on a family of accounts whose root may hold a pool (the pool rule
//! written plainly in `owner_of`: sub-accounts drawing on it, gaining an allocation of their
//! own, moved, deleted; pool grants revoked, expired and deleted; credit grants and resets of
//! a pooled account refused as `METER_POOLED`), each account with a user whose own grants
//! give it a meter of its own (its writes and checks, credits refused as `NO_USER_METER`
//! without one) —
//! usage in batches, in order, late within the period, late from a closed one and duplicated,
//! under each aggregation (SUM, COUNT, MAX, UNIQUE_COUNT); consumption and its retries;
//! credit grants (priorities, future starts, expiries, rollovers) and voids; reservations
//! held, retried, committed for less, released and left to expire; plan changes (upgrades, to
//! an unlimited plan too, a downgrade or a revocation, an expiry set mid-period, a grant
//! deleted, a plan granted again) under both merge policies; manual resets; the account
//! deleted and reactivated; time travel across resets; hard and soft limits, with and without
//! carried overage. After every step the engine's check (one unit or a random amount) must
//! give the model's answer for every account and its user and report its balance, usage,
//! overage, held amount, pool and whether the user's own meter answered, the meter's own reading must agree and name the pool's owner, and every
//! write must get the model's answer (with the meter it leaves, where it answers one); every
//! `REPLICA_EVERY` sequences a new replica loads the index and answers for each account. A
//! webhook endpoint is enabled: the usage thresholds each step's writes sent (the outbox) must
//! be the model's (50/80/100 % of what the period made available, once a period). Manual
//! resets and meter views take the user's own meter too (404 `user meter` without one), and a
//! reset must close the model's period. Every `HISTORY_EVERY` sequences also compare history
//! (`metering_model_history_tests.rs`): closed periods, checks at past instants, usage per
//! window and the burn-down's draws. Each
//! sequence runs on fresh accounts from a random instant; a mismatch prints its seed, its
//! start and the steps that led to it, and how to run that one sequence again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenantry_index::Metering;
use tenantry_index::metering::{MeterReading, PeriodWindow, Recurrence, UsagePeriod};

use super::*;
use crate::app::checks::CheckQuery;
use crate::app::testing::{TestEngine, engine_on, feature_doc, feature_query, new_plan, t0};
use crate::clock::ManualClock;
use crate::domain::metering::{
    ConsumeAnswer, NewConsumption, NewCreditGrant, NewUsage, Rollover, UsageOutcome,
};
use crate::domain::{
    Aggregation, Allocation, AllocationType, AllowReason, GrantPatch, Justification, Limit,
    MergePolicy, PlanFeature,
};
use crate::storage::entities::webhook_outbox;

/// The model's history: closed periods, usage per window, the balance burn-down and meters at
/// past instants.
#[path = "metering_model_history_tests.rs"]
mod history;

/// Sequences run by default on SQLite (each of `STEPS` or `FAMILY_STEPS` steps, every step
/// compared; a family's cost about 1.4 alone's, so fewer than before families; one in
/// `HISTORY_EVERY` about twice a sequence's cost, so fewer than before history: 600 of these
/// take the CPU time 900 took without).
const SEQUENCES: u64 = 600;
/// Sequences run by default on PostgreSQL (the same engine over the other database).
const PG_SEQUENCES: u64 = 90;
const STEPS: usize = 8;
/// Steps of a family sequence (its steps are spread over its accounts).
const FAMILY_STEPS: usize = 12;
/// The share of sequences run on a family of accounts.
const FAMILY_SHARE: f64 = 0.6;
const BASE: i64 = 100;
const UPGRADED: i64 = 300;
const POOL: i64 = 200;
/// The plans: key, amount a period (`None`: unlimited) and whether sub-accounts inherit it
/// (a pool).
const PLANS: [(&str, Option<i64>, bool); 5] = [
    ("base", Some(BASE), false),
    ("big", Some(UPGRADED), false),
    ("unlimited", None, false),
    ("pool", Some(POOL), true),
    ("unlimited-pool", None, true),
];
/// A family sequence's accounts: a root, two sub-accounts, one under the first, and an
/// account apart (somewhere to move to): name suffix and parent.
const FAMILY: [(&str, Option<usize>); 5] = [
    ("", None),
    ("-a", Some(0)),
    ("-b", Some(0)),
    ("-a1", Some(1)),
    ("-x", None),
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

/// A plan granted to the account: `amount` a period while it is active (`None`: unlimited);
/// `inherit`: its sub-accounts without an allocation of their own draw on this meter.
#[derive(Debug, Clone)]
struct ModelGrant {
    id: Uuid,
    amount: Option<i64>,
    inherit: bool,
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

/// One account's own meter of one feature, with its own grants, kept the plain way.
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
    /// Whether a write stored this meter (the engine holds it: a user's meter it selects by
    /// `userId` even without an allocation of its own then, README "Per-user meters").
    written: bool,
    /// The periods closed since the meter's first write, oldest first.
    closed: Vec<ClosedPeriod>,
    /// The usage thresholds sent: (period start, percent).
    fired: HashSet<(DateTime<Utc>, u16)>,
    /// Periods a write recorded before the meter closed them itself (`record`): the summary
    /// recorded first stands (with the grants then, should one be deleted since).
    recorded: Vec<ClosedPeriod>,
}

/// A closed period as the model summarises it (README "Closed periods"): start, end, closed
/// by a manual reset, usage, overage, allowance issued (`None`: unlimited) and drawn, each
/// credit usable until the close (id, remaining, rolled over; by id) and the overage carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClosedPeriod {
    pub(super) start: DateTime<Utc>,
    pub(super) end: DateTime<Utc>,
    pub(super) manual: bool,
    pub(super) usage: i64,
    pub(super) overage: i64,
    pub(super) allowance: Option<i64>,
    pub(super) allowance_used: i64,
    pub(super) credits: Vec<(Uuid, i64, i64)>,
    pub(super) carried_overage: i64,
}

/// The usage thresholds the engine runs with (the default `webhook_usage_thresholds`).
const THRESHOLDS: [u16; 3] = [50, 80, 100];

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
            written: false,
            closed: Vec::new(),
            fired: HashSet::new(),
            recorded: Vec::new(),
        }
    }

    /// A write stores the meter (brought to the write's instant first): the engine opens a
    /// meter at its first write, so the periods the model closed before are none of its.
    fn touch(&mut self) {
        if !self.written {
            self.written = true;
            self.closed.clear();
        }
    }

    /// A write that brings the meter to `now` and commits records the periods closed since its
    /// last write, whether it stores the meter or not (a usage batch naming it, a consumption
    /// refused or retried, a reservation refused, retried or settled again): those not yet
    /// recorded are, as they close now.
    fn record(&mut self, now: DateTime<Utc>) {
        if !self.written {
            return;
        }
        let mut ahead = self.clone();
        ahead.advance(now);
        for p in &ahead.closed[self.closed.len()..] {
            if !self.recorded.iter().any(|r| r.start == p.start) {
                self.recorded.push(p.clone());
            }
        }
    }

    /// The thresholds a write leaves reached and not yet sent this period, marked sent: usage
    /// ÷ available, available being the balance, what live holds keep (a hold is not usage,
    /// `domain/threshold.rs`) and the usage something covered (README "Webhooks": `balance +
    /// max(usage − overage, 0)`); nothing without usage or with an unlimited allowance. Each
    /// as (percent, usage, balance, overage, period start); the model brought to `now`.
    fn reach(&mut self, now: DateTime<Utc>) -> Vec<(u16, i64, i64, i64, DateTime<Utc>)> {
        let (balance, usage, overage, held) = self.reading(now);
        let Some(balance) = balance else {
            return Vec::new();
        };
        if usage <= 0 {
            return Vec::new();
        }
        let available = balance.max(0) + held + (usage - overage).max(0);
        let start = self.window.start;
        let mut reached = Vec::new();
        for p in THRESHOLDS {
            if usage * 100 >= i64::from(p) * available && self.fired.insert((start, p)) {
                reached.push((p, usage, balance, overage, start));
            }
        }
        reached
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

    /// Whether the account's own grants allocate the feature at `at`.
    fn planned(&self, at: DateTime<Utc>) -> bool {
        self.grants.iter().any(|g| g.active_at(at))
    }

    /// Whether the account holds a pool at `at`: an active grant its sub-accounts inherit.
    fn pools(&self, at: DateTime<Utc>) -> bool {
        self.grants.iter().any(|g| g.inherit && g.active_at(at))
    }

    /// Closes the open period at `end` (by a manual reset: `manual`) and opens `next`.
    fn close(&mut self, end: DateTime<Utc>, next: PeriodWindow, manual: bool) {
        let mut summary = ClosedPeriod {
            start: self.window.start,
            end,
            manual,
            usage: self.usage,
            overage: self.overage,
            allowance: self.allocation(end),
            allowance_used: self.allowance_used,
            credits: Vec::new(),
            carried_overage: if self.kind.carry { self.overage } else { 0 },
        };
        // The credits usable until the close (one expiring or voided at it too).
        let lasting: Vec<(Uuid, i64)> = self
            .credits
            .iter()
            .filter(|c| {
                c.effective_at < end
                    && c.expires_at.is_none_or(|e| end <= e)
                    && c.voided_at.is_none_or(|v| end <= v)
            })
            .map(|c| (c.id, c.remaining))
            .collect();
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
        // What each rolled into the next period (after the carried overage drew on it).
        for (id, remaining) in lasting {
            let rolled = self
                .credits
                .iter()
                .find(|c| c.id == id)
                .map_or(0, |c| c.remaining);
            summary.credits.push((id, remaining, rolled));
        }
        summary.credits.sort();
        self.closed.push(summary);
    }

    /// Closes periods until `at` is in the open one.
    fn advance(&mut self, at: DateTime<Utc>) {
        while at >= self.window.end {
            let next = period().window(self.window.index + 1).unwrap();
            self.close(self.window.end, next, false);
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
        self.close(at, next, true);
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

    /// The answer to `requested` units at `at` drawn on this meter: a plan entitles
    /// (`planned`: the drawing account's own, or an ancestor's pool; within the balance, or
    /// past it with a soft limit); without one, credits entitle while they hold a balance.
    fn answer(&self, at: DateTime<Utc>, requested: i64, planned: bool) -> Answer {
        let balance = self.reading(at).0;
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

/// An account of a sequence: its name, its parent (an index), its own meter, and its user
/// [`USER`]'s own meter (with that user's own grants).
#[derive(Debug, Clone)]
struct Account {
    name: String,
    parent: Option<usize>,
    model: Model,
    user: Model,
}

/// The user of every account whose grants, draws and checks the model takes.
const USER: &str = "ann";

/// A meter: its account, and whether it is the account's user's own (else the account's).
type MeterAt = (usize, bool);

/// The meter a write of account `i` (by its user, with `user`) draws on at `at`: the user's own
/// when the user's own grants allocate the feature then, else the account's (or its pool's).
fn meter_of(accounts: &[Account], i: usize, user: bool, at: DateTime<Utc>) -> MeterAt {
    if user && accounts[i].user.planned(at) {
        return (i, true);
    }
    (owner_of(accounts, i, at).0, false)
}

fn model_at(accounts: &[Account], (i, user): MeterAt) -> &Model {
    if user {
        &accounts[i].user
    } else {
        &accounts[i].model
    }
}

fn model_at_mut(accounts: &mut [Account], (i, user): MeterAt) -> &mut Model {
    if user {
        &mut accounts[i].user
    } else {
        &mut accounts[i].model
    }
}

/// What a check of a deleted account answers.
const UNKNOWN: Answer = Answer {
    result: false,
    justification: Some(Justification::TenantNotFound),
    allow_reason: None,
    metered: false,
};

/// The meter account `i` draws on at `at` (README "Pools"): its own when its own grants
/// allocate the feature; else that of the nearest ancestor holding an active grant its
/// sub-accounts inherit, with that ancestor's depth (1: the parent) — a deleted ancestor ends
/// the way up —; else its own.
fn owner_of(accounts: &[Account], i: usize, at: DateTime<Utc>) -> (usize, Option<u8>) {
    if accounts[i].model.planned(at) {
        return (i, None);
    }
    let mut up = accounts[i].parent;
    let mut depth: u8 = 0;
    while let Some(p) = up {
        if p == i || accounts[p].model.deleted || usize::from(depth) == accounts.len() {
            break;
        }
        depth += 1;
        if accounts[p].model.pools(at) {
            return (p, Some(depth));
        }
        up = accounts[p].parent;
    }
    (i, None)
}

/// The answer to `requested` units for account `i` (its user, with `user`) at `at`, on the
/// meter it draws on: a plan entitles it when the user's own grants, the account's or an
/// ancestor's pool do.
fn answer_for(
    accounts: &[Account],
    i: usize,
    user: bool,
    at: DateTime<Utc>,
    requested: i64,
) -> Answer {
    if accounts[i].model.deleted {
        return UNKNOWN;
    }
    if meter_of(accounts, i, user, at).1 {
        return accounts[i].user.answer(at, requested, true);
    }
    let (owner, _) = owner_of(accounts, i, at);
    let planned = owner != i || accounts[i].model.planned(at);
    accounts[owner].model.answer(at, requested, planned)
}

/// The steps of one sequence so far, for a failure's message.
struct Log {
    seed: u64,
    start: DateTime<Utc>,
    steps: Vec<String>,
}

impl Log {
    fn fail(&self, what: &str) -> ! {
        let steps = steps_asked().map_or(String::new(), |n| format!("TENANTRY_MODEL_STEPS={n} "));
        panic!(
            "sequence seed {} from {}: {what}\nsteps:\n  {}\nrun it alone: {steps}\
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

/// Every how many sequences compare history too (closed periods and a check at a past
/// instant after each step, usage per window and the burn-down at the end): about twice a
/// sequence's cost. `TENANTRY_MODEL_HISTORY_EVERY` sets it (1: all, for long runs).
const HISTORY_EVERY: u64 = 3;

fn history_every() -> u64 {
    std::env::var("TENANTRY_MODEL_HISTORY_EVERY")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(HISTORY_EVERY)
}

/// `TENANTRY_MODEL_STEPS`: the steps of every sequence, when asked (longer sequences reach
/// deeper states in long runs).
fn steps_asked() -> Option<usize> {
    std::env::var("TENANTRY_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
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

/// A closed period the engine answers, as the model summarises one.
fn summary(p: &crate::domain::usage_history::PeriodSummary) -> ClosedPeriod {
    let mut credits: Vec<(Uuid, i64, i64)> = p
        .credits
        .iter()
        .map(|c| (c.id, c.remaining, c.carried))
        .collect();
    credits.sort();
    ClosedPeriod {
        start: p.start,
        end: p.end,
        manual: p.manual,
        usage: p.usage,
        overage: p.overage,
        allowance: p.allowance,
        allowance_used: p.allowance_used,
        credits,
        carried_overage: p.carried_overage,
    }
}

async fn world(e: TestEngine) -> TestEngine {
    // Usage thresholds are recorded and sent only while an endpoint is enabled.
    e.webhook_endpoint().await;
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
    for (plan, amount, inherit) in PLANS {
        let limit = amount.map_or(Limit::Unlimited, |a| Limit::Finite(a as u64));
        let features = kinds
            .iter()
            .map(|kind| PlanFeature {
                feature_key: kind.key(),
                allocation: Some(Allocation::MaxCount(limit)),
            })
            .collect();
        let mut new = new_plan(plan, features);
        new.inherit_to_sub_accounts = inherit;
        e.engine.create_plan(new, None).await.unwrap();
    }
    e
}

/// An event of a usage step: account, id, amount, time (`None`: when received), `unique`,
/// whether its user sent it.
type BatchEvent = (usize, String, i64, Option<DateTime<Utc>>, String, bool);

/// A reservation asked for: account (by its user?), key, amount, time-to-live, whether held,
/// id.
#[derive(Debug, Clone)]
struct Reserved {
    account: usize,
    user: bool,
    key: String,
    amount: i64,
    ttl: TimeDelta,
    held: bool,
    id: Uuid,
}

/// One sequence's state: the engine, the model and what was done so far.
struct Sequence<'a> {
    e: &'a TestEngine,
    rng: StdRng,
    key: String,
    accounts: Vec<Account>,
    log: Log,
    /// Usage events sent: account, id, amount, `unique` value.
    events: Vec<(usize, String, i64, String)>,
    /// Consumptions asked for: account, id, amount, whether consumed.
    consumed: Vec<(usize, String, i64, bool)>,
    /// Live holds: reservation, the account that asked, the meter that holds it.
    reservations: Vec<(Uuid, usize, MeterAt)>,
    /// Reservations asked for.
    reserved: Vec<Reserved>,
    counter: usize,
    /// The usage thresholds the step's writes reached, as the model has them.
    crossings: Vec<Crossing>,
    /// The last position of the webhook outbox read.
    outbox: i64,
    /// After each step (and at the start): its instant and every account's meters (its own,
    /// its user's).
    snaps: Vec<Snap>,
    /// Every draw, in draw order.
    kept: Vec<Kept>,
    /// Every usage event stored (consumptions and commits too).
    stored: Vec<Stored>,
    /// The credits voided.
    voided: HashSet<Uuid>,
    /// Every credit granted, as granted (voided when it was).
    credit_log: Vec<LoggedCredit>,
    /// Whether the past was rewritten: a grant deleted (erased from the past too) or an expired
    /// one given a later expiry, an account moved or deleted (the engine answers the past with
    /// the grants and hierarchy it has now).
    rewritten: bool,
}

/// A step's instant and every account's meters after it (its own, its user's).
type Snap = (DateTime<Utc>, Vec<(Model, Model)>);

/// A usage threshold sent: account, user (its own meter), percent, usage, balance, overage,
/// period start.
type Crossing = (String, Option<String>, u16, i64, i64, i64, DateTime<Utc>);

/// A credit granted: its meter, id, when it was created, its effective and expiry times, when
/// it was voided.
#[derive(Debug, Clone)]
struct LoggedCredit {
    meter: MeterAt,
    id: Uuid,
    created_at: DateTime<Utc>,
    effective_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    voided_at: Option<DateTime<Utc>>,
}

/// What drew on a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrawKind {
    Usage,
    Consumption,
    Commit,
}

/// A draw as the engine keeps it: the meter drawn on, when it was drawn (the meter's latest
/// draw then), when it was written, the meter after it, what drew and its id (the event's, the
/// consumption's, the reservation's).
#[derive(Debug, Clone)]
struct Kept {
    meter: MeterAt,
    at: DateTime<Utc>,
    written: DateTime<Utc>,
    state: Model,
    kind: DrawKind,
    id: String,
}

/// A stored usage event: reporting account, by its user, when it happened, amount, what it
/// counted, `unique` value, refused (a consumption).
#[derive(Debug, Clone)]
struct Stored {
    account: usize,
    user: bool,
    at: DateTime<Utc>,
    amount: i64,
    counted: i64,
    unique: Option<String>,
    refused: bool,
}

impl Sequence<'_> {
    fn fail(&self, what: &str) -> ! {
        self.log.fail(what)
    }

    fn step(&mut self, what: String) {
        self.log.steps.push(what);
    }

    /// The thresholds a write of `meter` at `now` reached (the model brought to `now`).
    fn reached(&mut self, meter: MeterAt, now: DateTime<Utc>) {
        let tenant = self.name(meter.0);
        let user = meter.1.then(|| USER.to_owned());
        for (p, usage, balance, overage, start) in
            model_at_mut(&mut self.accounts, meter).reach(now)
        {
            self.crossings.push((
                tenant.clone(),
                user.clone(),
                p,
                usage,
                balance,
                overage,
                start,
            ));
        }
    }

    /// Keeps a draw on `meter` (`state`: the meter after it) written at `now`.
    fn keep(
        &mut self,
        meter: MeterAt,
        state: &Model,
        now: DateTime<Utc>,
        kind: DrawKind,
        id: &str,
    ) {
        self.kept.push(Kept {
            meter,
            at: state.last_draw,
            written: now,
            state: state.clone(),
            kind,
            id: id.to_owned(),
        });
    }

    /// Whether `userId` selects account `i`'s user's own meter for reads and resets: the user
    /// draws on it now, or it was written (README "Per-user meters").
    fn user_selected(&self, i: usize, now: DateTime<Utc>) -> bool {
        self.accounts[i].user.planned(now) || self.accounts[i].user.written
    }

    /// Compares the usage thresholds the step sent (the outbox since the last step) with the
    /// model's.
    async fn thresholds_sent(&mut self) {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
        let rows = webhook_outbox::Entity::find()
            .filter(webhook_outbox::Column::Position.gt(self.outbox))
            .order_by_asc(webhook_outbox::Column::Position)
            .all(self.e.engine.store().connection())
            .await
            .unwrap();
        let mut got: Vec<Crossing> = Vec::new();
        for row in rows {
            self.outbox = row.position;
            let events: Vec<serde_json::Value> = serde_json::from_str(&row.events).unwrap();
            for event in events {
                if event["type"] != crate::domain::webhook::types::USAGE_THRESHOLD {
                    continue;
                }
                let body: serde_json::Value =
                    serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
                let d = &body["data"];
                if d["featureKey"] != self.key.as_str() {
                    self.fail(&format!("a threshold of another feature was sent: {body}"));
                }
                got.push((
                    d["tenantId"].as_str().unwrap().to_owned(),
                    d["userId"].as_str().map(str::to_owned),
                    u16::try_from(d["threshold"].as_u64().unwrap()).unwrap(),
                    d["usage"].as_i64().unwrap(),
                    d["balance"].as_i64().unwrap(),
                    d["overage"].as_i64().unwrap(),
                    d["periodStart"].as_str().unwrap().parse().unwrap(),
                ));
            }
        }
        let mut want = std::mem::take(&mut self.crossings);
        want.sort();
        got.sort();
        if got != want {
            self.fail(&format!(
                "usage thresholds sent (account, user, %, usage, balance, overage, period) \
                 {got:?}, the model {want:?}"
            ));
        }
    }

    fn name(&self, i: usize) -> String {
        self.accounts[i].name.clone()
    }

    fn deleted(&self, i: usize) -> bool {
        self.accounts[i].model.deleted
    }

    /// A random account of the sequence.
    fn pick(&mut self) -> usize {
        self.rng.random_range(0..self.accounts.len())
    }

    /// Whether the next write is by the account's user (else by the account).
    fn by_user(&mut self) -> bool {
        self.rng.random_bool(0.3)
    }

    /// The pool's owner an answer for account `i` names at `at` (none on its own meter).
    fn pool_owner(&self, i: usize, at: DateTime<Utc>) -> Option<String> {
        let (owner, _) = owner_of(&self.accounts, i, at);
        (owner != i).then(|| self.name(owner))
    }

    /// The meter a write answer of account `i` (its user's, with `user`) names at `at`: the
    /// pool's owner, the user whose own meter it is.
    fn named(&self, i: usize, user: bool, at: DateTime<Utc>) -> (Option<String>, Option<String>) {
        if meter_of(&self.accounts, i, user, at).1 {
            (None, Some(USER.to_owned()))
        } else {
            (self.pool_owner(i, at), None)
        }
    }

    /// Compares an error of a write on a deleted account (`deleted`: the model says it is
    /// one); answers whether it was one.
    fn gone<T: std::fmt::Debug>(
        &self,
        deleted: bool,
        got: &std::result::Result<T, DomainError>,
    ) -> bool {
        if !deleted {
            return false;
        }
        match got {
            Err(err) if account_gone(err) => true,
            other => self.fail(&format!(
                "a write on a deleted account answered {other:?}, not that it is unknown"
            )),
        }
    }

    /// Compares a write only a meter's owner may make, asked of account `i`: answers whether
    /// the model refuses it as drawing on a pool (and the engine did, naming the owner).
    fn pooled<T: std::fmt::Debug>(
        &self,
        i: usize,
        now: DateTime<Utc>,
        got: &std::result::Result<T, DomainError>,
    ) -> bool {
        let Some(owner) = self.pool_owner(i, now) else {
            return false;
        };
        match got {
            Err(DomainError::MeterPooled { owner: named, .. }) if *named == owner => true,
            other => self.fail(&format!(
                "a write for {} drawing on {owner}'s pool answered {other:?}",
                self.name(i)
            )),
        }
    }

    /// Compares a meter an answer carries with the model's reading of `model` at `now`.
    fn same_reading(
        &self,
        what: &str,
        got: Option<&MeterReading>,
        model: &Model,
        now: DateTime<Utc>,
    ) {
        let want = model.reading(now);
        let got = got.map(|r| (r.balance, r.usage, r.overage, r.held));
        if got != Some(want) {
            self.fail(&format!(
                "{what}: (balance, usage, overage, held) {got:?}, the model {want:?}"
            ));
        }
    }

    /// A grant of `plan` to account `i`, or with `user` to its user.
    async fn grant(&mut self, (i, user): MeterAt, plan: &str, amount: Option<i64>, inherit: bool) {
        let now = self.e.engine.now();
        let grant = self
            .e
            .grant(plan, &self.accounts[i].name, user.then_some(USER))
            .await;
        model_at_mut(&mut self.accounts, (i, user))
            .grants
            .push(ModelGrant {
                id: grant.id,
                amount,
                inherit,
                starts_at: grant.starts_at.max(now),
                expires_at: None,
                revoked_at: None,
            });
    }

    /// A batch of one to four events, each of any account: now or late, new ids or ids
    /// already taken (by an earlier event, one of the batch, or a consumption — of the same
    /// account; another account's ids are not taken).
    async fn usage(&mut self, now: DateTime<Utc>) {
        let n = if self.rng.random_bool(0.6) {
            1
        } else {
            self.rng.random_range(2..=4)
        };
        let mut batch: Vec<BatchEvent> = Vec::new();
        for j in 0..n {
            let i = self.pick();
            let taken: Vec<String> = self
                .events
                .iter()
                .map(|e| (e.0, &e.1))
                .chain(self.consumed.iter().map(|c| (c.0, &c.1)))
                .chain(batch.iter().map(|b| (b.0, &b.1)))
                .filter(|(a, _)| *a == i)
                .map(|(_, id)| id.clone())
                .collect();
            let others: Vec<String> = self
                .events
                .iter()
                .filter(|e| e.0 != i)
                .map(|e| e.1.clone())
                .collect();
            let id = if !taken.is_empty() && self.rng.random_bool(0.2) {
                taken[self.rng.random_range(0..taken.len())].clone()
            } else if !others.is_empty() && self.rng.random_bool(0.1) {
                others[self.rng.random_range(0..others.len())].clone()
            } else {
                format!("u{}-{j}", self.counter)
            };
            let amount = self.rng.random_range(0..40);
            let at = self
                .rng
                .random_bool(0.3)
                .then(|| now - TimeDelta::minutes(self.rng.random_range(0..60 * 24 * 5)));
            let unique = format!("v{}", self.rng.random_range(0..6));
            let user = self.by_user();
            batch.push((i, id, amount, at, unique, user));
        }
        let shown: Vec<_> = batch
            .iter()
            .map(|(i, id, amount, at, unique, user)| (self.name(*i), user, id, amount, at, unique))
            .collect();
        self.step(format!(
            "usage (account, by its user, id, amount, at, unique) {shown:?}"
        ));
        let events = batch
            .iter()
            .map(|(i, id, amount, at, unique, user)| NewUsage {
                id: id.clone(),
                tenant_id: self.name(*i),
                user_id: user.then(|| USER.to_owned()),
                feature_key: self.key.clone(),
                amount: *amount,
                at: *at,
                unique: Some(unique.clone()),
            })
            .collect();
        let got = self.e.engine.record_usage(events).await;
        // One event of a deleted account refuses the batch.
        if self.gone(batch.iter().any(|b| self.deleted(b.0)), &got) {
            return;
        }
        let (outcomes, _) = got.unwrap();
        // The engine closes the periods since a meter's last write (with the grants as they
        // are now) only when it writes the meter: when something is drawn on it.
        let mut ahead: Vec<Account> = self.accounts.clone();
        for a in &mut ahead {
            a.model.advance(now);
            a.user.advance(now);
        }
        let mut drawn = HashSet::new();
        let mut seen: HashSet<(usize, String)> = self
            .events
            .iter()
            .map(|e| (e.0, e.1.clone()))
            .chain(self.consumed.iter().map(|c| (c.0, c.1.clone())))
            .collect();
        let mut expected = Vec::new();
        // Every meter an event of the batch draws on, drawn or not (a duplicate's, a late
        // one's): the batch brings each forward, recording the periods closed since it was
        // written, though it stores only those it draws on.
        let touched: HashSet<MeterAt> = batch
            .iter()
            .map(|b| meter_of(&self.accounts, b.0, b.5, now))
            .collect();
        for (i, id, amount, at, unique, user) in batch {
            if !seen.insert((i, id.clone())) {
                expected.push(UsageOutcome::Duplicate);
                continue;
            }
            let owner = meter_of(&self.accounts, i, user, now);
            let meter = model_at_mut(&mut ahead, owner);
            let at = at.unwrap_or(now.max(meter.window.start));
            // What the event counts where it is stored (history adds it up): a late one
            // counts its amount, or 1 (COUNT) — MAX and UNIQUE_COUNT history take the
            // amounts and values, not this.
            let counted = if at < meter.window.start {
                expected.push(UsageOutcome::Late);
                if meter.kind.aggregation == Aggregation::Count {
                    1
                } else {
                    amount
                }
            } else {
                let counted = meter.counted(amount, &unique);
                meter.touch();
                meter.draw(at, counted);
                let meter = meter.clone();
                self.keep(owner, &meter, now, DrawKind::Usage, &id);
                drawn.insert(owner);
                expected.push(UsageOutcome::Recorded);
                counted
            };
            self.stored.push(Stored {
                account: i,
                user,
                at,
                amount,
                counted,
                unique: Some(unique.clone()),
                refused: false,
            });
            self.events.push((i, id, amount, unique));
        }
        for &owner in &drawn {
            *model_at_mut(&mut self.accounts, owner) = model_at(&ahead, owner).clone();
        }
        for owner in touched.difference(&drawn) {
            model_at_mut(&mut self.accounts, *owner).record(now);
        }
        for owner in drawn {
            self.reached(owner, now);
        }
        if outcomes != expected {
            self.fail(&format!(
                "usage answered {outcomes:?}, the model {expected:?}"
            ));
        }
    }

    async fn duplicate(&mut self) {
        let (i, id, amount, unique) =
            self.events[self.rng.random_range(0..self.events.len())].clone();
        let tenant = self.name(i);
        self.step(format!("usage again {tenant} {id}"));
        let got = record(self.e, &tenant, &self.key, &id, amount, None, &unique).await;
        if self.gone(self.deleted(i), &got) {
            return;
        }
        let outcome = got.unwrap();
        if outcome != UsageOutcome::Duplicate {
            self.fail(&format!("a duplicate answered {outcome:?}"));
        }
    }

    /// A consumption to ask for (the `j`th of a step; `asked`: the step's before it): of any
    /// account, new, or a retry (of an earlier one of that account, or one of the step), which
    /// may (wrongly) change the amount.
    fn next_consumption(
        &mut self,
        j: usize,
        asked: &[(usize, String, i64, bool)],
    ) -> (usize, String, i64, bool) {
        let i = self.pick();
        let mine: Vec<(String, i64)> = self
            .consumed
            .iter()
            .map(|c| (c.0, &c.1, c.2))
            .chain(asked.iter().map(|a| (a.0, &a.1, a.2)))
            .filter(|c| c.0 == i)
            .map(|c| (c.1.clone(), c.2))
            .collect();
        // By the account's user or not (a retry too: the key is the account's).
        let user = self.by_user();
        if !mine.is_empty() && self.rng.random_bool(0.2) {
            let (id, amount) = mine[self.rng.random_range(0..mine.len())].clone();
            let reused = self.rng.random_bool(0.25);
            (i, id, amount + i64::from(reused), user)
        } else {
            (
                i,
                format!("c{}-{j}", self.counter),
                self.rng.random_range(1..60),
                user,
            )
        }
    }

    fn consumption(&self, i: usize, id: &str, amount: i64, user: bool) -> NewConsumption {
        NewConsumption {
            id: id.to_owned(),
            tenant_id: self.name(i),
            user_id: user.then(|| USER.to_owned()),
            feature_key: self.key.clone(),
            amount,
        }
    }

    async fn consume(&mut self, now: DateTime<Utc>) {
        let (i, id, amount, user) = self.next_consumption(0, &[]);
        self.step(format!(
            "consume {} (by its user {user}) {id} {amount}",
            self.name(i)
        ));
        let got = self
            .e
            .engine
            .consume_usage(self.consumption(i, &id, amount, user))
            .await;
        self.consumed_as_modelled(now, i, id, amount, user, got);
    }

    /// Two to five consumptions arriving together, of any accounts, retries among them: the
    /// engine decides the ones that wait for the first as one group, in arrival order, each
    /// on its meter as the ones before it left it — as one after the other.
    async fn consume_together(&mut self, now: DateTime<Utc>) {
        let mut asked = Vec::new();
        for j in 0..self.rng.random_range(2..=5) {
            let next = self.next_consumption(j, &asked);
            asked.push(next);
        }
        let shown: Vec<_> = asked
            .iter()
            .map(|(i, id, amount, user)| (self.name(*i), user, id, amount))
            .collect();
        self.step(format!(
            "consume together (account, by its user, id, amount) {shown:?}"
        ));
        // Polled in order on this test's one thread: they arrive in this order.
        let answers = futures::future::join_all(asked.iter().map(|(i, id, amount, user)| {
            self.e
                .engine
                .consume_usage(self.consumption(*i, id, *amount, *user))
        }))
        .await;
        for ((i, id, amount, user), got) in asked.into_iter().zip(answers) {
            self.consumed_as_modelled(now, i, id, amount, user, got);
        }
    }

    /// Compares a consumption's answer with the model's, which it then takes: a retry of the
    /// account's id answers the first answer (`replayed`), or with another amount is refused
    /// and consumes nothing; a new one is decided on the meter the account draws on.
    fn consumed_as_modelled(
        &mut self,
        now: DateTime<Utc>,
        i: usize,
        id: String,
        amount: i64,
        user: bool,
        got: Result<(ConsumeAnswer, bool)>,
    ) {
        if self.gone(self.deleted(i), &got) {
            return;
        }
        // Decided on the meter the account (or its user) draws on, brought to now.
        let owner = meter_of(&self.accounts, i, user, now);
        model_at_mut(&mut self.accounts, owner).record(now);
        if let Some(first) = self.consumed.iter().find(|c| c.0 == i && c.1 == id) {
            match got {
                Err(DomainError::IdempotencyKeyReused(_)) if first.2 != amount => {}
                Ok((answer, true)) if first.2 == amount && answer.consumed == first.3 => {}
                other => self.fail(&format!(
                    "a retry of {id} ({amount}) answered {other:?}, first {first:?}"
                )),
            }
            return;
        }
        let (answer, replayed) = match got {
            Ok(got) => got,
            Err(e) => self.fail(&format!("consuming {id} answered {e:?}")),
        };
        // A refused one does not store the meter.
        let expected = answer_for(&self.accounts, i, user, now, amount);
        let mut ahead = model_at(&self.accounts, owner).clone();
        ahead.advance(now);
        let at = now.max(ahead.window.start);
        self.stored.push(Stored {
            account: i,
            user,
            at,
            amount,
            counted: if expected.result { amount } else { 0 },
            unique: None,
            refused: !expected.result,
        });
        if expected.result {
            ahead.touch();
            ahead.draw(at, amount);
            self.keep(owner, &ahead.clone(), now, DrawKind::Consumption, &id);
        }
        self.consumed.push((i, id, amount, expected.result));
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
        let named = self.named(i, user, now);
        if (answer.meter_owner.clone(), answer.meter_user.clone()) != named {
            self.fail(&format!(
                "the consumption named the owner and user {:?} {:?}, the model {named:?}",
                answer.meter_owner, answer.meter_user
            ));
        }
        self.same_reading(
            "the consumption's meter",
            answer.meter.as_ref(),
            &ahead,
            now,
        );
        if expected.result {
            *model_at_mut(&mut self.accounts, owner) = ahead;
            self.reached(owner, now);
        }
    }

    /// A credit grant on an account, or on its user (only while the user has a meter of its
    /// own: else 409 `NO_USER_METER`).
    async fn credit(&mut self, now: DateTime<Utc>) {
        let i = self.pick();
        let user = self.by_user();
        let tenant = self.name(i);
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
            "credit {tenant} (its user {user}) {amount} p{priority} from {effective_at} to \
             {expires_at:?} {rollover:?}"
        ));
        let got = self
            .e
            .engine
            .create_credit_grant(NewCreditGrant {
                user_id: user.then(|| USER.to_owned()),
                tenant_id: tenant,
                feature_key: self.key.clone(),
                amount,
                priority: Some(priority),
                effective_at: Some(effective_at),
                expires_at,
                rollover: Some(rollover),
                metadata: serde_json::Value::Null,
            })
            .await;
        if self.gone(self.deleted(i), &got) {
            return;
        }
        if user && !meter_of(&self.accounts, i, true, now).1 {
            if !matches!(got, Err(DomainError::NoUserMeter { .. })) {
                self.fail(&format!(
                    "a credit for a user without a meter of its own answered {got:?}"
                ));
            }
            return;
        }
        if !user && self.pooled(i, now, &got) {
            return;
        }
        let grant = got.unwrap().value;
        let model = model_at_mut(&mut self.accounts, (i, user));
        model.advance(now);
        model.touch();
        model.credits.push(ModelCredit {
            id: grant.id,
            priority,
            effective_at,
            expires_at,
            voided_at: None,
            remaining: amount,
            rollover,
        });
        self.credit_log.push(LoggedCredit {
            meter: (i, user),
            id: grant.id,
            created_at: now,
            effective_at,
            expires_at,
            voided_at: None,
        });
        self.reached((i, user), now);
    }

    /// Voids a credit of any meter (also one no longer drawn on — an account's that now
    /// draws on a pool, a user's without its own allocation: the credit is that meter's).
    async fn void(&mut self, now: DateTime<Utc>) {
        let credits: Vec<(MeterAt, Uuid)> = self
            .accounts
            .iter()
            .enumerate()
            .flat_map(|(i, a)| {
                let own = a.model.credits.iter().map(move |c| ((i, false), c.id));
                own.chain(a.user.credits.iter().map(move |c| ((i, true), c.id)))
            })
            .collect();
        let (meter, id) = credits[self.rng.random_range(0..credits.len())];
        self.step(format!(
            "void {id} of {} (its user {})",
            self.name(meter.0),
            meter.1
        ));
        let got = self.e.engine.void_credit_grant(id).await;
        if self.gone(self.deleted(meter.0), &got) {
            return;
        }
        got.unwrap();
        // Voiding a void credit writes nothing.
        if !self.voided.insert(id) {
            return;
        }
        for c in &mut self.credit_log {
            if c.id == id {
                c.voided_at = Some(now);
            }
        }
        let model = model_at_mut(&mut self.accounts, meter);
        model.advance(now);
        model.touch();
        if let Some(c) = model.credits.iter_mut().find(|c| c.id == id) {
            c.voided_at = Some(now);
        }
        self.reached(meter, now);
    }

    async fn reserve(&mut self, now: DateTime<Utc>) {
        let i = self.pick();
        let tenant = self.name(i);
        let mine: Vec<Reserved> = self
            .reserved
            .iter()
            .filter(|r| r.account == i)
            .cloned()
            .collect();
        // A retry asks again with the same key: the first answer, nothing more held (also
        // when the account has moved since, or its user's meter changed).
        if !mine.is_empty() && self.rng.random_bool(0.2) {
            let first = mine[self.rng.random_range(0..mine.len())].clone();
            self.step(format!("reserve again {tenant} {}", first.key));
            let got = self
                .e
                .engine
                .reserve(NewReservation {
                    id: first.key,
                    tenant_id: tenant,
                    user_id: first.user.then(|| USER.to_owned()),
                    feature_key: self.key.clone(),
                    amount: first.amount,
                    ttl: first.ttl,
                })
                .await;
            if self.gone(self.deleted(i), &got) {
                return;
            }
            let (r, answer, replayed) = got.unwrap();
            let meter = meter_of(&self.accounts, i, first.user, now);
            model_at_mut(&mut self.accounts, meter).record(now);
            if (r.id, answer.held, replayed) != (first.id, first.held, true) {
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
        let user = self.by_user();
        self.step(format!(
            "reserve {tenant} (by its user {user}) {key} {amount} for {ttl}"
        ));
        let got = self
            .e
            .engine
            .reserve(NewReservation {
                id: key.clone(),
                tenant_id: tenant,
                user_id: user.then(|| USER.to_owned()),
                feature_key: self.key.clone(),
                amount,
                ttl,
            })
            .await;
        if self.gone(self.deleted(i), &got) {
            return;
        }
        let (r, answer, _) = got.unwrap();
        // Held on the meter the account (or its user) draws on; a refused reservation does not
        // write it.
        let owner = meter_of(&self.accounts, i, user, now);
        model_at_mut(&mut self.accounts, owner).record(now);
        let expected = answer_for(&self.accounts, i, user, now, amount);
        let mut ahead = model_at(&self.accounts, owner).clone();
        ahead.advance(now);
        if expected.result {
            ahead.touch();
            ahead.holds.insert(r.id, (amount, now + ttl));
        }
        let got = (answer.held, answer.justification, answer.allow_reason);
        let want = (
            expected.result,
            expected.justification,
            expected.allow_reason,
        );
        if got.0 != want.0 || (expected.metered && got != want) {
            self.fail(&format!("held {got:?}, the model {want:?}"));
        }
        let named = self.named(i, user, now);
        if (answer.meter_owner.clone(), answer.meter_user.clone()) != named
            || r.meter_owner != named.0
        {
            self.fail(&format!(
                "the reservation named the owner and user {:?} {:?} / {:?}, the model {named:?}",
                answer.meter_owner, answer.meter_user, r.meter_owner
            ));
        }
        self.same_reading(
            "the reservation's meter",
            answer.meter.as_ref(),
            &ahead,
            now,
        );
        self.reserved.push(Reserved {
            account: i,
            user,
            key,
            amount,
            ttl,
            held: expected.result,
            id: r.id,
        });
        if expected.result {
            *model_at_mut(&mut self.accounts, owner) = ahead;
            self.reservations.push((r.id, i, owner));
        }
    }

    /// Commits or releases a hold, on the meter that holds it (wherever its account draws
    /// now).
    async fn settle(&mut self, now: DateTime<Utc>) {
        let at = self.rng.random_range(0..self.reservations.len());
        let (id, holder, owner) = self.reservations[at];
        let (amount, expires_at) = model_at(&self.accounts, owner).holds[&id];
        let live = now < expires_at;
        // The account's or the holding meter's deletion: no writes.
        let deleted = self.deleted(holder) || self.deleted(owner.0);
        if self.rng.random_bool(0.7) {
            let part = self.rng.random_range(0..=amount);
            self.step(format!("commit {id} {part} (live {live})"));
            let got = self.e.engine.commit_reservation(id, Some(part)).await;
            if self.gone(deleted, &got) {
                return;
            }
            let by_user = self.reserved.iter().any(|r| r.id == id && r.user);
            let model = model_at_mut(&mut self.accounts, owner);
            match got {
                Ok(settled) if live => {
                    model.advance(now);
                    model.touch();
                    model.holds.remove(&id);
                    let at = now.max(model.window.start);
                    model.draw(at, part);
                    let model = model.clone();
                    self.same_reading("the commit's meter", Some(&settled.meter), &model, now);
                    self.keep(owner, &model, now, DrawKind::Commit, &id.to_string());
                    self.stored.push(Stored {
                        account: holder,
                        user: by_user,
                        at,
                        amount: part,
                        counted: part,
                        unique: None,
                        refused: false,
                    });
                    self.reached(owner, now);
                }
                Err(DomainError::Reservation(ReservationRefusal::Expired)) if !live => {
                    model.holds.remove(&id);
                }
                other => self.fail(&format!("commit answered {other:?}")),
            }
        } else {
            self.step(format!("release {id} (live {live})"));
            let got = self.e.engine.release_reservation(id).await;
            if self.gone(deleted, &got) {
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
            let model = model_at_mut(&mut self.accounts, owner);
            if live {
                model.advance(now);
                model.touch();
            } else {
                // Released already by expiring: answered again, the meter not stored.
                model.record(now);
            }
            model.holds.remove(&id);
        }
        self.reservations.swap_remove(at);
    }

    /// A plan change of one account or its user: an upgrade (300 a period, an unlimited
    /// plan, or a pool its sub-accounts inherit — a user's grant of it is the user's alone), a
    /// downgrade or revocation, an expiry set mid-period, a grant deleted (its past with it),
    /// or the base plan again.
    async fn plan_change(&mut self, now: DateTime<Utc>) {
        let i = self.pick();
        let user = self.by_user();
        let meter = (i, user);
        let who = if user {
            format!("{}'s user", self.name(i))
        } else {
            self.name(i)
        };
        let grants = &model_at(&self.accounts, meter).grants;
        let live: Vec<usize> = (0..grants.len())
            .filter(|&g| grants[g].revoked_at.is_none())
            .collect();
        let count = grants.len();
        let deleted = self.deleted(i);
        match self.rng.random_range(0..5) {
            0 if !deleted => {
                let (plan, amount, inherit) = PLANS[self.rng.random_range(1..PLANS.len())];
                self.step(format!("grant {plan} to {who}"));
                self.grant(meter, plan, amount, inherit).await;
            }
            1 if !deleted && !model_at(&self.accounts, meter).planned(now) => {
                self.step(format!("grant base to {who} again"));
                self.grant(meter, "base", Some(BASE), false).await;
            }
            2 if !live.is_empty() => {
                let g = live[self.rng.random_range(0..live.len())];
                let grant = &model_at(&self.accounts, meter).grants[g];
                let id = grant.id;
                self.step(format!("revoke {:?} of {who} ({id})", grant.amount));
                self.e.engine.revoke_grant(id, None, None).await.unwrap();
                model_at_mut(&mut self.accounts, meter).grants[g].revoked_at = Some(now);
            }
            3 if !live.is_empty() => {
                let g = live[self.rng.random_range(0..live.len())];
                let grant = &model_at(&self.accounts, meter).grants[g];
                let id = grant.id;
                let expires_at = now + TimeDelta::hours(self.rng.random_range(1..24 * 40));
                self.step(format!(
                    "expire {:?} of {who} ({id}) at {expires_at}",
                    grant.amount
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
                let grant = &mut model_at_mut(&mut self.accounts, meter).grants[g];
                // A grant that had expired is active again since: the past is rewritten.
                if grant.expires_at.is_some_and(|e| e <= now) {
                    self.rewritten = true;
                }
                grant.expires_at = Some(expires_at);
            }
            4 if count > 0 => {
                let g = self.rng.random_range(0..count);
                let grant = &model_at(&self.accounts, meter).grants[g];
                let id = grant.id;
                self.step(format!("delete grant {:?} of {who} ({id})", grant.amount));
                self.e.engine.delete_grant(id).await.unwrap();
                model_at_mut(&mut self.accounts, meter).grants.remove(g);
                self.rewritten = true;
            }
            _ => self.step("no plan change".into()),
        }
    }

    /// A manual reset of an account's meter (409 `METER_POOLED` for a pool's sub-account), or
    /// with `userId` of its user's own (404 `user meter` when the user has none).
    async fn reset(&mut self, now: DateTime<Utc>) {
        let i = self.pick();
        let user = self.by_user();
        let tenant = self.name(i);
        self.step(format!("reset {tenant} (its user's meter {user})"));
        let got = self
            .e
            .engine
            .reset_meter(&tenant, user.then_some(USER), &self.key)
            .await;
        if self.gone(self.deleted(i), &got) {
            return;
        }
        if user && !self.user_selected(i, now) {
            if !matches!(
                got,
                Err(DomainError::NotFound {
                    kind: "user meter",
                    ..
                })
            ) {
                self.fail(&format!(
                    "resetting a user's meter it has not answered {got:?}"
                ));
            }
            return;
        }
        if !user && self.pooled(i, now, &got) {
            return;
        }
        let reset = got.unwrap().value;
        let model = model_at_mut(&mut self.accounts, (i, user));
        model.advance(now);
        model.touch();
        model.reset(now);
        let model = model.clone();
        self.same_reading("after the reset", Some(&reset.reading), &model, now);
        let closed = model.closed.last().cloned();
        if closed.as_ref() != Some(&summary(&reset.closed)) {
            self.fail(&format!(
                "the reset closed {:?}, the model {closed:?}",
                summary(&reset.closed)
            ));
        }
    }

    /// An account deleted at the tenant service — its grants revoked, its sub-accounts moved
    /// to its parent (as the tenant service does, announcing each move) —, or reactivated
    /// (created again with its ID: as a root, or under a live account).
    async fn delete_or_reactivate(&mut self, now: DateTime<Utc>) {
        self.rewritten = true;
        let i = self.pick();
        let tenant = self.name(i);
        if self.deleted(i) {
            let parents: Vec<Option<usize>> = std::iter::once(None)
                .chain(
                    (0..self.accounts.len())
                        .filter(|&p| !self.deleted(p))
                        .map(Some),
                )
                .collect();
            let parent = parents[self.rng.random_range(0..parents.len())];
            let parent_name = parent.map(|p| self.name(p));
            self.step(format!("reactivate {tenant} under {parent_name:?}"));
            self.e
                .reactivate_account(&tenant, parent_name.as_deref())
                .await;
            self.accounts[i].parent = parent;
            self.accounts[i].model.deleted = false;
        } else {
            self.step(format!("delete {tenant}"));
            self.e.delete_account(&tenant).await;
            let parent = self.accounts[i].parent;
            let parent_name = parent.map(|p| self.name(p));
            for c in 0..self.accounts.len() {
                if self.accounts[c].parent == Some(i) {
                    self.e
                        .reactivate_account(&self.name(c), parent_name.as_deref())
                        .await;
                    self.accounts[c].parent = parent;
                }
            }
            let account = &mut self.accounts[i];
            account.parent = None;
            account.model.deleted = true;
            for g in account
                .model
                .grants
                .iter_mut()
                .chain(&mut account.user.grants)
            {
                g.revoked_at.get_or_insert(now);
            }
        }
    }

    /// Whether `i` is `ancestor` or under it.
    fn under(&self, mut i: usize, ancestor: usize) -> bool {
        for _ in 0..=self.accounts.len() {
            if i == ancestor {
                return true;
            }
            match self.accounts[i].parent {
                Some(p) => i = p,
                None => return false,
            }
        }
        false
    }

    /// A live account moved (re-parented) under another live one outside its own subtree, or
    /// made a root.
    async fn move_account(&mut self) {
        let live: Vec<usize> = (0..self.accounts.len())
            .filter(|&i| !self.deleted(i))
            .collect();
        if live.is_empty() {
            self.step("no move".into());
            return;
        }
        let i = live[self.rng.random_range(0..live.len())];
        let parents: Vec<Option<usize>> = std::iter::once(None)
            .chain(
                live.iter()
                    .filter(|&&p| !self.under(p, i))
                    .map(|&p| Some(p)),
            )
            .collect();
        let parent = parents[self.rng.random_range(0..parents.len())];
        let tenant = self.name(i);
        let parent_name = parent.map(|p| self.name(p));
        self.step(format!("move {tenant} under {parent_name:?}"));
        self.rewritten = true;
        self.e
            .reactivate_account(&tenant, parent_name.as_deref())
            .await;
        self.accounts[i].parent = parent;
    }

    /// The engine's check of every account and its user against the model's, and the
    /// account's meter's reading.
    async fn compare(&mut self) {
        let now = self.e.engine.now();
        for (i, user) in (0..self.accounts.len()).flat_map(|i| [(i, false), (i, true)]) {
            let tenant = self.name(i);
            // One unit (the default), or a random amount.
            let requested = if self.rng.random_bool(0.5) {
                1
            } else {
                self.rng.random_range(1..120)
            };
            let query = CheckQuery {
                requested: Some(requested as u64),
                ..feature_query(&tenant, user.then_some(USER), &self.key)
            };
            let decision = self.e.engine.check(&query, 0).await.unwrap().value;
            let want = answer_for(&self.accounts, i, user, now, requested);
            let tenant = if user {
                format!("{tenant}'s user")
            } else {
                tenant
            };
            let got = Answer {
                result: decision.result,
                justification: decision
                    .justification
                    .filter(|_| want.justification.is_some()),
                allow_reason: decision.allow_reason,
                metered: decision.meter.is_some(),
            };
            if got != want {
                self.fail(&format!(
                    "checked {tenant}: {decision:?}, the model {want:?}"
                ));
            }
            let meter = meter_of(&self.accounts, i, user, now);
            let (_, depth) = owner_of(&self.accounts, i, now);
            let depth = depth.filter(|_| !self.deleted(i) && !meter.1);
            let own = meter.1 && !self.deleted(i);
            if (decision.meter_pool, decision.meter_user) != (depth, own) {
                self.fail(&format!(
                    "checked {tenant}: the pool {:?} levels up, the user's own meter {}, the \
                     model {depth:?} {own}",
                    decision.meter_pool, decision.meter_user
                ));
            }
            let model = model_at(&self.accounts, meter).clone();
            if let Some(meter) = &decision.meter {
                self.same_reading(
                    &format!("checked {tenant} for {requested}"),
                    Some(meter),
                    &model,
                    now,
                );
            }
            // The meter's own reading (GET …/meters/{feature}, `?userId=` the user's own:
            // 404 `user meter` when it has none) closes the periods between as a write would.
            let view = self
                .e
                .engine
                .meter_view(&self.name(i), user.then_some(USER), &self.key, 0)
                .await;
            if self.gone(self.deleted(i), &view) {
                continue;
            }
            if user && !self.user_selected(i, now) {
                if !matches!(
                    view,
                    Err(DomainError::NotFound {
                        kind: "user meter",
                        ..
                    })
                ) {
                    self.fail(&format!(
                        "the meter of {tenant}, without one of its own, answered {view:?}"
                    ));
                }
                continue;
            }
            let view = view.unwrap();
            let (model, named) = if user {
                (self.accounts[i].user.clone(), (None, Some(USER.to_owned())))
            } else {
                (model, (self.pool_owner(i, now), None))
            };
            self.same_reading(
                &format!("the meter of {tenant}"),
                Some(&view.reading),
                &model,
                now,
            );
            if (view.owner.clone(), view.user.clone()) != named {
                self.fail(&format!(
                    "the meter of {tenant} named the owner and user {:?} {:?}, the model \
                     {named:?}",
                    view.owner, view.user
                ));
            }
        }
    }
}

/// What a sequence leaves behind: its accounts and feature, compared again later by a replica
/// that loads the index from the database (as a restart does).
struct Finished {
    seed: u64,
    key: String,
    accounts: Vec<Account>,
}

/// Compares every finished sequence's accounts, now, on `e` and on a fresh replica over the
/// same database: what a restart loads must answer as the replica that wrote it.
async fn compare_replica(e: &TestEngine, url: &str, finished: &[Finished]) {
    let replica = engine_on(url, e.clock.clone()).await;
    let now = e.engine.now();
    for f in finished {
        for (i, user) in (0..f.accounts.len()).flat_map(|i| [(i, false), (i, true)]) {
            let account = &f.accounts[i];
            let want = answer_for(&f.accounts, i, user, now, 1);
            let meter = meter_of(&f.accounts, i, user, now);
            let (_, depth) = owner_of(&f.accounts, i, now);
            let depth = depth.filter(|_| !account.model.deleted && !meter.1);
            let reading = model_at(&f.accounts, meter).reading(now);
            for (who, engine) in [("the writer", e), ("a new replica", &replica)] {
                let d = engine
                    .check(&account.name, user.then_some(USER), &f.key)
                    .await;
                let got = Answer {
                    result: d.result,
                    justification: d.justification.filter(|_| want.justification.is_some()),
                    allow_reason: d.allow_reason,
                    metered: d.meter.is_some(),
                };
                let meter = d.meter.map(|m| (m.balance, m.usage, m.overage, m.held));
                if got != want || meter.is_some_and(|m| m != reading) || d.meter_pool != depth {
                    panic!(
                        "sequence seed {} read later at {now} by {who}: checked {} (its user \
                         {user}) {d:?}, the model {want:?} {reading:?} (pool {depth:?})",
                        f.seed, account.name
                    );
                }
            }
        }
    }
}

/// Runs sequence `seed`, from `start` when given (a reproduction on a fresh engine) or some
/// random time after the previous sequence (the clock only moves forward: a replica never
/// answers as of before a write it has seen). Most sequences are a family of accounts
/// ([`FAMILY`]) whose root holds a pool; the rest one account alone.
async fn run_sequence(e: &TestEngine, seed: u64, start: Option<DateTime<Utc>>) -> Finished {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = Kind::all();
    let kind = kinds[rng.random_range(0..kinds.len())];
    let by = TimeDelta::minutes(rng.random_range(0..60 * 24 * 30));
    match start {
        Some(start) => e.clock.advance(start - e.engine.now()),
        None => e.clock.advance(by),
    }
    let family = rng.random_bool(FAMILY_SHARE);
    let members = if family { &FAMILY[..] } else { &FAMILY[..1] };
    let now = e.engine.now();
    let accounts: Vec<Account> = members
        .iter()
        .map(|(suffix, parent)| Account {
            name: format!("m{seed}{suffix}"),
            parent: *parent,
            model: Model::new(kind, now),
            user: Model::new(kind, now),
        })
        .collect();
    let created: Vec<(&str, Option<&str>)> = accounts
        .iter()
        .map(|a| (a.name.as_str(), a.parent.map(|p| accounts[p].name.as_str())))
        .collect();
    e.accounts(&created).await;
    let mut s = Sequence {
        e,
        rng,
        key: kind.key(),
        log: Log {
            seed,
            start: now,
            steps: vec![format!(
                "{} account(s) from {} on {} at {now}",
                accounts.len(),
                accounts[0].name,
                kind.key()
            )],
        },
        accounts,
        events: Vec::new(),
        consumed: Vec::new(),
        reservations: Vec::new(),
        reserved: Vec::new(),
        counter: 0,
        crossings: Vec::new(),
        outbox: outbox_end(e).await,
        snaps: Vec::new(),
        kept: Vec::new(),
        stored: Vec::new(),
        voided: HashSet::new(),
        credit_log: Vec::new(),
        rewritten: false,
    };
    if family && s.rng.random_bool(0.7) {
        s.step("grant pool to the root".into());
        s.grant((0, false), "pool", Some(POOL), true).await;
    } else {
        s.grant((0, false), "base", Some(BASE), false).await;
    }
    if family && s.rng.random_bool(0.3) {
        s.step("grant base to the first sub-account".into());
        s.grant((1, false), "base", Some(BASE), false).await;
    }
    s.snap();
    let steps = steps_asked().unwrap_or(if family { FAMILY_STEPS } else { STEPS });
    let history = seed.is_multiple_of(history_every());
    for _ in 0..steps {
        s.counter += 1;
        let now = e.engine.now();
        match s.rng.random_range(0..100) {
            0..=17 => s.usage(now).await,
            18..=22 if !s.events.is_empty() => s.duplicate().await,
            23..=31 => s.consume(now).await,
            32..=34 => s.consume_together(now).await,
            35..=43 => s.credit(now).await,
            44..=47
                if s.accounts
                    .iter()
                    .any(|a| !a.model.credits.is_empty() || !a.user.credits.is_empty()) =>
            {
                s.void(now).await;
            }
            48..=56 => s.reserve(now).await,
            57..=64 if !s.reservations.is_empty() => s.settle(now).await,
            65..=73 => s.plan_change(now).await,
            74..=76 => s.reset(now).await,
            77..=79 => s.delete_or_reactivate(now).await,
            80..=84 if family => s.move_account().await,
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
        s.thresholds_sent().await;
        s.snap();
        s.compare().await;
        if history {
            s.compare_history().await;
        }
    }
    if history {
        s.compare_all_history().await;
    }
    Finished {
        seed,
        key: s.key,
        accounts: s.accounts,
    }
}

/// The webhook outbox's last position (0 when empty).
async fn outbox_end(e: &TestEngine) -> i64 {
    use sea_orm::{EntityTrait, QueryOrder};
    webhook_outbox::Entity::find()
        .order_by_desc(webhook_outbox::Column::Position)
        .one(e.engine.store().connection())
        .await
        .unwrap()
        .map_or(0, |r| r.position)
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
            user_id: None,
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
        e.engine.reset_meter("acme", None, &key).await.unwrap();
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
        e.engine.reset_meter("acme", None, &key).await.unwrap();
        record(&e, "acme", &key, "u1", 1, None, "v2").await.unwrap();
        e.engine.reset_meter("acme", None, &key).await.unwrap();
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
