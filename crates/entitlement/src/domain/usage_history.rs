//! Usage history: a metered feature's usage for one account per window over a time range. The
//! windows are computed here; the store aggregates the stored events into them.

use chrono::{DateTime, Datelike, Days, DurationRound, Months, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::metering::MeterState;
use super::{DomainError, Limit, Result};

/// A window or period: `[start, end)`.
pub type Span = (DateTime<Utc>, DateTime<Utc>);

/// The most windows one history query answers.
pub const MAX_HISTORY_WINDOWS: usize = 1_000;

/// How a range is cut into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSize {
    /// UTC hours.
    Hour,
    /// UTC days, from midnight.
    Day,
    /// ISO weeks: Monday 00:00 UTC.
    Week,
    /// Calendar months, from the 1st 00:00 UTC.
    Month,
    /// The feature's usage periods for the account (a manual reset starts one).
    Period,
}

/// A history query as asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub tenant_id: String,
    pub feature_key: String,
    /// Inclusive.
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    pub window: WindowSize,
    /// Only this user's events.
    pub user_id: Option<String>,
}

/// One window's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// SUM and COUNT: what the window's events counted; MAX: the largest amount reported in it;
    /// UNIQUE_COUNT: the distinct values reported in it. 0 without events.
    pub usage: i64,
}

/// The range's own fields: `from < to`, an optional user of 1-255 characters.
pub fn validate_query(q: &HistoryQuery) -> Result<()> {
    super::validate_tenant_id("tenant_id", &q.tenant_id)?;
    if q.from >= q.to {
        return Err(DomainError::invalid("to", "must be after from"));
    }
    if q.user_id
        .as_deref()
        .is_some_and(|u| !super::metering::plain_text(u))
    {
        return Err(DomainError::invalid(
            "user_id",
            "must be 1-255 characters, none of them control characters",
        ));
    }
    Ok(())
}

fn too_many() -> DomainError {
    DomainError::invalid(
        "window",
        format!(
            "the range holds more than {MAX_HISTORY_WINDOWS} windows of this size: narrow it or \
             take a larger window"
        ),
    )
}

/// The calendar window of `size` containing `at` (not `Period`).
fn calendar(size: WindowSize, at: DateTime<Utc>) -> Option<Span> {
    let midnight = at.date_naive().and_time(NaiveTime::MIN).and_utc();
    let (start, end) = match size {
        WindowSize::Hour => {
            let start = at.duration_trunc(TimeDelta::hours(1)).ok()?;
            (start, start.checked_add_signed(TimeDelta::hours(1))?)
        }
        WindowSize::Day => (midnight, midnight.checked_add_days(Days::new(1))?),
        WindowSize::Week => {
            let back = u64::from(at.weekday().num_days_from_monday());
            let start = midnight.checked_sub_days(Days::new(back))?;
            (start, start.checked_add_days(Days::new(7))?)
        }
        WindowSize::Month => {
            let start = midnight.checked_sub_days(Days::new(u64::from(at.day0())))?;
            (start, start.checked_add_months(Months::new(1))?)
        }
        WindowSize::Period => return None,
    };
    Some((start, end))
}

/// The windows covering `[from, to)`, in order, the first and last cut to the range. A
/// `Period` window is what `period_at(t)` says of the period containing `t`. Refused beyond
/// [`MAX_HISTORY_WINDOWS`].
pub fn windows(
    size: WindowSize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    period_at: &dyn Fn(DateTime<Utc>) -> Result<Span>,
) -> Result<Vec<Span>> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        if out.len() == MAX_HISTORY_WINDOWS {
            return Err(too_many());
        }
        let end = match size {
            WindowSize::Period => period_at(at)?.1,
            // Past the calendar's reach: one window to the end of the range.
            WindowSize::Hour | WindowSize::Day | WindowSize::Week | WindowSize::Month => {
                calendar(size, at).map_or(to, |(_, end)| end)
            }
        };
        // A period source that does not move forward would loop: end the range instead.
        let end = if end <= at { to } else { end.min(to) };
        out.push((at, end));
        at = end;
    }
    Ok(out)
}

/// A closed period of an account's meter, recorded when it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeriodSummary {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Closed by a manual reset (else by the schedule).
    pub manual: bool,
    pub usage: i64,
    /// Usage no credit covered, including overage carried in.
    pub overage: i64,
    /// The plan allowance issued for the period, as of its close; `None`: unlimited.
    pub allowance: Option<i64>,
    pub allowance_used: i64,
    /// Each credit that was usable until the close: what remained and what rolled over.
    pub credits: Vec<CreditClose>,
    /// Overage carried into the next period (drawn first there).
    pub carried_overage: i64,
}

/// A credit at a period's close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditClose {
    pub id: Uuid,
    pub remaining: i64,
    /// Rolled over into the next period (0: it ended here).
    pub carried: i64,
}

