//! Unit tests of the statistics with values derived by hand (each
//! derivation in a comment); the golden comparison with SciPy is in
//! `coordinator/tests/canary_scipy.rs`.

use super::*;

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300) || (a - b).abs() < 1e-300
}

macro_rules! assert_close {
    ($a:expr, $b:expr, $rel:expr) => {{
        let (a, b) = ($a, $b);
        assert!(
            close(a, b, $rel),
            "{} = {a:e}, expected {b:e} (relative tolerance {})",
            stringify!($a),
            $rel
        );
    }};
}

#[test]
fn erfc_and_normal_match_known_values() {
    // Tabulated erfc values (Abramowitz & Stegun 7.1; 16 digits).
    assert_close!(erfc(0.5), 0.479_500_122_186_953_5, 1e-14);
    assert_close!(erfc(1.0), 0.157_299_207_050_285_1, 1e-14);
    assert_close!(erfc(3.0), 2.209_049_699_858_544e-5, 1e-13);
    assert_close!(erfc(6.0), 2.151_973_671_249_891e-17, 1e-13);
    assert_close!(erfc(-1.0), 2.0 - 0.157_299_207_050_285_1, 1e-15);
    assert_eq!(normal_sf(0.0), 0.5);
    // z_{0.975} = 1.959963984540054.
    assert_close!(normal_sf(1.959_963_984_540_054), 0.025, 1e-13);
    assert_close!(normal_cdf(-1.959_963_984_540_054), 0.025, 1e-13);
    assert_close!(normal_isf(0.025), 1.959_963_984_540_054, 1e-13);
    assert_close!(normal_isf(0.5).abs() + 1.0, 1.0, 1e-15);
}

#[test]
fn ln_gamma_and_incomplete_beta_match_closed_forms() {
    assert_close!(ln_gamma(5.0), 24f64.ln(), 1e-14);
    assert_close!(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-13);
    assert_close!(ln_gamma(101.0), (1..=100).map(|k| (k as f64).ln()).sum::<f64>(), 1e-14);
    // I_x(1, 1) = x, I_x(2, 1) = x², I_x(1, 2) = 1 − (1 − x)².
    assert_close!(inc_beta(1.0, 1.0, 0.3, 0.7), 0.3, 1e-14);
    assert_close!(inc_beta(2.0, 1.0, 0.3, 0.7), 0.09, 1e-14);
    assert_close!(inc_beta(1.0, 2.0, 0.3, 0.7), 1.0 - 0.49, 1e-14);
}

#[test]
fn student_t_matches_closed_forms() {
    // df = 1 is Cauchy: P(T > t) = 1/2 − atan(t)/π.
    for t in [-3.0, -0.5, 0.0, 1.0, 12.7] {
        let want = 0.5 - f64::atan(t) / std::f64::consts::PI;
        assert_close!(student_t_sf(t, 1.0), want, 1e-13);
    }
    // df = 2: P(T > t) = 1/2 − t / (2√(t² + 2)).
    for t in [0.3, 2.0, 10.0] {
        let want = 0.5 - t / (2.0 * (t * t + 2.0f64).sqrt());
        assert_close!(student_t_sf(t, 2.0), want, 1e-12);
    }
    // The 97.5 % point of Cauchy is tan(0.475π) = 12.706204736174698.
    assert_close!(student_t_isf(0.025, 1.0), 12.706_204_736_174_698, 1e-12);
    // Large df tends to the normal.
    assert_close!(student_t_sf(1.959_963_984_540_054, 1e7), 0.025, 1e-5);
}

#[test]
fn exact_u_distribution_is_the_gaussian_binomial() {
    // U for m = n = 2 takes 0..4 with counts 1,1,2,1,1 (6 = C(4,2) orders).
    assert_eq!(exact_counts(2, 2).unwrap(), vec![1, 1, 2, 1, 1]);
    // [6 choose 3]_q = 1 + q + 2q² + 3q³ + 3q⁴ + 3q⁵ + 3q⁶ + 2q⁷ + q⁸ + q⁹.
    assert_eq!(exact_counts(3, 3).unwrap(), vec![1, 1, 2, 3, 3, 3, 3, 2, 1, 1]);
    // Symmetric in m and n; totals C(m+n, m).
    assert_eq!(exact_counts(2, 5), exact_counts(5, 2));
    let c = exact_counts(8, 40).unwrap();
    assert_eq!(c.iter().sum::<i128>(), 377_348_994); // C(48, 8)
    assert_eq!(c.len(), 321);
    assert!(c.iter().all(|&v| v > 0));
    // Far beyond the table limit: not computed.
    assert!(exact_counts(8, 1_000_000).is_none());
}

