//! One usage period of one metered feature for one subject: the credits that can be drawn on
//! (the plan's allowance issued for the period and credit grants), usage drawn from them in
//! burn-down order, overage beyond them, and what carries into the next period at its reset.
//!
//! Amounts are whole units of the feature's usage unit (`i64`): sums are exact and never drift.
//! A ledger is replayed from the period's opening in event-time order, so a late event lands in
//! the period and place it belongs to, and the same events always give the same balances.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a credit leaves for the next period at a reset:
/// `min(max, max(remaining, min))` — `min` tops it up, `max` caps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollover {
    pub min: i64,
    pub max: i64,
}

impl Rollover {
    /// Nothing carries: the period's allowance.
    pub const NONE: Rollover = Rollover { min: 0, max: 0 };

    pub fn apply(&self, remaining: i64) -> i64 {
        remaining.max(self.min).min(self.max)
    }
}

/// Something usage can be drawn from during a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credit {
    pub id: Uuid,
    /// Lower first.
    pub priority: u32,
    /// Usable from here (a credit granted mid-period).
    pub effective_at: DateTime<Utc>,
    /// Usable until here, exclusive; what remains is lost.
    pub expires_at: Option<DateTime<Utc>>,
    /// Voided from here: not retroactive, what was drawn before stays drawn.
    pub voided_at: Option<DateTime<Utc>>,
    /// The balance at the period's opening (or at `effective_at` when later).
    pub balance: i64,
    pub rollover: Rollover,
}

impl Credit {
    pub fn usable_at(&self, at: DateTime<Utc>) -> bool {
        self.effective_at <= at
            && self.expires_at.is_none_or(|e| at < e)
            && self.voided_at.is_none_or(|v| at < v)
    }

    /// Burn-down order: priority, then the soonest expiry (none last), then the oldest, then id
    /// so the order is total.
    pub fn burn_key(&self) -> (u32, bool, Option<DateTime<Utc>>, DateTime<Utc>, Uuid) {
        (
            self.priority,
            self.expires_at.is_none(),
            self.expires_at,
            self.effective_at,
            self.id,
        )
    }
}

/// How one draw was covered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Draw {
    /// Credit id → amount taken from it, in the order taken.
    pub from: Vec<(Uuid, i64)>,
    /// What no credit covered.
    pub overage: i64,
}

/// A period being replayed.
#[derive(Debug, Clone)]
pub struct Ledger {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// Kept in burn-down order.
    credits: Vec<Credit>,
    usage: i64,
    overage: i64,
    /// The instant of the last draw: draws are replayed in time order.
    last: DateTime<Utc>,
}

/// Why a draw was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("usage at {at} is outside the period [{start}, {end})")]
    OutsidePeriod {
        at: DateTime<Utc>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("usage must be replayed in time order")]
    OutOfOrder,
    #[error("a usage amount is not negative")]
    Negative,
    #[error("the amounts exceed what can be counted")]
    Overflow,
}

impl Ledger {
    /// Opens a period with its credits and the overage carried from the previous one (drawn
    /// first from what is usable at the start).
    pub fn open(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        mut credits: Vec<Credit>,
        carried_overage: i64,
    ) -> Result<Self, LedgerError> {
        credits.sort_by_key(Credit::burn_key);
        let mut ledger = Self {
            start,
            end,
            credits,
            usage: 0,
            overage: 0,
            last: start,
        };
        if carried_overage > 0 {
            let draw = ledger.take(start, carried_overage)?;
            ledger.overage = draw.overage;
        }
        Ok(ledger)
    }

    /// Draws `amount` at `at` from the credits usable then, in burn-down order; what they cannot
    /// cover is overage (a soft limit lets it happen, a hard one refuses before drawing).
    pub fn draw(&mut self, at: DateTime<Utc>, amount: i64) -> Result<Draw, LedgerError> {
        if at < self.start || at >= self.end {
            return Err(LedgerError::OutsidePeriod {
                at,
                start: self.start,
                end: self.end,
            });
        }
        if at < self.last {
            return Err(LedgerError::OutOfOrder);
        }
        if amount < 0 {
            return Err(LedgerError::Negative);
        }
        // Checked before anything moves, so a refused draw changes nothing.
        let usage = self
            .usage
            .checked_add(amount)
            .ok_or(LedgerError::Overflow)?;
        self.overage
            .checked_add(amount)
            .ok_or(LedgerError::Overflow)?;
        self.last = at;
        let draw = self.take(at, amount)?;
        self.usage = usage;
        self.overage += draw.overage;
        Ok(draw)
    }

