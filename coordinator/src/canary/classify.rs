//! One metric's classification: `pass`, `high`, `low` or `nodata`.
//!
//! For continuous samples, in this order:
//! 1. NaN and ±Inf values are removed (`nan: remove`, the default) or
//!    replaced with 0 (`nan: replace`), per group; `nan_handled` counts them.
//! 2. With `remove_outliers`, values outside `[Q1 − 3·IQR, Q3 + 3·IQR]` of
//!    their own group are removed (quartiles by linear interpolation, R's
//!    type 7 / NumPy's default); `outliers_removed` counts them.
//! 3. A group left empty → `nodata` (the score decides what that costs:
//!    excluded, or a failure with `must_have_data`).
//! 4. The same values on both sides (as multisets), or a single distinct
//!    value overall → `pass`.
//! 5. The test (`mann_whitney` by default, `welch` on request) at `alpha`,
//!    two-sided. The change is significant when the two-sided p-value is
//!    below `alpha`; its side is the side of the statistic (U above or below
//!    `m·n/2`, or the sign of the difference of means).
//! 6. The effect size is `canary_center / control_center` — medians for
//!    Mann–Whitney, means for Welch, rates for proportions — defined when
//!    the control's center is > 0. `high` needs direction `increase` or
//!    `either`, a significant increase and `effect ≥ allowed_increase`;
//!    `low` needs `decrease` or `either`, a significant decrease and
//!    `effect ≤ allowed_decrease`. An undefined effect size (control center
//!    0 or negative) counts as beyond any allowed or critical size, so a
//!    significant change from 0 is never waved through. Otherwise `pass`.
//! 7. A `high` with `effect ≥ critical_increase`, or a `low` with
//!    `effect ≤ critical_decrease`, sets `critical_effect`: the score is 0.
//!
//! Success rates ([`Samples::Proportion`]) skip 1–4 (no trials on a side →
//! `nodata`) and use Fisher's exact test when an expected cell count of the
//! 2×2 table is below 5 (Cochran's rule), the two-proportion z-test
//! otherwise; the interval is Newcombe's for the difference of rates.
//!
//! Differences from Kayenta's `MannWhitneyClassifier` (and why):
//! - Kayenta calls a change significant when its Hodges–Lehmann interval
//!   (confidence 0.95) lies beyond `±tolerance·|estimate|` (tolerance
//!   0.25); here the test's p-value at `alpha` decides, and the interval
//!   (confidence `1 − alpha`) is reported. For Mann–Whitney without ties
//!   and both samples under 50 the two agree exactly (p < alpha ⇔ the
//!   interval excludes 0); otherwise they can differ at the boundary by
//!   about one order statistic. The practical-size band is left to
//!   `allowed_increase`/`allowed_decrease`.
//! - Kayenta's effect size is the ratio of means for every metric (and 1.0
//!   when the control mean is 0, which lets a change from 0 pass); here it
//!   is the ratio of medians for Mann–Whitney (latency under a fault has a
//!   long tail of timeouts that dominates a mean, and the test is about
//!   ranks), of means for Welch, and undefined — hence never within the
//!   allowed size — when the control's center is not positive.
//! - Kayenta adds Gaussian noise when each side is a single distinct value;
//!   here the tie-corrected test handles that case without randomness.
//! - Kayenta treats an empty group with `nanStrategy: replace` as `pass`;
//!   here an empty group is always `nodata`.
//! - Kayenta's critical effect sizes apply to critical metrics only; here
//!   they apply to every metric (a non-critical metric can end the score
//!   at 0 by changing beyond them), as the experiment format documents.
//! - Welch's t-test and the proportion tests are additions (Kayenta judges
//!   every metric with Mann–Whitney).

use super::stats::{self, PValues};
use super::{Classification, Direction, JudgeConfig, MetricConfig, MetricResult, NanStrategy, Samples, Test};

/// Outliers lie beyond this many interquartile ranges from the quartiles
/// (Kayenta's `outlierFactor` default).
pub const OUTLIER_FACTOR: f64 = 3.0;

/// Classifies one metric (see the module docs for every step).
pub fn classify(config: &JudgeConfig, metric: &MetricConfig, samples: &Samples) -> MetricResult {
    let mut r = MetricResult {
        name: metric.name.clone(),
        classification: Classification::Nodata,
        direction: metric.direction,
        critical: metric.critical,
        weight: 0.0,
        test: "none".into(),
        canary_count: 0,
        control_count: 0,
        canary_center: None,
        control_center: None,
        effect_size: None,
        shift: None,
        interval: None,
        p_value: None,
        nan_handled: 0,
        outliers_removed: 0,
        reason: String::new(),
        critical_effect: false,
    };
    if !(config.alpha > 0.0 && config.alpha < 1.0) {
        r.reason = format!("alpha {} is not in (0, 1); nothing was tested", config.alpha);
        return r;
    }
    match samples {
        Samples::Continuous { canary, control } => continuous(config, metric, canary, control, &mut r),
        Samples::Proportion {
            canary_ok,
            canary_n,
            control_ok,
            control_n,
        } => proportion(
            config,
            metric,
            (*canary_ok, *canary_n),
            (*control_ok, *control_n),
            &mut r,
        ),
    }
    r
}