/// The period `before` held, closed into `after` (the meter the close opened), with the plan
/// allowance `allocation` issued for it.
pub fn summarize(
    before: &MeterState,
    after: &MeterState,
    allocation: Limit,
    carry_overage: bool,
    manual: bool,
) -> PeriodSummary {
    let end = after.start;
    let credits = before
        .credits
        .iter()
        .filter(|c| {
            c.effective_at < end
                && c.expires_at.is_none_or(|e| end <= e)
                && c.voided_at.is_none_or(|v| end <= v)
        })
        .map(|c| CreditClose {
            id: c.id,
            remaining: c.balance,
            carried: after
                .credits
                .iter()
                .find(|a| a.id == c.id)
                .map_or(0, |a| a.balance),
        })
        .collect();
    PeriodSummary {
        start: before.start,
        end,
        manual,
        usage: before.usage,
        overage: before.overage,
        allowance: match allocation {
            Limit::Finite(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
            Limit::Unlimited => None,
        },
        allowance_used: before.allowance_used,
        credits,
        carried_overage: if carry_overage { before.overage } else { 0 },
    }
}

/// The period containing `at`: the scheduled one, `scheduled`, cut by `cuts` — the bounds of
/// recorded periods and the open period's start, where manual resets moved them.
pub fn period_containing(scheduled: Span, cuts: &[DateTime<Utc>], at: DateTime<Utc>) -> Span {
    let start = cuts
        .iter()
        .copied()
        .filter(|c| scheduled.0 < *c && *c <= at)
        .max()
        .unwrap_or(scheduled.0);
    let end = cuts
        .iter()
        .copied()
        .filter(|c| at < *c && *c < scheduled.1)
        .min()
        .unwrap_or(scheduled.1);
    (start, end)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, m, d, h, 0, 0).unwrap()
    }

    fn none(_: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
        unreachable!("calendar windows ask for no period")
    }

    #[test]
    fn calendar_windows_are_aligned_in_utc_and_cut_to_the_range() {
        let days = windows(WindowSize::Day, t(3, 1, 6), t(3, 3, 12), &none).unwrap();
        assert_eq!(
            days,
            [
                (t(3, 1, 6), t(3, 2, 0)),
                (t(3, 2, 0), t(3, 3, 0)),
                (t(3, 3, 0), t(3, 3, 12))
            ]
        );
        // 2027-03-03 is a Wednesday: its week began on Monday 1 March.
        let weeks = windows(WindowSize::Week, t(3, 3, 0), t(3, 16, 0), &none).unwrap();
        assert_eq!(
            weeks,
            [
                (t(3, 3, 0), t(3, 8, 0)),
                (t(3, 8, 0), t(3, 15, 0)),
                (t(3, 15, 0), t(3, 16, 0))
            ]
        );
        let months = windows(WindowSize::Month, t(1, 31, 0), t(3, 2, 0), &none).unwrap();
        assert_eq!(
            months,
            [
                (t(1, 31, 0), t(2, 1, 0)),
                (t(2, 1, 0), t(3, 1, 0)),
                (t(3, 1, 0), t(3, 2, 0))
            ]
        );
        let hours = windows(WindowSize::Hour, t(3, 1, 0), t(3, 1, 3), &none).unwrap();
        assert_eq!(hours.len(), 3);
    }

    #[test]
    fn more_than_the_bound_of_windows_is_refused_and_the_bound_itself_is_not() {
        let from = t(1, 1, 0);
        let bound = from + TimeDelta::hours(MAX_HISTORY_WINDOWS as i64);
        assert_eq!(
            windows(WindowSize::Hour, from, bound, &none).unwrap().len(),
            MAX_HISTORY_WINDOWS
        );
        let err =
            windows(WindowSize::Hour, from, bound + TimeDelta::minutes(1), &none).unwrap_err();
        assert!(matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "window"));
    }

    #[test]
    fn a_scheduled_period_is_cut_where_resets_moved_its_bounds() {
        let scheduled = (t(1, 1, 0), t(2, 1, 0));
        let cuts = [t(1, 10, 0), t(1, 20, 0), t(2, 1, 0)];
        assert_eq!(
            period_containing(scheduled, &cuts, t(1, 5, 0)),
            (t(1, 1, 0), t(1, 10, 0))
        );
        assert_eq!(
            period_containing(scheduled, &cuts, t(1, 10, 0)),
            (t(1, 10, 0), t(1, 20, 0))
        );
        assert_eq!(
            period_containing(scheduled, &cuts, t(1, 25, 0)),
            (t(1, 20, 0), t(2, 1, 0))
        );
        assert_eq!(period_containing(scheduled, &[], t(1, 25, 0)), scheduled);
    }

    #[test]
    fn period_windows_follow_the_periods_given() {
        // Periods of 10 days from 1 January, except one cut short by a reset on the 15th.
        let period_at = |at: DateTime<Utc>| -> Result<_> {
            Ok(if at < t(1, 15, 0) {
                (t(1, 11, 0), t(1, 15, 0))
            } else if at < t(1, 21, 0) {
                (t(1, 15, 0), t(1, 21, 0))
            } else {
                (t(1, 21, 0), t(1, 31, 0))
            })
        };
        let got = windows(WindowSize::Period, t(1, 12, 0), t(1, 25, 0), &period_at).unwrap();
        assert_eq!(
            got,
            [
                (t(1, 12, 0), t(1, 15, 0)),
                (t(1, 15, 0), t(1, 21, 0)),
                (t(1, 21, 0), t(1, 25, 0))
            ]
        );
    }
}
