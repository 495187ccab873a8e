//! A metered feature's open period for one subject, kept current as usage is drawn, so a check
//! reads a balance without replaying anything.
//!
//! The rules, which the reference model in the tests restates plainly:
//! - The plan allowance of a period is the subject's merged `max_count` allocation of the
//!   feature at the moment of a draw or reading (a plan change mid-period changes what is left
//!   of it at once: `allocation − drawn from it`, never below zero). It sits in the burn-down
//!   order as a credit of priority [`ALLOWANCE_PRIORITY`] that expires at the period's end.
//! - Draws take from the usable credits in burn-down order (priority, soonest expiry, oldest);
//!   what nothing covers is overage (recorded whatever the limit; a hard limit refuses before
//!   consumption, not after).
//! - Draws never go back in time: usage reported late within the open period is drawn as of
//!   the latest draw. Usage of a closed period is counted there by the store and leaves the open
//!   period alone: a close is final.
//! - At a reset each credit still usable carries `rollover.apply(remaining)`; overage carries
//!   when the feature says so and is drawn first in the new period.
//! - A reservation's hold counts as spent while it lives: a reading subtracts the live holds
//!   from the balance. Committing draws (in the period open then) and drops the hold; a hold
//!   past its expiry counts for nothing, whether or not a write has pruned it yet.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ledger::Credit;
use super::meter::{MAX_REPLAY_PERIODS, MeterSpec};
use super::period::{PeriodError, PeriodWindow};
use crate::model::Limit;

/// The plan allowance's priority, and the default of a credit grant's: at equal priority the
/// allowance (expiring at the period's end) goes before a top-up that lasts longer.
pub const ALLOWANCE_PRIORITY: u32 = 10;

/// The plan allowance's id where credits are listed by id.
pub const ALLOWANCE_ID: Uuid = Uuid::nil();

/// One subject's meter of one feature: the open period and its credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterState {
    pub period: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Drawn from the plan allowance this period.
    pub allowance_used: i64,
    /// Usage this period (covered or not).
    pub usage: i64,
    /// Usage no credit covered this period, including overage carried in.
    pub overage: i64,
    /// The instant of the latest draw.
    pub last_draw: DateTime<Utc>,
    /// Credit grants with what remains of each, in burn-down order.
    pub credits: Vec<Credit>,
    /// Reservations' holds, oldest first (live or expired but not yet pruned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Hold>,
}

/// An amount a reservation holds until it is committed, released or expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub id: Uuid,
    pub amount: i64,
    pub expires_at: DateTime<Utc>,
}

impl Hold {
    /// Whether the hold still counts at `at`.
    pub fn live_at(&self, at: DateTime<Utc>) -> bool {
        at < self.expires_at
    }
}

/// A meter at an instant: what a check reports beside its answer. `Copy`, so a decision can
/// carry it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterReading {
    pub period_start: DateTime<Utc>,
    /// The next reset.
    pub period_end: DateTime<Utc>,
    /// What can still be drawn (live holds deducted); `None` when the plan allowance is
    /// unlimited.
    pub balance: Option<i64>,
    pub usage: i64,
    pub overage: i64,
    /// Held by live reservations (already deducted from the balance).
    #[serde(default)]
    pub held: i64,
}

impl MeterReading {
    /// Whether `requested` units (one when not given) are covered by the balance.
    pub fn covers(&self, requested: Option<u64>) -> bool {
        let need = i64::try_from(requested.unwrap_or(1).max(1)).unwrap_or(i64::MAX);
        self.balance.is_none_or(|b| b >= need)
    }
}

/// Why a draw was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawError {
    #[error("the usage belongs to a period that has closed (it began {0})")]
    ClosedPeriod(DateTime<Utc>),
    #[error("a usage amount must not be negative")]
    Negative,
    #[error("the amounts exceed what can be counted")]
    Overflow,
    #[error(transparent)]
    Period(#[from] PeriodError),
}

type BurnKey = (u32, bool, Option<DateTime<Utc>>, DateTime<Utc>, Uuid);