#[test]
fn mann_whitney_exact_without_ties() {
    // Every canary value below every control value: U = 0, and that order
    // is 1 of C(6,3) = 20 equally likely ones, so P(U ≤ 0) = 0.05.
    let r = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
    assert_eq!(r.u, 0.0);
    assert_eq!(r.method, Method::Exact);
    assert!(!r.ties);
    assert_close!(r.p.less, 0.05, 1e-15);
    assert_close!(r.p.two_sided, 0.1, 1e-15);
    assert_eq!(r.p.greater, 1.0);
    // Mirror: canary above the control.
    let r = mann_whitney(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(r.u, 9.0);
    assert_close!(r.p.greater, 0.05, 1e-15);
    // U = 2 for m = n = 3: P(U ≥ 7) = P(U ≤ 2) = 4/20.
    let r = mann_whitney(&[1.0, 2.0, 5.0], &[3.0, 4.0, 6.0]).unwrap();
    assert_eq!(r.u, 2.0);
    assert_close!(r.p.less, 4.0 / 20.0, 1e-15);
    assert_close!(r.p.two_sided, 8.0 / 20.0, 1e-15);
}

#[test]
fn mann_whitney_normal_approximation_with_ties() {
    // x = [1, 2, 2], y = [2, 3]: the three 2s share rank 3, so
    // R1 = 1 + 3 + 3 = 7 and U1 = 7 − 6 = 1, U2 = 5. Tie term 3³ − 3 = 24,
    // σ = √(6/12 · (6 − 24/20)) = √2.4. Two-sided z = (5 − 3 − 0.5)/√2.4
    // = 0.968245837; SciPy gives 0.3329216080655659 (Φ tables agree).
    let r = mann_whitney(&[1.0, 2.0, 2.0], &[2.0, 3.0]).unwrap();
    assert_eq!(r.u, 1.0);
    assert!(r.ties);
    assert_eq!(r.method, Method::Asymptotic);
    assert_close!(r.p.two_sided, 0.332_921_608_065_565_9, 1e-12);
    assert_close!(r.p.less, 0.166_460_804_032_782_96, 1e-12);
    assert_close!(r.p.greater, 0.946_708_415_212_556_2, 1e-12);
    // All values equal: no evidence either way.
    let r = mann_whitney(&[1.0; 20], &[1.0; 30]).unwrap();
    assert_eq!(r.p.two_sided, 1.0);
    assert_eq!(r.u, 300.0);
}

#[test]
fn mann_whitney_rejects_bad_input() {
    assert_eq!(mann_whitney(&[], &[1.0]), Err(Error::Empty("canary")));
    assert_eq!(mann_whitney(&[1.0], &[f64::NAN]), Err(Error::NotFinite("control")));
}

/// All m·n differences, sorted (the brute force the selection replaces).
fn brute_differences(x: &[f64], y: &[f64]) -> Vec<f64> {
    let mut d: Vec<f64> = x.iter().flat_map(|a| y.iter().map(move |b| a - b)).collect();
    d.sort_by(f64::total_cmp);
    d
}

#[test]
fn kth_difference_matches_brute_force_with_ties_and_signs() {
    // A small deterministic generator (SplitMix64) with heavy ties.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for case in 0..200 {
        let m = 1 + (next() % 12) as usize;
        let n = 1 + (next() % 12) as usize;
        let levels = if case % 2 == 0 { 5 } else { 1_000_000 };
        let mut gen = |len: usize| -> Vec<f64> {
            (0..len)
                .map(|_| ((next() % levels) as f64 - levels as f64 / 2.0) * 0.37)
                .collect()
        };
        let x = gen(m);
        let y = gen(n);
        let d = brute_differences(&x, &y);
        let (xs, ys) = (sorted(&x), sorted(&y));
        let cells = d.len() as u64;
        for k in 1..=cells {
            assert_eq!(
                kth_difference(&xs, &ys, k),
                d[(k - 1) as usize],
                "case {case}, k {k}, x {x:?}, y {y:?}"
            );
            // Pure bisection (no listing) and a small listing limit, for
            // single ranks and adjacent pairs (the median's).
            for limit in [0, 3] {
                let k2 = (k + 1).min(cells);
                let got = kth_differences(&xs, &ys, k, k2, limit);
                let want: Vec<f64> = (k..=k2).map(|r| d[(r - 1) as usize]).collect();
                assert_eq!(
                    got, want,
                    "case {case}, ranks {k}..={k2}, limit {limit}, x {x:?}, y {y:?}"
                );
            }
        }
    }
}

