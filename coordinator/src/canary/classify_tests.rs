//! Unit tests of the classification, with the reasoning for each expected
//! class in a comment.

use super::*;
use crate::canary::stats;

fn cont(canary: Vec<f64>, control: Vec<f64>) -> Samples {
    Samples::Continuous { canary, control }
}

fn run(m: &MetricConfig, s: &Samples) -> MetricResult {
    classify(&JudgeConfig::default(), m, s)
}

fn range(from: i32, to: i32) -> Vec<f64> {
    (from..=to).map(f64::from).collect()
}

#[test]
fn nans_are_removed_or_replaced_and_counted() {
    let (v, n) = handle_nans(&[1.0, f64::NAN, f64::INFINITY, 2.0], NanStrategy::Remove);
    assert_eq!((v, n), (vec![1.0, 2.0], 2));
    let (v, n) = handle_nans(&[1.0, f64::NAN, f64::NEG_INFINITY], NanStrategy::Replace);
    assert_eq!((v, n), (vec![1.0, 0.0, 0.0], 2));
    let mut m = MetricConfig::new("x");
    m.nan = NanStrategy::Remove;
    let r = run(&m, &cont(vec![f64::NAN, 1.0], vec![f64::NAN, 1.0, f64::NAN]));
    assert_eq!(r.nan_handled, 3);
    assert_eq!((r.canary_count, r.control_count), (1, 1));
    assert_eq!(r.classification, Classification::Pass);
    assert!(r.reason.contains("3 NaN/Inf samples handled"), "{}", r.reason);
}

#[test]
fn outliers_beyond_three_iqr_are_removed() {
    // [1, 2, 3, 4, 100]: Q1 = 2, Q3 = 4 (type 7), IQR 2, fences −4 and 10.
    let mut v = vec![1.0, 2.0, 3.0, 4.0, 100.0];
    assert_eq!(remove_outliers(&mut v, 3.0), 1);
    assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0]);
    // 10 is on the fence and stays.
    let mut v = vec![1.0, 2.0, 3.0, 4.0, 10.0];
    assert_eq!(remove_outliers(&mut v, 3.0), 0);
    assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
}

#[test]
fn outlier_removal_changes_the_verdict_only_when_asked() {
    // Same bulk on both sides; the canary has one huge value. With
    // outliers kept, MW still sees no shift; the count is what changes.
    let control = range(1, 30);
    let mut canary = range(1, 29);
    canary.push(1e9);
    let mut m = MetricConfig::new("latency");
    m.remove_outliers = true;
    let r = run(&m, &cont(canary.clone(), control.clone()));
    assert_eq!(r.outliers_removed, 1);
    assert_eq!(r.canary_count, 29);
    assert_eq!(r.classification, Classification::Pass);
    m.remove_outliers = false;
    let r = run(&m, &cont(canary, control));
    assert_eq!(r.outliers_removed, 0);
    assert_eq!(r.canary_count, 30);
}

#[test]
fn empty_group_is_nodata() {
    let r = run(&MetricConfig::new("x"), &cont(vec![], vec![1.0]));
    assert_eq!(r.classification, Classification::Nodata);
    assert!(r.reason.contains("the canary group"), "{}", r.reason);
    // All NaN and removed: empty too.
    let r = run(&MetricConfig::new("x"), &cont(vec![1.0], vec![f64::NAN]));
    assert_eq!(r.classification, Classification::Nodata);
    assert!(r.reason.contains("control"), "{}", r.reason);
}

#[test]
fn identical_or_constant_samples_pass() {
    let r = run(&MetricConfig::new("x"), &cont(vec![3.0, 1.0, 2.0], vec![1.0, 2.0, 3.0]));
    assert_eq!(r.classification, Classification::Pass);
    assert!(r.reason.contains("identical"));
    let r = run(&MetricConfig::new("x"), &cont(vec![5.0; 4], vec![5.0; 9]));
    assert_eq!(r.classification, Classification::Pass);
    assert!(r.reason.contains("same value"));
}