fn continuous(config: &JudgeConfig, metric: &MetricConfig, canary: &[f64], control: &[f64], r: &mut MetricResult) {
    let (mut canary, nan_x) = handle_nans(canary, metric.nan);
    let (mut control, nan_y) = handle_nans(control, metric.nan);
    r.nan_handled = nan_x + nan_y;
    if metric.remove_outliers {
        let ox = remove_outliers(&mut canary, OUTLIER_FACTOR);
        let oy = remove_outliers(&mut control, OUTLIER_FACTOR);
        r.outliers_removed = ox + oy;
    }
    r.canary_count = canary.len() as u64;
    r.control_count = control.len() as u64;
    if canary.is_empty() || control.is_empty() {
        let side = match (canary.is_empty(), control.is_empty()) {
            (true, true) => "either group",
            (true, false) => "the canary group",
            _ => "the control group",
        };
        r.reason = format!("no samples in {side}{}", handled_note(r));
        return;
    }
    canary.sort_by(f64::total_cmp);
    control.sort_by(f64::total_cmp);
    let alpha = config.alpha;
    match metric.test {
        Test::MannWhitney => {
            r.test = "mann_whitney".into();
            r.canary_center = Some(median(&canary));
            r.control_center = Some(median(&control));
        }
        Test::Welch => {
            r.test = "welch".into();
            r.canary_center = Some(mean(&canary));
            r.control_center = Some(mean(&control));
        }
    }
    r.effect_size = ratio(r.canary_center, r.control_center);
    if canary == control {
        r.classification = Classification::Pass;
        r.reason = format!("the canary and control samples are identical{}", handled_note(r));
        return;
    }
    if canary.first() == canary.last() && control.first() == control.last() && canary[0] == control[0] {
        r.classification = Classification::Pass;
        r.reason = format!("every sample has the same value {}{}", canary[0], handled_note(r));
        return;
    }
    // The side of the change follows the test statistic, so it agrees with
    // the p-value even when the shift estimate is 0 (heavy ties).
    let (p, side) = match metric.test {
        Test::MannWhitney => {
            let (mw, hl) = match (
                stats::mann_whitney(&canary, &control),
                stats::hodges_lehmann(&canary, &control, alpha),
            ) {
                (Ok(mw), Ok(hl)) => (mw, hl),
                (Err(e), _) | (_, Err(e)) => {
                    r.reason = format!("not tested: {e}");
                    return;
                }
            };
            r.shift = Some(hl.shift);
            r.interval = Some((hl.lower, hl.upper));
            let half = canary.len() as f64 * control.len() as f64 / 2.0;
            (mw.p, (mw.u - half).signum())
        }
        Test::Welch => {
            let w = match stats::welch(&canary, &control, alpha) {
                Ok(w) => w,
                Err(e) => {
                    r.reason = format!("not tested: {e}");
                    return;
                }
            };
            r.shift = Some(w.diff);
            r.interval = Some(w.interval);
            (w.p, w.diff.signum())
        }
    };
    decide(config, metric, p, side, r);
}

fn proportion(
    config: &JudgeConfig,
    metric: &MetricConfig,
    canary: (u64, u64),
    control: (u64, u64),
    r: &mut MetricResult,
) {
    let ((x_ok, x_n), (y_ok, y_n)) = (canary, control);
    r.canary_count = x_n;
    r.control_count = y_n;
    if x_ok > x_n || y_ok > y_n {
        r.reason = format!("invalid counts: canary {x_ok}/{x_n}, control {y_ok}/{y_n} (successes above trials)");
        return;
    }
    if x_n == 0 || y_n == 0 {
        let side = match (x_n == 0, y_n == 0) {
            (true, true) => "either group",
            (true, false) => "the canary group",
            _ => "the control group",
        };
        r.reason = format!("no trials in {side}");
        return;
    }
    let alpha = config.alpha;
    r.canary_center = Some(x_ok as f64 / x_n as f64);
    r.control_center = Some(y_ok as f64 / y_n as f64);
    r.effect_size = ratio(r.canary_center, r.control_center);
    let total = (x_n + y_n) as f64;
    let ok = (x_ok + y_ok) as f64;
    let min_expected = [x_n, y_n]
        .iter()
        .flat_map(|&n| [n as f64 * ok / total, n as f64 * (total - ok) / total])
        .fold(f64::INFINITY, f64::min);
    // The z-test also gives the Newcombe interval used for both tests.
    let z = match stats::two_proportion(x_ok, x_n, y_ok, y_n, alpha) {
        Ok(z) => z,
        Err(e) => {
            r.reason = format!("not tested: {e}");
            return;
        }
    };
    r.shift = Some(z.diff);
    r.interval = Some(z.interval);
    let p = if min_expected < 5.0 {
        r.test = "fisher_exact".into();
        match stats::fisher_exact(x_ok, x_n, y_ok, y_n) {
            Ok(f) => f.p,
            Err(e) => {
                r.reason = format!("not tested: {e}");
                return;
            }
        }
    } else {
        r.test = "two_proportion".into();
        z.p
    };
    decide(config, metric, p, z.diff.signum(), r);
}