#[test]
fn hodges_lehmann_shift_and_exact_interval() {
    // Differences of [1, 5] − [0, 2] are 1, −1, 5, 3: median (1 + 3)/2 = 2.
    let r = hodges_lehmann(&[1.0, 5.0], &[0.0, 2.0], 0.05).unwrap();
    assert_eq!(r.shift, 2.0);
    // m = n = 5, alpha = 0.05: the U counts start 1, 1, 2, 3 out of
    // C(10,5) = 252, so P(U ≤ 2) = 4/252 < 0.025 ≤ P(U ≤ 3) = 7/252 and
    // k = 3 (the tabulated two-sided 5 % critical U of 2, plus one); the
    // interval is [d_(3), d_(23)] with confidence 1 − 8/252.
    let x = [10.0, 11.0, 12.0, 13.0, 14.0];
    let y = [0.5, 1.5, 2.5, 3.5, 4.5];
    let r = hodges_lehmann(&x, &y, 0.05).unwrap();
    assert!(r.exact);
    assert_eq!(r.k, 3);
    let d = brute_differences(&x, &y);
    assert_eq!((r.lower, r.upper), (d[2], d[22]));
    assert_eq!(r.shift, d[12]);
    assert_close!(r.achieved_confidence, 1.0 - 8.0 / 252.0, 1e-14);
    // Too few values to reach 95 %: k = 1, the whole range, and the
    // achieved confidence says so (1 − 2/20 for 3 against 3).
    let r = hodges_lehmann(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.5], 0.05).unwrap();
    assert_eq!(r.k, 1);
    assert_eq!((r.lower, r.upper), (-5.5, -1.0));
    assert_close!(r.achieved_confidence, 0.9, 1e-14);
}

#[test]
fn hodges_lehmann_normal_critical_value_for_large_samples() {
    // m = n = 100: mn/2 = 5000, σ = √(10⁴ · 201/12) = 409.2676, so
    // k = ⌊5000.5 − 1.959964 · 409.2676⌋ = ⌊4198.35⌋ = 4198.
    let x: Vec<f64> = (0..100).map(|i| i as f64).collect();
    let y: Vec<f64> = (0..100).map(|i| i as f64 + 0.25).collect();
    let r = hodges_lehmann(&x, &y, 0.05).unwrap();
    assert!(!r.exact);
    assert_eq!(r.k, 4198);
    let d = brute_differences(&x, &y);
    assert_eq!((r.lower, r.upper), (d[4197], d[10_000 - 4198]));
    assert_eq!(r.shift, (d[4999] + d[5000]) / 2.0);
    assert!(r.achieved_confidence >= 0.95);
}

#[test]
fn hodges_lehmann_exact_and_normal_critical_values_agree_near_the_switch() {
    // At 49 against 49 both ways of finding k are available; the normal
    // one (with its continuity correction) is off by at most one.
    let x: Vec<f64> = (0..49).map(|i| i as f64 * 1.001).collect();
    let y: Vec<f64> = (0..49).map(|i| i as f64 * 0.999 + 0.5).collect();
    let exact = hodges_lehmann(&x, &y, 0.05).unwrap();
    assert!(exact.exact);
    let mnf = 49.0 * 49.0;
    let sigma = (mnf * 99.0 / 12.0f64).sqrt();
    let k_normal = (mnf / 2.0 + 0.5 - normal_isf(0.025) * sigma).floor() as u64;
    assert!(exact.k.abs_diff(k_normal) <= 1, "exact {} normal {k_normal}", exact.k);
}

#[test]
fn welch_matches_hand_computation() {
    // x = 1..4: mean 2.5, s² = 5/3; y = 2,4,6,8: mean 5, s² = 20/3.
    // se² = 5/12 + 20/12 = 25/12, t = −2.5/√(25/12) = −√3,
    // df = (25/12)² / ((5/12)²/3 + (20/12)²/3) = 625/(425/3)·(1/1) = 75/17.
    let r = welch(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0, 8.0], 0.05).unwrap();
    assert_close!(r.t, -(3f64.sqrt()), 1e-14);
    assert_close!(r.df, 75.0 / 17.0, 1e-14);
    assert_eq!(r.diff, -2.5);
    // SciPy: ttest_ind(..., equal_var=False) p = 0.15158050484530383.
    assert_close!(r.p.two_sided, 0.151_580_504_845_303_83, 1e-10);
    assert_close!(r.p.less, 0.075_790_252_422_651_92, 1e-10);
    assert_close!(r.p.greater, 1.0 - 0.075_790_252_422_651_92, 1e-10);
    // t quantile 2.67717357846562 at df 75/17 (SciPy t.ppf(0.975, df)).
    let half = 2.677_173_578_465_62 * (25.0f64 / 12.0).sqrt();
    assert_close!(r.interval.0, -2.5 - half, 1e-9);
    assert_close!(r.interval.1, -2.5 + half, 1e-9);
    assert_eq!(welch(&[1.0], &[1.0, 2.0], 0.05), Err(Error::TooFew("canary", 1)));
    // Constant samples: the difference is certain.
    let r = welch(&[2.0, 2.0], &[1.0, 1.0, 1.0], 0.05).unwrap();
    assert_eq!(
        (r.t, r.p.two_sided, r.p.greater, r.p.less),
        (f64::INFINITY, 0.0, 0.0, 1.0)
    );
}

