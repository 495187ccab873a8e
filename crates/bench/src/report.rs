//! The result table, rendered as Markdown.

use std::fmt::Write as _;

use crate::stats::Summary;

/// Whether a measure met its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// Reported only (no pass/fail target), or not measured here.
    Report,
}

impl Verdict {
    pub fn at_least(value: f64, target: f64) -> Self {
        if value >= target {
            Self::Met
        } else {
            Self::Missed
        }
    }

    pub fn at_most(value: f64, target: f64) -> Self {
        if value <= target {
            Self::Met
        } else {
            Self::Missed
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**missed**",
            Self::Report => "report",
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: &'static str,
    pub measure: String,
    /// Side A (the numerator), e.g. "12,345 req/s (p50 0.5 ms, p99 1.2 ms)".
    pub a: String,
    /// Side B (the denominator).
    pub b: String,
    /// What the median/min/max columns summarise, with a unit where it is not a plain ratio.
    pub summary: Option<Summary>,
    pub unit: &'static str,
    pub cpu: String,
    pub target: String,
    pub verdict: Verdict,
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Renders `rows` as a Markdown table.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| # | measure | A | B | ratio median | min | max | pairs | CPU µs/request | target | verdict |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (median, min, max, pairs) = match r.summary {
            Some(s) => (
                format!("{}{}", number(s.median), r.unit),
                format!("{}{}", number(s.min), r.unit),
                format!("{}{}", number(s.max), r.unit),
                s.count.to_string(),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.id,
            cell(&r.measure),
            cell(&r.a),
            cell(&r.b),
            median,
            min,
            max,
            pairs,
            cell(&r.cpu),
            cell(&r.target),
            r.verdict.label()
        );
    }
    out
}

/// `12345.6` → `12,346`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round();
    let negative = rounded < 0.0;
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if negative { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;

    #[test]
    fn renders_one_line_per_row_with_summary_and_verdict() {
        let rows = vec![
            Row {
                id: "B2",
                measure: "check ÷ empty RPC".into(),
                a: "9,000 req/s".into(),
                b: "10,000 req/s".into(),
                summary: summarize(&[0.9, 0.95, 0.85, 0.92, 0.91]),
                unit: "",
                cpu: "A 50 | B 45".into(),
                target: "≥ 0.9".into(),
                verdict: Verdict::at_least(0.91, 0.9),
            },
            Row {
                id: "B1",
                measure: "in-process check".into(),
                a: "see divan".into(),
                b: String::new(),
                summary: None,
                unit: "",
                cpu: String::new(),
                target: "≤ 1 µs".into(),
                verdict: Verdict::Report,
            },
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[2],
            "| B2 | check ÷ empty RPC | 9,000 req/s | 10,000 req/s | 0.91 | 0.85 | 0.95 | 5 | A 50 \\| B 45 | ≥ 0.9 | met |"
        );
        assert!(lines[3].contains("| – | – | – | – |"));
        assert!(lines[3].ends_with("| report |"));
    }

    #[test]
    fn verdicts_compare_against_the_target() {
        assert_eq!(Verdict::at_least(5.0, 5.0), Verdict::Met);
        assert_eq!(Verdict::at_least(4.9, 5.0), Verdict::Missed);
        assert_eq!(Verdict::at_most(100.0, 100.0), Verdict::Met);
        assert_eq!(Verdict::at_most(101.0, 100.0), Verdict::Missed);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(thousands(-1234.0), "-1,234");
    }
}