#[test]
fn clear_increase_is_high_with_median_ratio() {
    // Every canary value above every control value, 20 against 20:
    // U = 400, z = (400 − 200 − 0.5)/√(400·41/12) = 5.397, p ≈ 7e-8.
    // Medians 110.5 and 10.5.
    let r = run(&MetricConfig::new("latency"), &cont(range(101, 120), range(1, 20)));
    assert_eq!(r.classification, Classification::High);
    assert_eq!(r.test, "mann_whitney");
    assert_eq!(r.canary_center, Some(110.5));
    assert_eq!(r.control_center, Some(10.5));
    assert_eq!(r.effect_size, Some(110.5 / 10.5));
    assert_eq!(r.shift, Some(100.0));
    let (lo, hi) = r.interval.unwrap();
    assert!(lo > 0.0 && lo <= 100.0 && hi >= 100.0);
    assert!(r.p_value.unwrap() < 1e-6);
    assert!(!r.critical_effect);
}

#[test]
fn direction_decides_which_side_counts() {
    let up = cont(range(101, 120), range(1, 20));
    let down = cont(range(1, 20), range(101, 120));
    let mut m = MetricConfig::new("success");
    m.direction = Direction::Decrease;
    let r = run(&m, &up);
    assert_eq!(r.classification, Classification::Pass);
    assert!(r.reason.contains("not judged"), "{}", r.reason);
    assert_eq!(run(&m, &down).classification, Classification::Low);
    m.direction = Direction::Either;
    assert_eq!(run(&m, &up).classification, Classification::High);
    assert_eq!(run(&m, &down).classification, Classification::Low);
    m.direction = Direction::Increase;
    assert_eq!(run(&m, &down).classification, Classification::Pass);
}

#[test]
fn allowed_effect_size_waves_small_changes_through() {
    // Medians 110.5/10.5 = ×10.52: high below an allowed ×10, pass above ×11.
    let s = cont(range(101, 120), range(1, 20));
    let mut m = MetricConfig::new("latency");
    m.allowed_increase = 10.0;
    assert_eq!(run(&m, &s).classification, Classification::High);
    m.allowed_increase = 11.0;
    let r = run(&m, &s);
    assert_eq!(r.classification, Classification::Pass);
    assert!(r.reason.contains("within the allowed"), "{}", r.reason);
    // Low: 10.5/110.5 = ×0.095; allowed decrease ×0.5 → low, ×0.05 → pass.
    let s = cont(range(1, 20), range(101, 120));
    m.direction = Direction::Decrease;
    m.allowed_decrease = 0.5;
    assert_eq!(run(&m, &s).classification, Classification::Low);
    m.allowed_decrease = 0.05;
    assert_eq!(run(&m, &s).classification, Classification::Pass);
}

#[test]
fn critical_effect_size_is_flagged() {
    let s = cont(range(101, 120), range(1, 20));
    let mut m = MetricConfig::new("latency");
    m.critical_increase = Some(5.0);
    let r = run(&m, &s);
    assert!(r.critical_effect);
    assert!(r.reason.contains("critical"), "{}", r.reason);
    m.critical_increase = Some(20.0);
    assert!(!run(&m, &s).critical_effect);
}

#[test]
fn a_change_from_zero_is_beyond_any_allowed_size() {
    // Control all 0 (median 0): the ratio is undefined, so even an allowed
    // ×100 does not excuse a significant increase.
    let mut m = MetricConfig::new("errors");
    m.allowed_increase = 100.0;
    let r = run(&m, &cont(range(1, 20), vec![0.0; 20]));
    assert_eq!(r.effect_size, None);
    assert_eq!(r.classification, Classification::High);
}

#[test]
fn no_significant_difference_passes() {
    // Interleaved samples: U = 1·… close to mn/2.
    let control: Vec<f64> = (0..20).map(|i| (2 * i) as f64).collect();
    let canary: Vec<f64> = (0..20).map(|i| (2 * i + 1) as f64).collect();
    let r = run(&MetricConfig::new("latency"), &cont(canary, control));
    assert_eq!(r.classification, Classification::Pass);
    assert!(r.p_value.unwrap() > 0.5);
    assert!(r.reason.starts_with("no significant difference"), "{}", r.reason);
}

