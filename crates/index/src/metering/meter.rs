//! A metered feature for one subject over time: the periods of its usage period, the plan
//! allowance issued in each, the credit grants, and usage replayed through one [`Ledger`] per
//! period with what rolls over carried from one into the next. Reading it at an instant gives
//! the answer a check needs: balance, usage, overage, the period and the next reset.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    ledger::{Credit, Ledger, LedgerError, Rollover},
    period::{PeriodError, PeriodWindow, UsagePeriod},
};

/// At most this many periods are replayed in one reading; older history starts from a
/// checkpoint (a closed period's carried credits) instead.
pub const MAX_REPLAY_PERIODS: usize = 4096;

/// How a metered feature counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterSpec {
    pub period: UsagePeriod,
    /// Soft: access continues past a zero balance, the excess reported as overage.
    pub soft_limit: bool,
    /// Overage at a reset is owed by the next period (drawn first from its credits).
    pub carry_overage: bool,
}

/// A plan's amount issued afresh in every period while the plan grant is active: from the
/// later of the period's start and `from`, until the earlier of its end and `until`. Nothing of
/// it rolls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The plan grant it comes from (it names the credit in per-grant remaining amounts).
    pub id: Uuid,
    pub amount: i64,
    pub priority: u32,
    pub from: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

/// A credit grant: a top-up, promotion or compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditGrant {
    pub id: Uuid,
    pub amount: i64,
    pub priority: u32,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub rollover: Rollover,
}

/// One usage event, already attributed to this feature and subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub at: DateTime<Utc>,
    pub amount: i64,
}

/// Where a replay starts: the opening of a period, with what the period before it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub period: i64,
    /// Credit grants still holding a balance (or not yet effective) at the period's start.
    pub carried: Vec<Credit>,
    pub carried_overage: i64,
}

/// Why a meter could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error(transparent)]
    Period(#[from] PeriodError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("more than {MAX_REPLAY_PERIODS} periods to replay; start from a later checkpoint")]
    TooManyPeriods,
    #[error("the reading is earlier than the checkpoint it starts from")]
    BeforeCheckpoint,
}

/// A metered feature's state at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub period: PeriodWindow,
    /// What can still be drawn (0 when overdrawn).
    pub balance: i64,
    /// Usage this period, covered or not.
    pub usage: i64,
    /// Usage no credit covered this period, including overage carried in.
    pub overage: i64,
    /// Each usable credit with what remains of it, in burn-down order.
    pub credits: Vec<(Uuid, i64)>,
}

impl Reading {
    /// The next reset: the current period's end.
    pub fn next_reset(&self) -> DateTime<Utc> {
        self.period.end
    }

    /// Whether `requested` units may be used now (any use at all when `None`): a soft limit
    /// always allows (the excess becomes overage), a hard one only within the balance.
    pub fn allows(&self, spec: &MeterSpec, requested: Option<i64>) -> bool {
        spec.soft_limit || self.balance >= requested.unwrap_or(1).max(1)
    }
}

/// A metered feature's history for one subject.
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    pub spec: &'a MeterSpec,
    pub allowances: &'a [Allowance],
    pub grants: &'a [CreditGrant],
}

