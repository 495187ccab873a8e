//! Usage periods: a recurrence and an anchor, in UTC. The n-th period starts at the anchor plus n
//! recurrences, always computed from the anchor (never from the previous start), so a monthly
//! period anchored on the 31st starts on Feb 28 (29) and again on Mar 31: months are calendar
//! months, clamped to the month's last day, and the clamp never accumulates.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Days, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Longest accepted recurrence text (an ISO-8601 duration such as `P1Y2M3W4DT5H6M7S`).
pub const MAX_RECURRENCE_LEN: usize = 64;
/// No recurrence is shorter: periods are a billing notion, and a shorter one would make the
/// search for the period containing an instant long.
pub const MIN_FIXED_RECURRENCE: TimeDelta = TimeDelta::minutes(1);
/// Nor longer than a century.
const MAX_MONTHS: u32 = 1200;

/// How often a usage period restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recurrence {
    /// Calendar months (a year is 12), added first.
    months: u32,
    /// Then days, hours, minutes and seconds, as an exact length (UTC has no daylight saving).
    fixed: TimeDelta,
}

/// Why a recurrence or anchor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("a recurrence is DAY, WEEK, MONTH, YEAR or an ISO-8601 duration such as P1M or P14D")]
    Syntax,
    #[error("a recurrence must be at least one minute and at most 100 years")]
    OutOfRange,
    #[error("the instant is outside the dates this period can reach")]
    Unreachable,
}

impl Recurrence {
    pub const DAY: Recurrence = Recurrence {
        months: 0,
        fixed: TimeDelta::days(1),
    };
    pub const WEEK: Recurrence = Recurrence {
        months: 0,
        fixed: TimeDelta::weeks(1),
    };
    pub const MONTH: Recurrence = Recurrence {
        months: 1,
        fixed: TimeDelta::zero(),
    };
    pub const YEAR: Recurrence = Recurrence {
        months: 12,
        fixed: TimeDelta::zero(),
    };

    /// A recurrence of `months` calendar months and then `fixed`; validated.
    pub fn new(months: u32, fixed: TimeDelta) -> Result<Self, PeriodError> {
        let too_long = months > MAX_MONTHS
            || fixed > TimeDelta::days(36_525)
            || (months > 0 && fixed > TimeDelta::days(36_525 - i64::from(months) * 28));
        if fixed < TimeDelta::zero() || too_long {
            return Err(PeriodError::OutOfRange);
        }
        if months == 0 && fixed < MIN_FIXED_RECURRENCE {
            return Err(PeriodError::OutOfRange);
        }
        Ok(Self { months, fixed })
    }

    pub fn months(&self) -> u32 {
        self.months
    }

    pub fn fixed(&self) -> TimeDelta {
        self.fixed
    }

    /// `anchor` advanced by `n` recurrences (`n` may be negative); `None` past chrono's range.
    fn step(&self, anchor: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
        let months = i64::from(self.months).checked_mul(n)?;
        let shifted = if months >= 0 {
            anchor.checked_add_months(Months::new(u32::try_from(months).ok()?))?
        } else {
            anchor.checked_sub_months(Months::new(u32::try_from(-months).ok()?))?
        };
        // Whole days through the calendar, the rest as an exact length.
        let days = self.fixed.num_days();
        let rest = self.fixed - TimeDelta::days(days);
        let total_days = days.checked_mul(n)?;
        let shifted = if total_days >= 0 {
            shifted.checked_add_days(Days::new(u64::try_from(total_days).ok()?))?
        } else {
            shifted.checked_sub_days(Days::new(u64::try_from(-total_days).ok()?))?
        };
        let rest = rest.checked_mul(i32::try_from(n).ok()?)?;
        shifted.checked_add_signed(rest)
    }

    /// Roughly one recurrence, for a first guess at how many fit in a span.
    fn approximate(&self) -> TimeDelta {
        // The mean Gregorian month: 30.436875 days.
        TimeDelta::seconds(i64::from(self.months) * 2_629_746) + self.fixed
    }
}

impl FromStr for Recurrence {
    type Err = PeriodError;

    /// `DAY`, `WEEK`, `MONTH`, `YEAR` (any case), or an ISO-8601 duration `PnYnMnWnDTnHnMnS`
    /// with whole numbers (weeks may be combined with other units, as ISO 8601-2 allows).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_RECURRENCE_LEN {
            return Err(PeriodError::Syntax);
        }
        match text.to_ascii_uppercase().as_str() {
            "DAY" => return Ok(Self::DAY),
            "WEEK" => return Ok(Self::WEEK),
            "MONTH" => return Ok(Self::MONTH),
            "YEAR" => return Ok(Self::YEAR),
            _ => {}
        }
        parse_iso_duration(text)
    }
}