fn finite(limit: Limit) -> Option<i64> {
    match limit {
        Limit::Finite(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
        Limit::Unlimited => None,
    }
}

impl MeterState {
    /// A meter with nothing drawn, open on the period containing `at`.
    pub fn open(spec: &MeterSpec, at: DateTime<Utc>) -> Result<Self, PeriodError> {
        Ok(Self::empty(spec.period.containing(at)?))
    }

    fn empty(window: PeriodWindow) -> Self {
        Self {
            period: window.index,
            start: window.start,
            end: window.end,
            allowance_used: 0,
            usage: 0,
            overage: 0,
            last_draw: window.start,
            credits: Vec::new(),
            holds: Vec::new(),
        }
    }

    /// The amount held by reservations live at `at`.
    pub fn held_at(&self, at: DateTime<Utc>) -> i64 {
        self.holds
            .iter()
            .filter(|h| h.live_at(at))
            .fold(0i64, |sum, h| sum.saturating_add(h.amount))
    }

    /// Holds `hold` (its id not held already).
    pub fn hold(&mut self, hold: Hold) {
        self.holds.push(hold);
    }

    /// Drops the hold `id`, answering it (`None`: not held, or pruned after expiring).
    pub fn release(&mut self, id: Uuid) -> Option<Hold> {
        let at = self.holds.iter().position(|h| h.id == id)?;
        Some(self.holds.remove(at))
    }

    /// Forgets the holds expired at `at` (they already count for nothing).
    pub fn prune_holds(&mut self, at: DateTime<Utc>) {
        self.holds.retain(|h| h.live_at(at));
    }

    /// The number of holds live at `at`.
    pub fn live_holds(&self, at: DateTime<Utc>) -> usize {
        self.holds.iter().filter(|h| h.live_at(at)).count()
    }

    fn allowance_key(&self) -> BurnKey {
        (
            ALLOWANCE_PRIORITY,
            false,
            Some(self.end),
            self.start,
            ALLOWANCE_ID,
        )
    }

    /// What is left of the plan allowance `allocation` this period (`None`: unlimited).
    pub fn allowance_left(&self, allocation: Limit) -> Option<i64> {
        finite(allocation).map(|n| n.saturating_sub(self.allowance_used).max(0))
    }

    /// Adds a credit grant (in burn-down order).
    pub fn add_credit(&mut self, credit: Credit) {
        let key = credit.burn_key();
        let at = self.credits.partition_point(|c| c.burn_key() < key);
        self.credits.insert(at, credit);
    }

    /// Voids a credit grant from `at` on (what was drawn from it stays drawn). False when the
    /// meter holds no such credit.
    pub fn void_credit(&mut self, id: Uuid, at: DateTime<Utc>) -> bool {
        match self.credits.iter_mut().find(|c| c.id == id) {
            Some(c) => {
                c.voided_at = Some(c.voided_at.map_or(at, |v| v.min(at)));
                true
            }
            None => false,
        }
    }

    /// Brings the meter to the period containing `at`, closing each period in between.
    /// `allocation(t)` is the plan allowance issued for the period starting at `t`.
    pub fn advance(
        &mut self,
        spec: &MeterSpec,
        at: DateTime<Utc>,
        allocation: &dyn Fn(DateTime<Utc>) -> Limit,
    ) -> Result<(), PeriodError> {
        if at < self.end {
            return Ok(());
        }
        let target = spec.period.containing(at)?;
        while self.period < target.index {
            // Past the replay bound the empty periods between change nothing but the carried
            // overage (rollover is idempotent without usage): jump straight to the target.
            let next = if target.index - self.period > MAX_REPLAY_PERIODS as i64 {
                target
            } else {
                spec.period.window(self.period + 1)?
            };
            self.close_into(next, spec.carry_overage, allocation(next.start));
        }
        Ok(())
    }

    fn close_into(&mut self, next: PeriodWindow, carry_overage: bool, allocation: Limit) {
        let end = self.end;
        self.credits.retain_mut(|c| {
            let lasts = c.expires_at.is_none_or(|e| end < e) && c.voided_at.is_none_or(|v| end < v);
            // A credit not yet effective keeps its whole amount.
            if c.effective_at < end {
                c.balance = c.rollover.apply(c.balance);
            }
            lasts && c.balance > 0
        });
        let carried = if carry_overage { self.overage } else { 0 };
        self.period = next.index;
        self.start = next.start;
        self.end = next.end;
        self.allowance_used = 0;
        self.usage = 0;
        self.overage = 0;
        self.last_draw = next.start;
        if carried > 0 {
            self.overage = self.take(next.start, carried, allocation);
        }
    }

    /// Draws `amount` at `at` (advancing first when `at` is past the open period) and returns
    /// what nothing covered. Refused, changing nothing, when `at` is before the open period.
    pub fn draw(
        &mut self,
        spec: &MeterSpec,
        at: DateTime<Utc>,
        amount: i64,
        allocation: &dyn Fn(DateTime<Utc>) -> Limit,
    ) -> Result<i64, DrawError> {
        if amount < 0 {
            return Err(DrawError::Negative);
        }
        if at < self.start {
            return Err(DrawError::ClosedPeriod(self.start));
        }
        // Advancing is time passing, not the draw: it stands even if the draw is refused.
        self.advance(spec, at, allocation)?;
        let usage = self.usage.checked_add(amount).ok_or(DrawError::Overflow)?;
        self.overage
            .checked_add(amount)
            .ok_or(DrawError::Overflow)?;
        let at = at.max(self.last_draw);
        self.last_draw = at;
        let uncovered = self.take(at, amount, allocation(at));
        self.usage = usage;
        self.overage += uncovered;
        Ok(uncovered)
    }

    /// Takes `amount` at `at` in burn-down order, the allowance in its place; returns the rest.
    fn take(&mut self, at: DateTime<Utc>, amount: i64, allocation: Limit) -> i64 {
        let key = self.allowance_key();
        let mut rest = amount;
        let mut allowance_done = false;
        for i in 0..self.credits.len() {
            if rest == 0 {
                return 0;
            }
            if !allowance_done && key < self.credits[i].burn_key() {
                rest = self.take_allowance(rest, allocation);
                allowance_done = true;
                if rest == 0 {
                    return 0;
                }
            }
            let credit = &mut self.credits[i];
            if credit.usable_at(at) {
                let taken = credit.balance.clamp(0, rest);
                credit.balance -= taken;
                rest -= taken;
            }
        }
        if !allowance_done {
            rest = self.take_allowance(rest, allocation);
        }
        rest
    }

    fn take_allowance(&mut self, rest: i64, allocation: Limit) -> i64 {
        let taken = self
            .allowance_left(allocation)
            .map_or(rest, |left| left.min(rest));
        self.allowance_used = self.allowance_used.saturating_add(taken);
        rest - taken
    }

    /// The meter at `at` with the plan allowance `allocation` then. No allocation unless `at`
    /// lies in a later period than the open one with overage to carry.
    pub fn read(&self, spec: &MeterSpec, at: DateTime<Utc>, allocation: Limit) -> MeterReading {
        self.read_issued(spec, at, allocation, &|_| allocation)
    }

    /// [`Self::read`], with `issued(t)` the plan allowance issued for a period starting at
    /// `t`: what overage carried into each period between the open one and `at` draws on.
    pub fn read_issued(
        &self,
        spec: &MeterSpec,
        at: DateTime<Utc>,
        allocation: Limit,
        issued: &dyn Fn(DateTime<Utc>) -> Limit,
    ) -> MeterReading {
        let mut reading = self.read_unheld(spec, at, allocation, issued);
        reading.held = self.held_at(at);
        reading.balance = reading
            .balance
            .map(|b| b.saturating_sub(reading.held).max(0));
        reading
    }

    fn read_unheld(
        &self,
        spec: &MeterSpec,
        at: DateTime<Utc>,
        allocation: Limit,
        issued: &dyn Fn(DateTime<Utc>) -> Limit,
    ) -> MeterReading {
        if at < self.end {
            let at = at.max(self.start);
            let credits = self
                .credits
                .iter()
                .filter(|c| c.usable_at(at))
                .fold(0i64, |sum, c| sum.saturating_add(c.balance));
            return MeterReading {
                period_start: self.start,
                period_end: self.end,
                balance: self
                    .allowance_left(allocation)
                    .map(|a| a.saturating_add(credits)),
                usage: self.usage,
                overage: self.overage,
                held: 0,
            };
        }
        let Ok(target) = spec.period.containing(at) else {
            return self.read_unheld(
                spec,
                self.end - chrono::TimeDelta::microseconds(1),
                allocation,
                issued,
            );
        };
        // Carried overage is drawn at the next period's start, from the credits usable then
        // (one may have expired by `at`): only closing the periods says what it took.
        if spec.carry_overage && self.overage > 0 && target.index > self.period {
            let mut ahead = self.clone();
            // Each reset draws on the allowance issued then, as a write closing it would.
            if ahead.advance(spec, at, issued).is_ok() {
                return ahead.read_unheld(spec, at, allocation, issued);
            }
        }
        // The next periods without usage: each lasting credit rolled over once (rollover is
        // idempotent without usage), a fresh allowance, and the carried overage drawn from it.
        let credits = self
            .credits
            .iter()
            .filter(|c| {
                c.expires_at.is_none_or(|e| self.end < e)
                    && c.voided_at.is_none_or(|v| self.end < v)
            })
            .filter(|c| c.usable_at(at))
            .map(|c| {
                if c.effective_at < target.start {
                    c.rollover.apply(c.balance)
                } else {
                    c.balance
                }
            })
            .fold(0i64, i64::saturating_add);
        let carried = if spec.carry_overage { self.overage } else { 0 };
        let (balance, overage) = match finite(allocation) {
            None => (None, 0),
            Some(a) => {
                let total = a.saturating_add(credits);
                let covered = carried.min(total);
                (Some(total - covered), carried - covered)
            }
        };
        MeterReading {
            period_start: target.start,
            period_end: target.end,
            balance,
            usage: 0,
            overage,
            held: 0,
        }
    }

    /// The credits usable at `at` with what remains of each, the allowance (as
    /// [`ALLOWANCE_ID`]) in its place; `None` remaining for an unlimited allowance.
    pub fn remaining_at(
        &self,
        at: DateTime<Utc>,
        allocation: Limit,
    ) -> impl Iterator<Item = (Uuid, Option<i64>)> + '_ {
        let key = self.allowance_key();
        let split = self.credits.partition_point(|c| c.burn_key() < key);
        let usable = move |c: &&Credit| c.usable_at(at);
        self.credits[..split]
            .iter()
            .filter(usable)
            .map(|c| (c.id, Some(c.balance)))
            .chain(std::iter::once((
                ALLOWANCE_ID,
                self.allowance_left(allocation),
            )))
            .chain(
                self.credits[split..]
                    .iter()
                    .filter(usable)
                    .map(|c| (c.id, Some(c.balance))),
            )
    }

    /// Heap bytes held (for the index's memory estimate).
    pub fn heap_bytes(&self) -> usize {
        self.credits.capacity() * std::mem::size_of::<Credit>()
            + self.holds.capacity() * std::mem::size_of::<Hold>()
    }
}