impl Meter<'_> {
    /// The checkpoint of the period containing `at` when nothing was carried into it: every
    /// grant effective before then counts whole (for a replay from before any usage).
    pub fn origin(&self, at: DateTime<Utc>) -> Result<Checkpoint, MeterError> {
        let window = self.spec.period.containing(at)?;
        Ok(Checkpoint {
            period: window.index,
            carried: self
                .grants
                .iter()
                .filter(|g| g.effective_at < window.start)
                .map(credit_of)
                .collect(),
            carried_overage: 0,
        })
    }

    /// Replays `usage` (in time order; events before the checkpoint's period are ignored, events
    /// at or after `at` too) from `from` and reads the meter at `at`.
    pub fn read(
        &self,
        from: &Checkpoint,
        usage: &[Usage],
        at: DateTime<Utc>,
    ) -> Result<Reading, MeterError> {
        let target = self.spec.period.containing(at)?;
        let (ledger, window) = self.replay(from, usage, target.index, at)?;
        Ok(Reading {
            period: window,
            balance: ledger.balance_at(at).max(0),
            usage: ledger.usage(),
            overage: ledger.overage(),
            credits: ledger.credits_at(at).map(|c| (c.id, c.balance)).collect(),
        })
    }

    /// The checkpoint at the start of the period containing `at`: what a store keeps so later
    /// readings replay one period rather than the whole history.
    pub fn checkpoint(
        &self,
        from: &Checkpoint,
        usage: &[Usage],
        at: DateTime<Utc>,
    ) -> Result<Checkpoint, MeterError> {
        let target = self.spec.period.containing(at)?;
        if target.index == from.period {
            return Ok(from.clone());
        }
        let (ledger, _) = self.replay(from, usage, target.index - 1, target.start)?;
        let (carried, carried_overage) = ledger.close(self.spec.carry_overage);
        Ok(Checkpoint {
            period: target.index,
            carried,
            carried_overage,
        })
    }

    /// The ledger of period `target`, replayed from `from` with every usage before `until`
    /// drawn (`until` lies in or at the end of `target`).
    fn replay(
        &self,
        from: &Checkpoint,
        usage: &[Usage],
        target: i64,
        until: DateTime<Utc>,
    ) -> Result<(Ledger, PeriodWindow), MeterError> {
        if target < from.period {
            return Err(MeterError::BeforeCheckpoint);
        }
        if target - from.period >= MAX_REPLAY_PERIODS as i64 {
            return Err(MeterError::TooManyPeriods);
        }
        let mut window = self.spec.period.window(from.period)?;
        let mut ledger = self.open(window, from.carried.clone(), from.carried_overage)?;
        let start = window.start;
        let mut events = usage
            .iter()
            .skip_while(|u| u.at < start)
            .take_while(|u| u.at < until)
            .peekable();
        loop {
            while let Some(event) = events.next_if(|u| u.at < window.end) {
                ledger.draw(event.at, event.amount)?;
            }
            if window.index == target {
                return Ok((ledger, window));
            }
            let (carried, carried_overage) = ledger.close(self.spec.carry_overage);
            window = self.spec.period.window(window.index + 1)?;
            ledger = self.open(window, carried, carried_overage)?;
        }
    }

    /// A period's ledger: what was carried in, grants becoming effective during it, and the
    /// allowances issued for it.
    fn open(
        &self,
        window: PeriodWindow,
        mut credits: Vec<Credit>,
        carried_overage: i64,
    ) -> Result<Ledger, MeterError> {
        credits.retain(|c| {
            !self
                .grants
                .iter()
                .any(|g| g.id == c.id && g.effective_at >= window.start)
        });
        credits.extend(
            self.grants
                .iter()
                .filter(|g| window.start <= g.effective_at && g.effective_at < window.end)
                .map(credit_of),
        );
        credits.extend(self.allowances.iter().filter_map(|a| {
            let from = a.from.max(window.start);
            let until = a.until.map_or(window.end, |u| u.min(window.end));
            (from < until).then_some(Credit {
                id: a.id,
                priority: a.priority,
                effective_at: from,
                expires_at: Some(until),
                voided_at: None,
                balance: a.amount,
                rollover: Rollover::NONE,
            })
        }));
        Ok(Ledger::open(
            window.start,
            window.end,
            credits,
            carried_overage,
        )?)
    }
}