#[test]
fn welch_uses_means() {
    // Means 11.5 and 2.5, equal variances 5/3: t = 9/√(10/12) = 9.859,
    // df = 6: p ≈ 6e-5.
    let mut m = MetricConfig::new("throughput");
    m.test = Test::Welch;
    let r = run(&m, &cont(vec![10.0, 11.0, 12.0, 13.0], vec![1.0, 2.0, 3.0, 4.0]));
    assert_eq!(r.test, "welch");
    assert_eq!(r.classification, Classification::High);
    assert_eq!(r.effect_size, Some(11.5 / 2.5));
    assert_eq!(r.shift, Some(9.0));
    // One value on a side: no variance, not tested.
    let r = run(&m, &cont(vec![10.0], vec![1.0, 2.0]));
    assert_eq!(r.classification, Classification::Nodata);
    assert!(r.reason.contains("at least 2"), "{}", r.reason);
}

#[test]
fn success_rates_use_fisher_for_small_counts_and_z_otherwise() {
    let mut m = MetricConfig::new("success rate");
    m.direction = Direction::Decrease;
    // 0/5 against 5/5: expected cells 2.5 < 5 → Fisher, p = 2/C(10,5) = 2/252.
    let r = run(
        &m,
        &Samples::Proportion {
            canary_ok: 0,
            canary_n: 5,
            control_ok: 5,
            control_n: 5,
        },
    );
    assert_eq!(r.test, "fisher_exact");
    assert_eq!(r.classification, Classification::Low);
    assert!((r.p_value.unwrap() - 2.0 / 252.0).abs() < 1e-14);
    assert_eq!(r.effect_size, Some(0.0));
    // 50/100 against 95/100: z-test, clearly lower.
    let r = run(
        &m,
        &Samples::Proportion {
            canary_ok: 50,
            canary_n: 100,
            control_ok: 95,
            control_n: 100,
        },
    );
    assert_eq!(r.test, "two_proportion");
    assert_eq!(r.classification, Classification::Low);
    assert_eq!(r.shift, Some(50.0 / 100.0 - 95.0 / 100.0));
    // 94/100 against 95/100: pass.
    let r = run(
        &m,
        &Samples::Proportion {
            canary_ok: 94,
            canary_n: 100,
            control_ok: 95,
            control_n: 100,
        },
    );
    assert_eq!(r.classification, Classification::Pass);
    // No trials: nodata; impossible counts: nodata with the reason.
    let r = run(
        &m,
        &Samples::Proportion {
            canary_ok: 0,
            canary_n: 0,
            control_ok: 1,
            control_n: 1,
        },
    );
    assert_eq!(r.classification, Classification::Nodata);
    let r = run(
        &m,
        &Samples::Proportion {
            canary_ok: 3,
            canary_n: 1,
            control_ok: 1,
            control_n: 1,
        },
    );
    assert_eq!(r.classification, Classification::Nodata);
    assert!(r.reason.contains("invalid"), "{}", r.reason);
}

#[test]
fn exact_mann_whitney_significance_equals_interval_excluding_zero() {
    // Without ties and under 50 per group, p < alpha exactly when the
    // Hodges–Lehmann interval excludes 0 (module docs); checked over
    // shifted samples 5..12 per side where the test is exact.
    let mut checked = 0;
    for n in 5..=8usize {
        for shift in 0..12 {
            let control: Vec<f64> = (0..n).map(|i| i as f64 * 1.37).collect();
            let canary: Vec<f64> = (0..n).map(|i| i as f64 * 1.41 + shift as f64 * 0.61 + 0.013).collect();
            let mw = stats::mann_whitney(&canary, &control).unwrap();
            let hl = stats::hodges_lehmann(&canary, &control, 0.05).unwrap();
            assert!(hl.exact && mw.method == stats::Method::Exact);
            let excludes = hl.lower > 0.0 || hl.upper < 0.0;
            assert_eq!(
                mw.p.two_sided < 0.05,
                excludes,
                "n {n} shift {shift}: p {} interval {:?}",
                mw.p.two_sided,
                (hl.lower, hl.upper)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 48);
}

#[test]
fn bad_alpha_is_nodata_with_reason() {
    let c = JudgeConfig {
        alpha: 1.5,
        ..JudgeConfig::default()
    };
    let r = classify(&c, &MetricConfig::new("x"), &cont(vec![1.0], vec![2.0]));
    assert_eq!(r.classification, Classification::Nodata);
    assert!(r.reason.contains("alpha"));
}