fn parse_iso_duration(text: &str) -> Result<Recurrence, PeriodError> {
    let rest = text.strip_prefix('P').ok_or(PeriodError::Syntax)?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) if !time.is_empty() => (date, Some(time)),
        Some(_) => return Err(PeriodError::Syntax),
        None => (rest, None),
    };
    let mut months: u64 = 0;
    let mut seconds: u64 = 0;
    let mut any = false;
    let mut scan = |part: &str, units: &[(char, u64, bool)]| -> Result<(), PeriodError> {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            // Units must come in order, each at most once, each after a number.
            let at = units[next_unit..]
                .iter()
                .position(|(u, _, _)| *u == c)
                .ok_or(PeriodError::Syntax)?
                + next_unit;
            next_unit = at + 1;
            let value: u64 = number.parse().map_err(|_| PeriodError::Syntax)?;
            number.clear();
            let (_, scale, is_months) = units[at];
            let scaled = value.checked_mul(scale).ok_or(PeriodError::OutOfRange)?;
            let target = if is_months { &mut months } else { &mut seconds };
            *target = target.checked_add(scaled).ok_or(PeriodError::OutOfRange)?;
            any = true;
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(PeriodError::Syntax)
        }
    };
    scan(
        date,
        &[
            ('Y', 12, true),
            ('M', 1, true),
            ('W', 7 * 86_400, false),
            ('D', 86_400, false),
        ],
    )?;
    if let Some(time) = time {
        scan(
            time,
            &[('H', 3_600, false), ('M', 60, false), ('S', 1, false)],
        )?;
    }
    if !any {
        return Err(PeriodError::Syntax);
    }
    let months = u32::try_from(months).map_err(|_| PeriodError::OutOfRange)?;
    let seconds = i64::try_from(seconds).map_err(|_| PeriodError::OutOfRange)?;
    let fixed = TimeDelta::try_seconds(seconds).ok_or(PeriodError::OutOfRange)?;
    Recurrence::new(months, fixed)
}