fn credit_of(grant: &CreditGrant) -> Credit {
    Credit {
        id: grant.id,
        priority: grant.priority,
        effective_at: grant.effective_at,
        expires_at: grant.expires_at,
        voided_at: grant.voided_at,
        balance: grant.amount,
        rollover: grant.rollover,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::metering::Recurrence;

    fn at(m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, m, d, 0, 0, 0).unwrap()
    }

    fn monthly(soft_limit: bool, carry_overage: bool) -> MeterSpec {
        MeterSpec {
            period: UsagePeriod::new(Recurrence::MONTH, at(1, 1)),
            soft_limit,
            carry_overage,
        }
    }

    fn plan(amount: i64) -> Allowance {
        Allowance {
            id: Uuid::from_u128(100),
            amount,
            priority: 1,
            from: at(1, 1),
            until: None,
        }
    }

    fn usage(events: &[(u32, u32, i64)]) -> Vec<Usage> {
        events
            .iter()
            .map(|&(m, d, amount)| Usage {
                at: at(m, d) + TimeDelta::hours(12),
                amount,
            })
            .collect()
    }

    #[test]
    fn a_monthly_allowance_resets_each_month_and_a_top_up_on_it_rolls_over() {
        let spec = monthly(false, false);
        let allowances = [plan(10_000)];
        let top_up = CreditGrant {
            id: Uuid::from_u128(7),
            amount: 5_000,
            priority: 1,
            effective_at: at(1, 20),
            expires_at: None,
            voided_at: None,
            rollover: Rollover { min: 0, max: 5_000 },
        };
        let grants = [top_up];
        let meter = Meter {
            spec: &spec,
            allowances: &allowances,
            grants: &grants,
        };
        let events = usage(&[(1, 10, 2_300), (1, 25, 9_000), (2, 3, 100)]);
        let origin = meter.origin(at(1, 1)).unwrap();

        let mid_january = meter.read(&origin, &events, at(1, 15)).unwrap();
        assert_eq!(
            (mid_january.balance, mid_january.usage, mid_january.overage),
            (7_700, 2_300, 0)
        );
        assert_eq!(mid_january.next_reset(), at(2, 1));

        // 11,300 in January: the allowance (expiring first) took 10,000, the top-up 1,300.
        let end_january = meter.read(&origin, &events, at(1, 31)).unwrap();
        assert_eq!(
            end_january.credits,
            [(Uuid::from_u128(100), 0), (Uuid::from_u128(7), 3_700)]
        );
        assert!(!end_january.allows(&spec, Some(3_701)));
        assert!(end_january.allows(&spec, Some(3_700)));

        // February: a fresh 10,000 plus the top-up's 3,700 rolled over; 100 used.
        let february = meter.read(&origin, &events, at(2, 10)).unwrap();
        assert_eq!((february.balance, february.usage), (13_600, 100));
        assert_eq!(february.period.start, at(2, 1));
        // The same from February's checkpoint.
        let checkpoint = meter.checkpoint(&origin, &events, at(2, 10)).unwrap();
        assert_eq!(checkpoint.period, 1);
        assert_eq!(
            meter.read(&checkpoint, &events, at(2, 10)).unwrap(),
            february
        );
    }

    #[test]
    fn overage_is_reported_and_carried_only_when_asked() {
        let allowances = [plan(100)];
        let events = usage(&[(1, 5, 130)]);
        for (carry, february_balance) in [(true, 70), (false, 100)] {
            let spec = monthly(true, carry);
            let meter = Meter {
                spec: &spec,
                allowances: &allowances,
                grants: &[],
            };
            let origin = meter.origin(at(1, 1)).unwrap();
            let january = meter.read(&origin, &events, at(1, 20)).unwrap();
            assert_eq!((january.balance, january.overage), (0, 30));
            assert!(january.allows(&spec, Some(1_000)), "soft: overage allowed");
            assert!(!january.allows(
                &MeterSpec {
                    soft_limit: false,
                    ..spec
                },
                None
            ));
            let february = meter.read(&origin, &events, at(2, 2)).unwrap();
            assert_eq!(february.balance, february_balance, "carry {carry}");
        }
    }

    #[test]
    fn a_late_event_lands_in_its_own_period() {
        let spec = monthly(false, false);
        let allowances = [plan(100)];
        let meter = Meter {
            spec: &spec,
            allowances: &allowances,
            grants: &[],
        };
        let origin = meter.origin(at(1, 1)).unwrap();
        // Reported in February about January 30: January's usage, not February's.
        let events = usage(&[(1, 30, 40), (2, 2, 5)]);
        let february = meter.read(&origin, &events, at(2, 3)).unwrap();
        assert_eq!((february.usage, february.balance), (5, 95));
        let january = meter.read(&origin, &events, at(1, 31)).unwrap();
        assert_eq!(january.usage, 40);
    }

    #[test]
    fn a_plan_granted_mid_period_issues_its_amount_from_then_and_stops_when_revoked() {
        let spec = monthly(false, false);
        let allowances = [Allowance {
            from: at(3, 10),
            until: Some(at(4, 20)),
            ..plan(50)
        }];
        let meter = Meter {
            spec: &spec,
            allowances: &allowances,
            grants: &[],
        };
        let origin = meter.origin(at(1, 1)).unwrap();
        let read = |m, d| meter.read(&origin, &[], at(m, d)).unwrap().balance;
        assert_eq!(
            (read(3, 5), read(3, 15), read(4, 15), read(4, 25)),
            (0, 50, 50, 0)
        );
    }

    #[test]
    fn replays_are_bounded_and_never_start_after_their_reading() {
        let spec = MeterSpec {
            period: UsagePeriod::new(Recurrence::new(0, TimeDelta::minutes(1)).unwrap(), at(1, 1)),
            soft_limit: false,
            carry_overage: false,
        };
        let meter = Meter {
            spec: &spec,
            allowances: &[],
            grants: &[],
        };
        let origin = meter.origin(at(1, 1)).unwrap();
        assert_eq!(
            meter.read(&origin, &[], at(1, 10)),
            Err(MeterError::TooManyPeriods)
        );
        let later = meter.origin(at(1, 10)).unwrap();
        assert_eq!(
            meter.read(&later, &[], at(1, 5)),
            Err(MeterError::BeforeCheckpoint)
        );
    }
}