#[test]
fn two_proportion_matches_hand_computation() {
    // 45/50 against 40/50: pooled 0.85, se = √(0.85 · 0.15 · 0.04)
    // = √0.0051, z = 0.1/√0.0051 = 1.40028008; two-sided p = 2·Φ(−z)
    // = 0.16142946 (normal tables).
    let r = two_proportion(45, 50, 40, 50, 0.05).unwrap();
    assert_close!(r.z, 0.1 / 0.0051f64.sqrt(), 1e-14);
    assert_close!(r.p.two_sided, 0.161_429_462_367_083_22, 1e-10);
    assert_close!(r.p.greater, 0.080_714_731_183_541_61, 1e-10);
    assert_close!(r.diff, 0.1, 1e-14);
    assert!(r.interval.0 < 0.0 && r.interval.1 > 0.1);
    // Newcombe's interval at 100/100 vs 100/100 is not degenerate.
    let r = two_proportion(100, 100, 100, 100, 0.05).unwrap();
    assert_eq!(r.p.two_sided, 1.0);
    assert!(r.interval.0 < 0.0 && r.interval.1 > 0.0);
    assert!(two_proportion(3, 2, 1, 1, 0.05).is_err());
    assert!(two_proportion(0, 0, 1, 1, 0.05).is_err());
}

#[test]
fn fisher_matches_the_tea_tasting_table() {
    // [[3, 1], [1, 3]]: X ~ Hypergeometric(8, 4, 4) with pmf
    // (1, 16, 36, 16, 1)/70 on 0..4. P(X ≥ 3) = 17/70, P(X ≤ 3) = 69/70,
    // two-sided = tables no likelier than 16/70 = (1+16+16+1)/70.
    let r = fisher_exact(3, 4, 1, 4).unwrap();
    assert_close!(r.p.greater, 17.0 / 70.0, 1e-14);
    assert_close!(r.p.less, 69.0 / 70.0, 1e-14);
    assert_close!(r.p.two_sided, 34.0 / 70.0, 1e-14);
    assert_eq!(r.odds_ratio, 9.0);
    // All successes on both sides: one possible table.
    let r = fisher_exact(5, 5, 7, 7).unwrap();
    assert_eq!(r.p.two_sided, 1.0);
    assert!(r.odds_ratio.is_nan());
    // 9/10 against 10/10: one failure in all, so X is 9 or 10 with
    // C(19,9)·C(1,1)/C(20,10) = 1/2 each (a table where the failures are
    // fewer than the canary's trials).
    let r = fisher_exact(9, 10, 10, 10).unwrap();
    assert_close!(r.p.less, 0.5, 1e-14);
    assert_eq!((r.p.greater, r.p.two_sided), (1.0, 1.0));
    // 0/10 against 10/10: P(X = 0) = 1/C(20,10) = 1/184756.
    let r = fisher_exact(0, 10, 10, 10).unwrap();
    assert_close!(r.p.less, 1.0 / 184_756.0, 1e-12);
    assert_close!(r.p.two_sided, 2.0 / 184_756.0, 1e-12);
}

#[test]
fn alpha_is_checked() {
    assert_eq!(hodges_lehmann(&[1.0], &[2.0], 1.0), Err(Error::Alpha(1.0)));
    assert_eq!(welch(&[1.0, 2.0], &[2.0, 3.0], 0.0), Err(Error::Alpha(0.0)));
}

#[test]
fn signed_zeros_select_like_zero() {
    // −0.0 − 0.0 = −0.0: the zero difference is found, reported as +0.0,
    // and −0.0 inputs do not upset the search.
    let x = sorted(&[-0.0, 1.0, -0.0]);
    let y = sorted(&[0.0, 2.0, -0.0]);
    let d = brute_differences(&x, &y);
    for k in 1..=d.len() as u64 {
        let v = kth_difference(&x, &y, k);
        assert_eq!(v, d[(k - 1) as usize], "k {k}");
        assert!(v != 0.0 || v.is_sign_positive(), "k {k}: −0.0");
    }
    let r = hodges_lehmann(&[-0.0, 1.0], &[0.0, 2.0], 0.05).unwrap();
    // Differences −2, −1, −0, 1: median (−1 + 0)/2.
    assert_eq!(r.shift, -0.5);
}