impl fmt::Display for Recurrence {
    /// The canonical ISO-8601 form (`P1M`, `P14D`, `P1MT12H`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        let (years, months) = (self.months / 12, self.months % 12);
        if years > 0 {
            write!(f, "{years}Y")?;
        }
        if months > 0 {
            write!(f, "{months}M")?;
        }
        let secs = self.fixed.num_seconds();
        let (days, secs) = (secs / 86_400, secs % 86_400);
        if days > 0 {
            write!(f, "{days}D")?;
        }
        if secs > 0 {
            f.write_str("T")?;
            let (h, m, s) = (secs / 3_600, secs % 3_600 / 60, secs % 60);
            if h > 0 {
                write!(f, "{h}H")?;
            }
            if m > 0 {
                write!(f, "{m}M")?;
            }
            if s > 0 {
                write!(f, "{s}S")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Recurrence {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Recurrence {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A usage period's recurrence and anchor: periods are `[anchor + n·r, anchor + (n+1)·r)` for
/// every integer `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsagePeriod {
    pub recurrence: Recurrence,
    pub anchor: DateTime<Utc>,
}

/// One period: `start` inclusive, `end` exclusive (the next period's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeriodWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Which period: 0 starts at the anchor, negative ones before it.
    pub index: i64,
}

impl UsagePeriod {
    pub fn new(recurrence: Recurrence, anchor: DateTime<Utc>) -> Self {
        Self { recurrence, anchor }
    }

    /// The `index`-th period.
    pub fn window(&self, index: i64) -> Result<PeriodWindow, PeriodError> {
        let start = self.recurrence.step(self.anchor, index);
        let end = index
            .checked_add(1)
            .and_then(|next| self.recurrence.step(self.anchor, next));
        match (start, end) {
            (Some(start), Some(end)) => Ok(PeriodWindow { start, end, index }),
            _ => Err(PeriodError::Unreachable),
        }
    }

    /// The period containing `at`.
    pub fn containing(&self, at: DateTime<Utc>) -> Result<PeriodWindow, PeriodError> {
        let approximate = self.recurrence.approximate().num_seconds().max(1);
        let mut index = (at - self.anchor).num_seconds().div_euclid(approximate);
        // The guess is off by at most a couple of periods (month lengths vary by ≤ 3 days).
        for _ in 0..8 {
            let window = self.window(index)?;
            if at < window.start {
                index -= 1;
            } else if at >= window.end {
                index += 1;
            } else {
                return Ok(window);
            }
        }
        Err(PeriodError::Unreachable)
    }

    /// The periods overlapping `[from, to)`, oldest first, at most `limit` of them.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PeriodWindow>, PeriodError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let mut window = self.containing(from)?;
        while window.start < to && out.len() < limit {
            let next = window
                .index
                .checked_add(1)
                .ok_or(PeriodError::Unreachable)?;
            out.push(window);
            window = self.window(next)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn monthly_periods_anchored_on_the_31st_clamp_without_drifting() {
        let period = UsagePeriod::new(Recurrence::MONTH, t(2027, 1, 31, 9));
        let starts: Vec<_> = (0..5).map(|n| period.window(n).unwrap().start).collect();
        assert_eq!(
            starts,
            [
                t(2027, 1, 31, 9),
                t(2027, 2, 28, 9),
                t(2027, 3, 31, 9),
                t(2027, 4, 30, 9),
                t(2027, 5, 31, 9)
            ]
        );
        // A leap year's February, and periods before the anchor.
        let leap = UsagePeriod::new(Recurrence::MONTH, t(2028, 1, 31, 0));
        assert_eq!(leap.window(1).unwrap().start, t(2028, 2, 29, 0));
        assert_eq!(leap.window(-2).unwrap().start, t(2027, 11, 30, 0));
        assert_eq!(leap.window(-1).unwrap().end, t(2028, 1, 31, 0));
    }

    #[test]
    fn the_period_containing_an_instant_has_it_inside_and_meets_its_neighbours() {
        let periods = [
            UsagePeriod::new(Recurrence::MONTH, t(2027, 1, 31, 9)),
            UsagePeriod::new(Recurrence::YEAR, t(2024, 2, 29, 0)),
            UsagePeriod::new(Recurrence::WEEK, t(2027, 3, 1, 0)),
            UsagePeriod::new(Recurrence::DAY, t(2027, 3, 1, 17)),
            UsagePeriod::new("P1M15D".parse().unwrap(), t(2027, 1, 31, 0)),
            UsagePeriod::new("PT90M".parse().unwrap(), t(2027, 1, 1, 0)),
        ];
        for period in periods {
            for hours in (-30_000i64..30_000).step_by(37) {
                let at = t(2027, 6, 15, 12) + TimeDelta::hours(hours) + TimeDelta::seconds(7);
                let window = period.containing(at).unwrap();
                assert!(window.start <= at && at < window.end, "{period:?} at {at}");
                assert_eq!(period.window(window.index + 1).unwrap().start, window.end);
            }
            // The instant of a boundary belongs to the period it starts.
            let boundary = period.window(3).unwrap().start;
            assert_eq!(period.containing(boundary).unwrap().index, 3);
        }
    }

    #[test]
    fn recurrences_parse_from_names_and_iso_durations_and_print_canonically() {
        for (text, canonical) in [
            ("month", "P1M"),
            ("YEAR", "P1Y"),
            ("week", "P7D"),
            ("P1Y6M", "P1Y6M"),
            ("P18M", "P1Y6M"),
            ("P2W", "P14D"),
            ("P1DT12H", "P1DT12H"),
            ("PT1H30M", "PT1H30M"),
            ("PT90M", "PT1H30M"),
        ] {
            let parsed: Recurrence = text.parse().unwrap();
            assert_eq!(parsed.to_string(), canonical, "{text}");
            assert_eq!(canonical.parse::<Recurrence>().unwrap(), parsed);
        }
        for bad in [
            "", "P", "PT", "1M", "P1", "PM", "P1M1Y", "P1MM", "P-1M", "P1.5M", "P1DT",
        ] {
            assert_eq!(bad.parse::<Recurrence>(), Err(PeriodError::Syntax), "{bad}");
        }
        for out in ["PT30S", "P0D", "P101Y", "P99999999999999999999Y"] {
            assert!(out.parse::<Recurrence>().is_err(), "{out}");
        }
        assert_eq!("PT30S".parse::<Recurrence>(), Err(PeriodError::OutOfRange));
        assert_eq!(
            "P".repeat(MAX_RECURRENCE_LEN + 1).parse::<Recurrence>(),
            Err(PeriodError::Syntax)
        );
    }

    #[test]
    fn periods_between_two_instants_are_contiguous_and_bounded() {
        let period = UsagePeriod::new(Recurrence::MONTH, t(2027, 1, 1, 0));
        let windows = period
            .between(t(2027, 1, 15, 0), t(2027, 4, 1, 0), 100)
            .unwrap();
        let starts: Vec<_> = windows.iter().map(|w| w.start).collect();
        assert_eq!(
            starts,
            [t(2027, 1, 1, 0), t(2027, 2, 1, 0), t(2027, 3, 1, 0)]
        );
        assert_eq!(
            period
                .between(t(2027, 1, 15, 0), t(2030, 1, 1, 0), 2)
                .unwrap()
                .len(),
            2
        );
        assert!(
            period
                .between(t(2027, 2, 1, 0), t(2027, 2, 1, 0), 9)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn instants_past_the_calendar_are_an_error_not_a_panic() {
        let period = UsagePeriod::new(
            Recurrence::new(MAX_MONTHS, TimeDelta::zero()).unwrap(),
            t(2027, 1, 1, 0),
        );
        assert_eq!(period.window(i64::MAX), Err(PeriodError::Unreachable));
        assert_eq!(period.window(i64::MIN), Err(PeriodError::Unreachable));
        assert!(period.containing(DateTime::<Utc>::MAX_UTC).is_err());
    }
}
