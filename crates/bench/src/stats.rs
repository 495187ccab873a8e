//! Statistics of a run: median, min and max over interleaved A/B pairs, and latency percentiles
//! from HDR histograms.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Median, minimum and maximum of a set of values (e.g. the per-pair A/B ratios).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

/// Summarises `values`; `None` when empty or when any value is not finite.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: sorted[0],
        max: sorted[n - 1],
        count: n,
    })
}

/// The per-pair ratios `a / b` of interleaved pairs (pairs with `b == 0` are dropped).
pub fn ratios(pairs: &[(f64, f64)]) -> Vec<f64> {
    pairs
        .iter()
        .filter(|(_, b)| *b != 0.0)
        .map(|(a, b)| a / b)
        .collect()
}

/// A latency histogram in nanoseconds, from 1 ns to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` (saturating at the histogram's upper bound).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(nanos);
}

/// Percentiles of a latency histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub count: u64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: Duration::from_nanos(histogram.value_at_quantile(0.50)),
            p99: Duration::from_nanos(histogram.value_at_quantile(0.99)),
            max: Duration::from_nanos(histogram.max()),
            count: histogram.len(),
        }
    }
}

/// A duration in milliseconds with three significant decimals, for the table.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_an_odd_number_of_values() {
        let s = summarize(&[3.0, 1.0, 2.0, 10.0, 0.5]).unwrap();
        assert_eq!(s.median, 2.0);
        assert_eq!(s.min, 0.5);
        assert_eq!(s.max, 10.0);
        assert_eq!(s.count, 5);
    }

    #[test]
    fn summary_of_an_even_number_of_values_averages_the_middle_two() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn summary_refuses_empty_and_non_finite_inputs() {
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[1.0, f64::NAN]).is_none());
        assert!(summarize(&[1.0, f64::INFINITY]).is_none());
    }

    #[test]
    fn ratios_divide_a_by_b_and_skip_zero_denominators() {
        let r = ratios(&[(10.0, 5.0), (1.0, 0.0), (3.0, 4.0)]);
        assert_eq!(r, vec![2.0, 0.75]);
        let s = summarize(&r).unwrap();
        assert_eq!((s.median, s.min, s.max), (1.375, 0.75, 2.0));
    }

    #[test]
    fn histogram_percentiles_of_a_uniform_distribution() {
        let mut h = histogram();
        for us in 1..=1000_u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        // 3 significant digits: within 0.1 % of the exact order statistic.
        let close = |got: Duration, want_us: f64| {
            let got = got.as_secs_f64() * 1e6;
            (got - want_us).abs() <= want_us * 0.001 + 1e-9
        };
        assert!(close(l.p50, 500.0), "p50 {:?}", l.p50);
        assert!(close(l.p99, 990.0), "p99 {:?}", l.p99);
        assert!(close(l.max, 1000.0), "max {:?}", l.max);
    }

    #[test]
    fn histogram_of_nothing_is_zero_and_huge_values_saturate() {
        assert_eq!(Latency::of(&histogram()), Latency::default());
        let mut h = histogram();
        record(&mut h, Duration::from_secs(3600));
        record(&mut h, Duration::ZERO);
        assert_eq!(h.len(), 2);
        assert!(Latency::of(&h).max >= Duration::from_secs(599));
    }

    #[test]
    fn milliseconds_are_printed_with_three_decimals() {
        assert_eq!(ms(Duration::from_micros(1234)), "1.234");
    }
}
