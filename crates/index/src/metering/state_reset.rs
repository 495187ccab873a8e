//! A manual reset: an operator starts a new period now. Kept beside `state.rs` so the reset
//! stays one small, additive piece of the meter's rules.

use chrono::{DateTime, TimeDelta, Utc};

use super::{DrawError, MeterState};
use crate::metering::meter::MeterSpec;
use crate::metering::period::PeriodWindow;
use crate::model::Limit;

impl MeterState {
    /// Closes the open period at `at` exactly as a scheduled reset closes one (each usable
    /// credit rolls over, the plan allowance is issued afresh, overage carries when the feature
    /// says so) and opens one from `at` to the scheduled end: the anchor is kept, so the
    /// schedule after it is unchanged. `at` is taken after the open period's start and the
    /// latest draw (a microsecond later at least), so every draw made stays in the closed
    /// period (periods are half-open: one at the new start would be the new period's) and no
    /// two periods start at one instant. Should that reach the scheduled end, the scheduled
    /// reset there is the reset. Refused, changing nothing, before the open period.
    pub fn reset(
        &mut self,
        spec: &MeterSpec,
        at: DateTime<Utc>,
        allocation: &dyn Fn(DateTime<Utc>) -> Limit,
    ) -> Result<(), DrawError> {
        if at < self.start {
            return Err(DrawError::ClosedPeriod(self.start));
        }
        self.advance(spec, at, allocation)?;
        let at = at.max(self.last_draw + TimeDelta::microseconds(1));
        if at >= self.end {
            self.advance(spec, at, allocation)?;
            if at == self.start {
                return Ok(());
            }
        }
        let next = PeriodWindow {
            start: at,
            end: self.end,
            index: self.period,
        };
        // The close happens at `at`: credits ending after it roll over, as at a period's end.
        self.end = at;
        self.close_into(next, spec.carry_overage, allocation(at));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};
    use uuid::Uuid;

    use super::*;
    use crate::metering::{ALLOWANCE_PRIORITY, Credit, Recurrence, Rollover, UsagePeriod};

    fn day(m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, m, d, 12, 0, 0).unwrap()
    }

    fn monthly(carry_overage: bool) -> MeterSpec {
        MeterSpec {
            period: UsagePeriod::new(
                Recurrence::MONTH,
                Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            ),
            soft_limit: true,
            carry_overage,
        }
    }

    const PLAN: &dyn Fn(DateTime<Utc>) -> Limit = &|_| Limit::Finite(100);

    #[test]
    fn a_reset_issues_a_fresh_allowance_rolls_credits_over_and_keeps_the_schedule() {
        let spec = monthly(false);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.add_credit(Credit {
            id: Uuid::from_u128(1),
            priority: ALLOWANCE_PRIORITY,
            effective_at: day(1, 2),
            expires_at: None,
            voided_at: None,
            balance: 50,
            rollover: Rollover { min: 0, max: 20 },
        });
        meter.draw(&spec, day(1, 5), 120, PLAN).unwrap();
        assert_eq!(
            meter.read(&spec, day(1, 6), Limit::Finite(100)).balance,
            Some(30)
        );
        meter.reset(&spec, day(1, 10), PLAN).unwrap();
        // A new period from the reset to the scheduled end; the credit's 30 capped at 20.
        assert_eq!(
            (meter.start, meter.end),
            (day(1, 10), day(2, 1) - TimeDelta::hours(12))
        );
        let after = meter.read(&spec, day(1, 11), Limit::Finite(100));
        assert_eq!(
            (after.balance, after.usage, after.overage),
            (Some(120), 0, 0)
        );
        // The scheduled reset still comes on 1 February.
        meter.draw(&spec, day(1, 20), 100, PLAN).unwrap();
        let february = meter.read(&spec, day(2, 2), Limit::Finite(100));
        assert_eq!(
            february.period_start,
            Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(february.balance, Some(120));
        // Usage before the reset is a closed period's now.
        assert!(matches!(
            meter.draw(&spec, day(1, 9), 1, PLAN),
            Err(DrawError::ClosedPeriod(_))
        ));
    }

    #[test]
    fn a_reset_carries_overage_only_when_the_feature_says_so_and_never_moves_a_draw() {
        for (carry, balance, overage) in [(true, 60, 0), (false, 100, 0)] {
            let spec = monthly(carry);
            let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
            meter.draw(&spec, day(1, 5), 140, PLAN).unwrap();
            meter.reset(&spec, day(1, 6), PLAN).unwrap();
            let after = meter.read(&spec, day(1, 7), Limit::Finite(100));
            assert_eq!(
                (after.balance, after.overage),
                (Some(balance), overage),
                "carry {carry}"
            );
        }
        // A reset asked for before the latest draw happens just after it; so does one asked
        // for at that draw's instant (the draw stays in the closed period), and one asked for
        // again at the instant the period began (no two periods start together).
        let spec = monthly(false);
        let mut meter = MeterState::open(&spec, day(1, 2)).unwrap();
        meter.draw(&spec, day(1, 8), 10, PLAN).unwrap();
        meter.reset(&spec, day(1, 7), PLAN).unwrap();
        let after = day(1, 8) + TimeDelta::microseconds(1);
        assert_eq!(meter.start, after);
        meter.reset(&spec, after, PLAN).unwrap();
        assert_eq!(meter.start, after + TimeDelta::microseconds(1));
        // Before the open period: refused, nothing changed.
        let before = meter.clone();
        assert!(meter.reset(&spec, day(1, 3), PLAN).is_err());
        assert_eq!(meter, before);
    }
}