#[path = "state_reset.rs"]
mod reset;

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::metering::{Recurrence, Rollover, UsagePeriod};

    fn day(m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, m, d, 12, 0, 0).unwrap()
    }

    fn monthly(soft_limit: bool, carry_overage: bool) -> MeterSpec {
        MeterSpec {
            period: UsagePeriod::new(
                Recurrence::MONTH,
                Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            ),
            soft_limit,
            carry_overage,
        }
    }

    fn top_up(n: u128, amount: i64, effective_at: DateTime<Utc>) -> Credit {
        Credit {
            id: Uuid::from_u128(n),
            priority: ALLOWANCE_PRIORITY,
            effective_at,
            expires_at: None,
            voided_at: None,
            balance: amount,
            rollover: Rollover {
                min: 0,
                max: amount,
            },
        }
    }

    const PLAN: &dyn Fn(DateTime<Utc>) -> Limit = &|_| Limit::Finite(100);

    #[test]
    fn the_allowance_goes_first_then_a_top_up_which_rolls_over_at_the_reset() {
        let spec = monthly(false, false);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.add_credit(top_up(7, 50, day(1, 3)));
        assert_eq!(meter.draw(&spec, day(1, 10), 120, PLAN), Ok(0));
        let january = meter.read(&spec, day(1, 20), Limit::Finite(100));
        assert_eq!(
            (january.balance, january.usage, january.overage),
            (Some(30), 120, 0)
        );
        assert_eq!(
            meter
                .remaining_at(day(1, 20), Limit::Finite(100))
                .collect::<Vec<_>>(),
            [(ALLOWANCE_ID, Some(0)), (Uuid::from_u128(7), Some(30))]
        );
        assert!(!january.covers(Some(31)) && january.covers(Some(30)));
        // February, read ahead without a draw: a fresh 100 and the 30 carried.
        let february = meter.read(&spec, day(2, 2), Limit::Finite(100));
        assert_eq!((february.balance, february.usage), (Some(130), 0));
        assert_eq!(
            february.period_start,
            Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap()
        );
        // The same once a draw has advanced the meter.
        meter.draw(&spec, day(2, 3), 10, PLAN).unwrap();
        assert_eq!(
            meter.read(&spec, day(2, 3), Limit::Finite(100)).balance,
            Some(120)
        );
    }

    #[test]
    fn overage_is_recorded_and_carried_into_the_next_period_only_when_asked() {
        for (carry, february_balance, february_overage) in [(true, 70, 0), (false, 100, 0)] {
            let spec = monthly(true, carry);
            let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
            assert_eq!(meter.draw(&spec, day(1, 5), 130, PLAN), Ok(30));
            let january = meter.read(&spec, day(1, 6), Limit::Finite(100));
            assert_eq!((january.balance, january.overage), (Some(0), 30));
            let ahead = meter.read(&spec, day(2, 6), Limit::Finite(100));
            assert_eq!(
                (ahead.balance, ahead.overage),
                (Some(february_balance), february_overage),
                "carry {carry}"
            );
            meter.advance(&spec, day(2, 6), PLAN).unwrap();
            assert_eq!(meter.read(&spec, day(2, 6), Limit::Finite(100)), ahead);
        }
    }

    #[test]
    fn reading_far_ahead_with_overage_to_carry_replays_the_periods_between() {
        let spec = monthly(true, true);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.draw(&spec, day(1, 5), 350, PLAN).unwrap();
        // 250 owed: February pays 100, March 100, April 50 of its 100.
        let april = meter.read(&spec, day(4, 10), Limit::Finite(100));
        assert_eq!((april.balance, april.overage), (Some(50), 0));
        meter.advance(&spec, day(4, 10), PLAN).unwrap();
        assert_eq!(meter.read(&spec, day(4, 10), Limit::Finite(100)), april);
    }

    #[test]
    fn usage_of_a_closed_period_is_refused_and_changes_nothing() {
        let spec = monthly(false, false);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.draw(&spec, day(2, 2), 5, PLAN).unwrap();
        let before = meter.clone();
        assert!(matches!(
            meter.draw(&spec, day(1, 30), 5, PLAN),
            Err(DrawError::ClosedPeriod(_))
        ));
        assert_eq!(
            meter.draw(&spec, day(2, 3), -1, PLAN),
            Err(DrawError::Negative)
        );
        assert_eq!(meter, before);
        // Late within the open period: drawn as of the latest draw, counted all the same.
        meter.draw(&spec, day(2, 1), 5, PLAN).unwrap();
        assert_eq!(meter.usage, 10);
        assert_eq!(meter.last_draw, day(2, 2));
    }

    #[test]
    fn a_voided_credit_stops_counting_but_keeps_what_was_drawn() {
        let spec = monthly(false, false);
        let none: &dyn Fn(DateTime<Utc>) -> Limit = &|_| Limit::Finite(0);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.add_credit(top_up(1, 40, day(1, 2)));
        meter.draw(&spec, day(1, 3), 15, none).unwrap();
        assert!(meter.void_credit(Uuid::from_u128(1), day(1, 4)));
        let after = meter.read(&spec, day(1, 5), Limit::Finite(0));
        assert_eq!((after.balance, after.usage), (Some(0), 15));
        // Before the void it still held 25.
        assert_eq!(
            meter
                .read(&spec, day(1, 3) + TimeDelta::hours(1), Limit::Finite(0))
                .balance,
            Some(25)
        );
    }

    #[test]
    fn an_unlimited_allowance_covers_everything_and_leaves_credits_alone() {
        let spec = monthly(false, false);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.add_credit(top_up(1, 40, day(1, 2)));
        meter
            .draw(&spec, day(1, 3), 1_000, &|_| Limit::Unlimited)
            .unwrap();
        let reading = meter.read(&spec, day(1, 4), Limit::Unlimited);
        assert_eq!((reading.balance, reading.overage), (None, 0));
        assert!(reading.covers(Some(u64::MAX)));
        assert_eq!(meter.credits[0].balance, 40);
    }

    #[test]
    fn a_live_hold_counts_as_spent_until_it_expires_or_is_committed() {
        let spec = monthly(false, false);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        let id = Uuid::from_u128(9);
        meter.hold(Hold {
            id,
            amount: 70,
            expires_at: day(1, 4),
        });
        let held = meter.read(&spec, day(1, 3), Limit::Finite(100));
        assert_eq!((held.balance, held.held, held.usage), (Some(30), 70, 0));
        assert!(held.covers(Some(30)) && !held.covers(Some(31)));
        // Past its expiry it counts for nothing, pruned or not.
        let expired = meter.read(&spec, day(1, 4), Limit::Finite(100));
        assert_eq!((expired.balance, expired.held), (Some(100), 0));
        assert_eq!(meter.live_holds(day(1, 4)), 0);
        // Committing 50 of the 70: drawn, and the hold gone.
        assert_eq!(meter.release(id).map(|h| h.amount), Some(70));
        meter.draw(&spec, day(1, 3), 50, PLAN).unwrap();
        let committed = meter.read(&spec, day(1, 3), Limit::Finite(100));
        assert_eq!((committed.balance, committed.held), (Some(50), 0));
        assert_eq!(meter.release(id), None);
    }

    #[test]
    fn holds_beyond_the_balance_read_as_nothing_left_and_survive_a_reset() {
        let spec = monthly(false, false);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.hold(Hold {
            id: Uuid::from_u128(1),
            amount: 80,
            expires_at: day(2, 10),
        });
        // A downgrade to 50 leaves less than is held: nothing left, never negative.
        let downgraded = meter.read(&spec, day(1, 3), Limit::Finite(50));
        assert_eq!((downgraded.balance, downgraded.held), (Some(0), 80));
        // The hold outlives the reset and counts against February's fresh allowance.
        meter.advance(&spec, day(2, 2), PLAN).unwrap();
        assert_eq!(
            meter.read(&spec, day(2, 2), Limit::Finite(100)).balance,
            Some(20)
        );
        meter.prune_holds(day(2, 10));
        assert!(meter.holds.is_empty());
    }

    #[test]
    fn carried_overage_read_ahead_is_drawn_from_the_credits_usable_at_the_reset() {
        // Found by the reference model: a credit usable at the reset (and drawn by the carried
        // overage there) but expired by the reading must not leave the overage to the plan.
        let spec = monthly(true, true);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.add_credit(Credit {
            expires_at: Some(day(2, 10)),
            rollover: Rollover { min: 2, max: 5 },
            ..top_up(1, 5, day(1, 3))
        });
        meter.draw(&spec, day(1, 5), 109, PLAN).unwrap();
        assert_eq!((meter.overage, meter.credits[0].balance), (4, 0));
        let ahead = meter.read(&spec, day(2, 20), Limit::Finite(100));
        meter.advance(&spec, day(2, 20), PLAN).unwrap();
        // The 2 rolled over paid half of the 4 owed at the reset; the plan the rest.
        assert_eq!(ahead, meter.read(&spec, day(2, 20), Limit::Finite(100)));
        assert_eq!(ahead.balance, Some(98));
    }
}
