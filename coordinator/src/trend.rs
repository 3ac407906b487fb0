//! Figures over time and their regressions: a game day's resilience score,
//! an experiment's p99 during the fault, its success rate during the fault,
//! its time to recovery.
//!
//! A point is a **regression** when
//! - its outcome fails (or aborts) where the previous judged run passed
//!   (for experiments), or
//! - its figure is worse than the median of the [`TRAILING`] points before
//!   it by more than the figure's [`Margin`] (both a ratio and an absolute
//!   floor, so that 1 ms → 2 ms is not a "100 % worse" alarm).
//!
//! Points without a figure (a run that never reached the fault) neither
//! count toward medians nor regress.

/// How many earlier points the trailing median is taken over.
pub const TRAILING: usize = 5;

/// Which way is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    Higher,
    Lower,
}

/// How far past the trailing median a figure must be to regress: by more
/// than `ratio` of the median and by more than `absolute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margin {
    pub worse: Worse,
    pub ratio: f64,
    pub absolute: f64,
}

impl Margin {
    /// Latencies and durations in ms: 25 % and at least 5 ms worse.
    pub const LATENCY_MS: Margin = Margin {
        worse: Worse::Higher,
        ratio: 0.25,
        absolute: 5.0,
    };
    /// Success rates in percent: 2 points lower.
    pub const SUCCESS_PERCENT: Margin = Margin {
        worse: Worse::Lower,
        ratio: 0.0,
        absolute: 2.0,
    };
    /// Resilience scores (0–100): 10 points lower.
    pub const SCORE: Margin = Margin {
        worse: Worse::Lower,
        ratio: 0.0,
        absolute: 10.0,
    };

    /// The margin in words, as pages and the CLI state it.
    pub fn describe(&self) -> String {
        let dir = match self.worse {
            Worse::Higher => "above",
            Worse::Lower => "below",
        };
        if self.ratio > 0.0 {
            format!(
                "more than {:.0}% and {} {dir} the median of the previous {TRAILING}",
                self.ratio * 100.0,
                trim(self.absolute)
            )
        } else {
            format!(
                "more than {} {dir} the median of the previous {TRAILING}",
                trim(self.absolute)
            )
        }
    }

    fn regressed(&self, value: f64, median: f64) -> bool {
        let delta = match self.worse {
            Worse::Higher => value - median,
            Worse::Lower => median - value,
        };
        delta > self.absolute && delta > self.ratio * median.abs()
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// One point of a figure's trend.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub value: Option<f64>,
    /// The median of up to [`TRAILING`] earlier values, when there is one.
    pub median_before: Option<f64>,
    pub regression: bool,
}

/// The trend of `values`, oldest first.
pub fn points(values: &[Option<f64>], margin: Margin) -> Vec<Point> {
    let mut out = Vec::with_capacity(values.len());
    let mut seen: Vec<f64> = Vec::new();
    for v in values {
        let tail = &seen[seen.len().saturating_sub(TRAILING)..];
        let median_before = median(tail);
        let regression = match (v, median_before) {
            (Some(v), Some(m)) => margin.regressed(*v, m),
            _ => false,
        };
        out.push(Point {
            value: *v,
            median_before,
            regression,
        });
        if let Some(v) = v.filter(|v| v.is_finite()) {
            seen.push(v);
        }
    }
    out
}

/// Which outcomes regress, oldest first: `failed` or `aborted` where the
/// previous judged run `passed`. Runs without a verdict on the hypothesis
/// (running, interrupted, invalid, not_steady, error) neither regress nor
/// reset the comparison.
pub fn outcome_regressions(outcomes: &[&str]) -> Vec<bool> {
    let mut prev: Option<&str> = None;
    outcomes
        .iter()
        .map(|o| {
            let judged = matches!(*o, "passed" | "failed" | "aborted");
            let r = judged && prev == Some("passed") && *o != "passed";
            if judged {
                prev = Some(o);
            }
            r
        })
        .collect()
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_worse_than_its_trailing_median_by_the_margin_regresses() {
        let p99 = [
            Some(100.0),
            Some(110.0),
            None,
            Some(90.0),
            Some(120.0),
            Some(200.0),
            Some(101.0),
        ];
        let t = points(&p99, Margin::LATENCY_MS);
        assert_eq!(t[0].median_before, None);
        assert!(!t[0].regression);
        // 120 vs median(100, 110, 90) = 100: 20 % worse, under the 25 % ratio.
        assert_eq!(t[4].median_before, Some(100.0));
        assert!(!t[4].regression);
        // 200 vs median(100, 110, 90, 120) = 105.
        assert_eq!(t[5].median_before, Some(105.0));
        assert!(t[5].regression);
        assert!(!t[6].regression);
        // Absolute floor: 1 ms → 3 ms is not a regression.
        assert!(!points(&[Some(1.0), Some(3.0)], Margin::LATENCY_MS)[1].regression);
    }

    #[test]
    fn lower_is_worse_for_success_rates_and_scores() {
        let t = points(&[Some(100.0), Some(100.0), Some(97.0)], Margin::SUCCESS_PERCENT);
        assert!(t[2].regression);
        let t = points(&[Some(80.0), Some(75.0), Some(95.0)], Margin::SCORE);
        assert!(!t[1].regression && !t[2].regression);
        let t = points(&[Some(80.0), Some(60.0)], Margin::SCORE);
        assert!(t[1].regression);
        assert!(Margin::SCORE
            .describe()
            .contains("more than 10 below the median of the previous 5"));
        assert!(Margin::LATENCY_MS.describe().contains("more than 25% and 5 above"));
    }

    #[test]
    fn a_pass_turning_into_a_failure_regresses_once() {
        assert_eq!(
            outcome_regressions(&["failed", "passed", "running", "failed", "failed", "passed", "error", "aborted"]),
            [false, false, false, true, false, false, false, true]
        );
    }
}
