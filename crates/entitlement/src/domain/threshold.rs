//! Usage thresholds: when an account's usage of a metered feature has reached a share of what
//! its open period made available. Pure: the rule, the configured list and what a crossing
//! carries; the app records each crossing once per period and sends its event.
//!
//! The ratio of a reading is `usage ÷ available`, where `available = balance + covered` and
//! `covered = max(usage − overage, 0)` is the usage some credit or the allowance paid for. So
//! with no overage the ratio is `usage ÷ (usage + balance)`, and 100 % is exactly "the balance
//! reached 0"; a soft limit's overage takes it past 100 % (150 %: usage is 1.5× what the
//! period made available). Nothing is reached without usage; an unlimited allowance (no
//! balance) reaches nothing; usage with nothing available reaches every threshold.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::metering::MeterReading;
use super::{DomainError, Result};

/// Most thresholds configured.
pub const MAX_THRESHOLDS: usize = 10;
/// Highest threshold, in percent.
pub const MAX_THRESHOLD_PERCENT: u16 = 1_000;
/// The thresholds when none are configured.
pub const DEFAULT_THRESHOLDS: [u16; 3] = [50, 80, 100];

/// The thresholds in percent: each 1..=1000, distinct, at most ten, kept ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageThresholds(Vec<u16>);

impl Default for UsageThresholds {
    fn default() -> Self {
        Self(DEFAULT_THRESHOLDS.to_vec())
    }
}

impl UsageThresholds {
    /// Validates `percents` (any order); empty turns threshold events off.
    pub fn new(percents: &[u16]) -> Result<Self> {
        let bad = |message: String| DomainError::invalid("usage_thresholds", message);
        if percents.len() > MAX_THRESHOLDS {
            return Err(bad(format!("at most {MAX_THRESHOLDS} thresholds")));
        }
        let mut sorted = percents.to_vec();
        sorted.sort_unstable();
        if let Some(&p) = sorted
            .iter()
            .find(|p| !(1..=MAX_THRESHOLD_PERCENT).contains(*p))
        {
            return Err(bad(format!(
                "{p} is not a percentage from 1 to {MAX_THRESHOLD_PERCENT}"
            )));
        }
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("{} is listed twice", w[0])));
        }
        Ok(Self(sorted))
    }

    pub fn percents(&self) -> &[u16] {
        &self.0
    }

    /// The thresholds `reading` has reached, ascending (see the module's rule).
    pub fn reached(&self, reading: &MeterReading) -> &[u16] {
        let Some(balance) = reading.balance else {
            return &[];
        };
        if reading.usage <= 0 {
            return &[];
        }
        let usage = i128::from(reading.usage);
        let covered = (usage - i128::from(reading.overage)).max(0);
        // A reservation's hold is not usage: what it holds still counts as available.
        let available = i128::from(balance.max(0)) + i128::from(reading.held.max(0)) + covered;
        // usage / available ≥ p / 100, without division (available may be 0).
        let n = self
            .0
            .partition_point(|&p| usage * 100 >= i128::from(p) * available);
        &self.0[..n]
    }
}

/// A threshold an account's meter reached in a period, as its event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdCrossing {
    pub tenant_id: String,
    /// Set when the meter is this user's own (README "Per-user meters").
    pub user_id: Option<String>,
    pub feature_id: Uuid,
    pub feature_key: String,
    /// In percent.
    pub threshold: u16,
    pub usage: i64,
    pub balance: i64,
    pub overage: i64,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// When the write that reached it happened.
    pub at: DateTime<Utc>,
}

impl ThresholdCrossing {
    /// What `reading` (finite: [`UsageThresholds::reached`] found thresholds) says, for each
    /// of `thresholds`.
    pub fn of(
        (tenant_id, user_id): (&str, Option<&str>),
        feature_id: Uuid,
        feature_key: &str,
        reading: &MeterReading,
        thresholds: &[u16],
        at: DateTime<Utc>,
    ) -> Vec<Self> {
        thresholds
            .iter()
            .map(|&threshold| Self {
                tenant_id: tenant_id.to_owned(),
                user_id: user_id.map(str::to_owned),
                feature_id,
                feature_key: feature_key.to_owned(),
                threshold,
                usage: reading.usage,
                balance: reading.balance.unwrap_or_default(),
                overage: reading.overage,
                period_start: reading.period_start,
                period_end: reading.period_end,
                at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn reading(usage: i64, balance: Option<i64>, overage: i64) -> MeterReading {
        MeterReading {
            period_start: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            period_end: Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap(),
            balance,
            usage,
            overage,
            held: 0,
        }
    }

    #[test]
    fn a_reservation_s_hold_is_not_usage() {
        let t = UsageThresholds::default();
        // 50 used, 40 held, 10 left: half of the 100 used, not 5/6 of it.
        let held = MeterReading {
            held: 40,
            ..reading(50, Some(10), 0)
        };
        assert_eq!(t.reached(&held), [50]);
    }

    #[test]
    fn thresholds_are_validated_and_kept_ascending() {
        assert_eq!(
            UsageThresholds::new(&[100, 50, 80]).unwrap().percents(),
            [50, 80, 100]
        );
        assert!(UsageThresholds::new(&[]).unwrap().percents().is_empty());
        assert_eq!(UsageThresholds::default().percents(), [50, 80, 100]);
        for bad in [
            vec![0],
            vec![1_001],
            vec![50, 50],
            (1..=11).collect::<Vec<u16>>(),
        ] {
            let err = UsageThresholds::new(&bad).unwrap_err();
            assert!(
                matches!(&err, DomainError::InvalidArgument { field, .. } if field == "usage_thresholds"),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn the_ratio_is_usage_over_what_the_period_made_available() {
        let t = UsageThresholds::new(&[50, 80, 100, 150]).unwrap();
        // 100 available: 49 used reaches nothing, 50 the first, 100 (balance 0) up to 100 %.
        assert_eq!(t.reached(&reading(49, Some(51), 0)), [] as [u16; 0]);
        assert_eq!(t.reached(&reading(50, Some(50), 0)), [50]);
        assert_eq!(t.reached(&reading(99, Some(1), 0)), [50, 80]);
        assert_eq!(t.reached(&reading(100, Some(0), 0)), [50, 80, 100]);
        // A soft limit's overage: 150 used of 100 available.
        assert_eq!(t.reached(&reading(150, Some(0), 50)), [50, 80, 100, 150]);
        assert_eq!(t.reached(&reading(149, Some(0), 49)), [50, 80, 100]);
        // A top-up after overage counts as available: 120 used of 100 covered + 50 left.
        assert_eq!(t.reached(&reading(120, Some(50), 20)), [50, 80]);
        assert_eq!(t.reached(&reading(120, Some(100), 20)), [50]);
        // Unlimited, or no usage: nothing. Usage with nothing available: everything.
        assert_eq!(t.reached(&reading(1_000, None, 0)), [] as [u16; 0]);
        assert_eq!(t.reached(&reading(0, Some(0), 0)), [] as [u16; 0]);
        assert_eq!(t.reached(&reading(0, Some(0), 30)), [] as [u16; 0]);
        assert_eq!(t.reached(&reading(1, Some(0), 31)), [50, 80, 100, 150]);
        // Far from overflowing at the largest amounts.
        assert_eq!(
            t.reached(&reading(i64::MAX, Some(i64::MAX), 0)),
            [50] as [u16; 1]
        );
    }
}