/// Direction, significance and effect size → the classification.
fn decide(config: &JudgeConfig, metric: &MetricConfig, p: PValues, side: f64, r: &mut MetricResult) {
    let alpha = config.alpha;
    r.p_value = Some(p.two_sided);
    let significant = p.two_sided < alpha;
    let effect = r.effect_size;
    let watch_up = matches!(metric.direction, Direction::Increase | Direction::Either);
    let watch_down = matches!(metric.direction, Direction::Decrease | Direction::Either);
    // An undefined effect size is beyond every threshold.
    let at_least = |t: f64| effect.is_none_or(|e| e >= t);
    let at_most = |t: f64| effect.is_none_or(|e| e <= t);
    let effect_text = match effect {
        Some(e) => format!("×{e:.3}"),
        None => "an undefined ratio (control center not positive)".into(),
    };
    let centers = match (r.canary_center, r.control_center) {
        (Some(a), Some(b)) => format!(
            "canary {} {a:.6} vs control {b:.6} ({effect_text})",
            center_name(&r.test)
        ),
        _ => String::new(),
    };
    let p_text = format!(
        "p = {:.3e} {} alpha {alpha}",
        p.two_sided,
        if significant { "<" } else { "≥" }
    );
    if significant && side > 0.0 && watch_up && at_least(metric.allowed_increase) {
        r.classification = Classification::High;
        r.critical_effect = metric.critical_increase.is_some_and(at_least);
        r.reason = format!(
            "higher: {centers}, {p_text}, at or beyond the allowed ×{}{}",
            metric.allowed_increase,
            critical_note(r.critical_effect, metric.critical_increase)
        );
    } else if significant && side < 0.0 && watch_down && at_most(metric.allowed_decrease) {
        r.classification = Classification::Low;
        r.critical_effect = metric.critical_decrease.is_some_and(at_most);
        r.reason = format!(
            "lower: {centers}, {p_text}, at or beyond the allowed ×{}{}",
            metric.allowed_decrease,
            critical_note(r.critical_effect, metric.critical_decrease)
        );
    } else {
        r.classification = Classification::Pass;
        let why = if !significant {
            "no significant difference".to_string()
        } else if (side > 0.0 && !watch_up) || (side < 0.0 && !watch_down) {
            format!(
                "a significant {} in a direction that is not judged",
                if side > 0.0 { "increase" } else { "decrease" }
            )
        } else {
            "significant but within the allowed effect size".to_string()
        };
        r.reason = format!("{why}: {centers}, {p_text}");
    }
    r.reason.push_str(&handled_note(r));
}

fn center_name(test: &str) -> &'static str {
    match test {
        "mann_whitney" => "median",
        "welch" => "mean",
        _ => "rate",
    }
}

fn critical_note(hit: bool, threshold: Option<f64>) -> String {
    match (hit, threshold) {
        (true, Some(t)) => format!("; beyond the critical ×{t}: the score is 0"),
        _ => String::new(),
    }
}

fn handled_note(r: &MetricResult) -> String {
    let mut parts = Vec::new();
    if r.nan_handled > 0 {
        parts.push(format!("{} NaN/Inf samples handled", r.nan_handled));
    }
    if r.outliers_removed > 0 {
        parts.push(format!("{} outliers removed", r.outliers_removed));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn ratio(canary: Option<f64>, control: Option<f64>) -> Option<f64> {
    match (canary, control) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// Non-finite values removed or replaced with 0; returns how many.
pub fn handle_nans(v: &[f64], strategy: NanStrategy) -> (Vec<f64>, u64) {
    let bad = v.iter().filter(|x| !x.is_finite()).count() as u64;
    let out = match strategy {
        NanStrategy::Remove => v.iter().copied().filter(|x| x.is_finite()).collect(),
        NanStrategy::Replace => v.iter().map(|&x| if x.is_finite() { x } else { 0.0 }).collect(),
    };
    (out, bad)
}

/// Removes values beyond `factor` interquartile ranges from the quartiles;
/// returns how many.
pub fn remove_outliers(v: &mut Vec<f64>, factor: f64) -> u64 {
    if v.len() < 4 {
        return 0;
    }
    let mut s = v.clone();
    s.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&s, 0.25), quantile(&s, 0.75));
    let iqr = q3 - q1;
    let (lo, hi) = (q1 - factor * iqr, q3 + factor * iqr);
    let before = v.len();
    v.retain(|&x| x >= lo && x <= hi);
    (before - v.len()) as u64
}

/// Linear-interpolation quantile of an ascending, non-empty sample.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn median(sorted: &[f64]) -> f64 {
    quantile(sorted, 0.5)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