    fn take(&mut self, at: DateTime<Utc>, mut amount: i64) -> Result<Draw, LedgerError> {
        let mut draw = Draw::default();
        for credit in self.credits.iter_mut().filter(|c| c.usable_at(at)) {
            if amount == 0 {
                break;
            }
            let taken = credit.balance.min(amount);
            if taken > 0 {
                credit.balance -= taken;
                amount -= taken;
                draw.from.push((credit.id, taken));
            }
        }
        draw.overage = amount;
        Ok(draw)
    }

    /// What could be drawn at `at` (at or after the last draw).
    pub fn balance_at(&self, at: DateTime<Utc>) -> i64 {
        self.credits
            .iter()
            .filter(|c| c.usable_at(at))
            .map(|c| c.balance)
            .fold(0i64, i64::saturating_add)
    }

    /// Each credit usable at `at` with what remains of it, in burn-down order.
    pub fn credits_at(&self, at: DateTime<Utc>) -> impl Iterator<Item = &Credit> {
        self.credits.iter().filter(move |c| c.usable_at(at))
    }

    /// Usage drawn this period (covered or not).
    pub fn usage(&self) -> i64 {
        self.usage
    }

    /// Usage no credit covered, including the overage carried in.
    pub fn overage(&self) -> i64 {
        self.overage
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// Closes the period at its end: each credit still usable then carries
    /// `rollover.apply(remaining)` into the next period; expired and voided ones end here.
    /// Returns the carried credits and the overage to carry when `carry_overage`.
    pub fn close(self, carry_overage: bool) -> (Vec<Credit>, i64) {
        let end = self.end;
        let carried = self
            .credits
            .into_iter()
            .filter(|c| c.expires_at.is_none_or(|e| end < e) && c.voided_at.is_none_or(|v| end < v))
            .map(|mut c| {
                // A credit not yet effective keeps its whole amount.
                if c.effective_at < end {
                    c.balance = c.rollover.apply(c.balance);
                }
                c
            })
            .filter(|c| c.balance > 0)
            .collect();
        (carried, if carry_overage { self.overage } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, d, 0, 0, 0).unwrap()
    }

    fn credit(n: u128, priority: u32, balance: i64) -> Credit {
        Credit {
            id: Uuid::from_u128(n),
            priority,
            effective_at: day(1),
            expires_at: None,
            voided_at: None,
            balance,
            rollover: Rollover::NONE,
        }
    }

    #[test]
    fn usage_burns_down_by_priority_then_soonest_expiry_then_oldest() {
        let mut late_expiry = credit(1, 1, 10);
        late_expiry.expires_at = Some(day(30));
        let mut soon_expiry = credit(2, 1, 10);
        soon_expiry.expires_at = Some(day(20));
        let no_expiry_old = credit(3, 1, 10);
        let mut no_expiry_new = credit(4, 1, 10);
        no_expiry_new.effective_at = day(2);
        let first = credit(5, 0, 10);
        let mut ledger = Ledger::open(
            day(1),
            day(31),
            vec![
                no_expiry_new,
                late_expiry,
                first,
                no_expiry_old,
                soon_expiry,
            ],
            0,
        )
        .unwrap();
        let draw = ledger.draw(day(3), 45).unwrap();
        let order: Vec<_> = draw.from.iter().map(|(id, _)| id.as_u128()).collect();
        assert_eq!(order, [5, 2, 1, 3, 4]);
        assert_eq!(draw.from.last(), Some(&(Uuid::from_u128(4), 5)));
        assert_eq!(ledger.balance_at(day(3)), 5);
        let over = ledger.draw(day(4), 8).unwrap();
        assert_eq!((over.overage, ledger.overage(), ledger.usage()), (3, 3, 53));
    }

    #[test]
    fn credits_count_only_while_effective_unexpired_and_not_voided() {
        let mut later = credit(1, 0, 10);
        later.effective_at = day(10);
        let mut expiring = credit(2, 0, 10);
        expiring.expires_at = Some(day(5));
        let mut voided = credit(3, 0, 10);
        voided.voided_at = Some(day(7));
        let mut ledger = Ledger::open(day(1), day(31), vec![later, expiring, voided], 0).unwrap();
        assert_eq!(ledger.balance_at(day(2)), 20);
        // Drawn from the voided one before its voiding: stays drawn.
        assert_eq!(
            ledger.draw(day(6), 4).unwrap().from,
            [(Uuid::from_u128(3), 4)]
        );
        assert_eq!(ledger.balance_at(day(6)), 6);
        assert_eq!(ledger.balance_at(day(8)), 0);
        assert_eq!(ledger.draw(day(8), 1).unwrap().overage, 1);
        assert_eq!(ledger.balance_at(day(10)), 10);
        assert_eq!(ledger.usage(), 5);
    }

    #[test]
    fn a_reset_rolls_each_credit_over_between_its_minimum_and_maximum() {
        assert_eq!(Rollover { min: 0, max: 50 }.apply(80), 50);
        assert_eq!(Rollover { min: 0, max: 50 }.apply(30), 30);
        assert_eq!(Rollover { min: 20, max: 50 }.apply(5), 20);
        assert_eq!(Rollover::NONE.apply(30), 0);

        let mut capped = credit(1, 0, 100);
        capped.rollover = Rollover { min: 0, max: 50 };
        let mut topped = credit(2, 1, 100);
        topped.rollover = Rollover { min: 40, max: 100 };
        let allowance = credit(3, 0, 100);
        let mut expiring = credit(4, 0, 100);
        expiring.expires_at = Some(day(31));
        expiring.rollover = Rollover { min: 0, max: 100 };
        let mut ledger = Ledger::open(
            day(1),
            day(31),
            vec![capped, topped, allowance, expiring],
            0,
        )
        .unwrap();
        ledger.draw(day(2), 390).unwrap();
        let (carried, overage) = ledger.close(true);
        let carried: Vec<_> = carried
            .iter()
            .map(|c| (c.id.as_u128(), c.balance))
            .collect();
        // 390 took expiring 100, capped 100, allowance 100, topped 90: capped carries 0
        // (dropped), topped 10 → topped up to 40, the allowance nothing, the expiring one ended.
        assert_eq!(carried, [(2, 40)]);
        assert_eq!(overage, 0);
    }

    #[test]
    fn overage_carried_into_the_next_period_is_drawn_first() {
        let mut ledger = Ledger::open(day(1), day(15), vec![credit(1, 0, 10)], 0).unwrap();
        ledger.draw(day(2), 25).unwrap();
        let (_, carried) = ledger.clone().close(true);
        assert_eq!(carried, 15);
        assert_eq!(ledger.close(false).1, 0);
        let mut next = credit(2, 0, 100);
        next.effective_at = day(15);
        let next = Ledger::open(day(15), day(29), vec![next], carried).unwrap();
        assert_eq!(next.balance_at(day(15)), 85);
        assert_eq!((next.usage(), next.overage()), (0, 0));
        // More debt than credit stays overage.
        let short = Ledger::open(day(15), day(29), vec![credit(3, 0, 5)], 15).unwrap();
        assert_eq!((short.balance_at(day(15)), short.overage()), (0, 10));
    }

    #[test]
    fn draws_outside_the_period_out_of_order_or_negative_are_refused() {
        let mut ledger = Ledger::open(day(1), day(15), vec![credit(1, 0, 10)], 0).unwrap();
        assert!(matches!(
            ledger.draw(day(15), 1),
            Err(LedgerError::OutsidePeriod { .. })
        ));
        assert!(matches!(
            ledger.draw(day(1) - TimeDelta::seconds(1), 1),
            Err(LedgerError::OutsidePeriod { .. })
        ));
        ledger.draw(day(5), 1).unwrap();
        assert_eq!(ledger.draw(day(4), 1), Err(LedgerError::OutOfOrder));
        assert_eq!(ledger.draw(day(5), -1), Err(LedgerError::Negative));
        ledger.draw(day(5), i64::MAX - 1).unwrap();
        let before = ledger.clone();
        assert_eq!(ledger.draw(day(6), 5), Err(LedgerError::Overflow));
        assert_eq!(
            (ledger.usage(), ledger.overage()),
            (before.usage(), before.overage())
        );
    }
}
