//! Test statistics for the canary judge, written from the textbooks so the
//! judge needs no numerics crate and every number can be checked against
//! SciPy (`coordinator/tests/canary_scipy.rs` does, to the tolerances it
//! states).
//!
//! Conventions: `x` is the canary, `y` the control. "greater" means the
//! canary tends to be larger (SciPy's `alternative='greater'` with `x`
//! first); every test returns all three p-values so the classifier can pick
//! the side its direction asks for.
//!
//! - [`mann_whitney`]: the Mann–Whitney U statistic of `x` (average ranks
//!   for ties) and its p-values exactly as `scipy.stats.mannwhitneyu(x, y,
//!   method='auto')` computes them: the exact null distribution when there
//!   are no ties and one sample has at most 8 values, otherwise the normal
//!   approximation with the tie-corrected variance and a continuity
//!   correction of 0.5. One difference: SciPy computes the exact
//!   distribution for any size of the other sample; here it is computed
//!   when `m·n ≤ 1,000,000` and `C(m+n, m) < 10^37` (an 8-value sample
//!   against up to 125,000), and the normal approximation is used beyond.
//! - [`hodges_lehmann`]: the Hodges–Lehmann shift (median of the `m·n`
//!   differences `x_i − y_j`) and its distribution-free confidence interval
//!   from the order statistics of those differences (Bauer 1972; the one
//!   R's `wilcox.test(conf.int = TRUE)` computes in its exact case):
//!   `[d_(k), d_(mn−k+1)]`, where `k` is the smallest `q` with
//!   `P(U ≤ q) ≥ α/2` under the exact null distribution (at least 1), when
//!   both samples have fewer than 50 values and there are no ties (R's
//!   rule); otherwise `k = ⌊mn/2 + 1/2 − z_{1−α/2}·σ⌋` (at least 1) with
//!   `σ = √(mn(m+n+1)/12)`, the normal approximation of the same count with
//!   a continuity correction. Difference from R: R's asymptotic interval
//!   solves for the shift with a root finder on the tie-corrected statistic
//!   (tolerance 1e-4); this one stays an order statistic (no tie
//!   correction, so with ties it is a little wider). The `m·n` differences
//!   are never stored: the k-th smallest is found by bisecting the `f64`
//!   bit patterns between the smallest and largest difference (midpoints
//!   in value for the first 48 probes, in bit pattern after, so at most 112
//!   probes), counting the pairs `x_i − y_j ≤ d` with two pointers over the
//!   sorted samples (O(m + n) per probe) until at most `2(m + n)`
//!   differences remain in the bracket, which are then listed and sorted.
//!   It returns exactly the k-th smallest floating-point difference.
//! - [`welch`]: Welch's t-test (`scipy.stats.ttest_ind(x, y,
//!   equal_var=False)`) with the Welch–Satterthwaite degrees of freedom, a
//!   Student-t distribution from the regularized incomplete beta function,
//!   and the `1 − α` interval of the difference of means.
//! - [`two_proportion`]: the pooled two-proportion z-test (no continuity
//!   correction; statsmodels' `proportions_ztest` default) with Newcombe's
//!   hybrid score interval (method 10) for the difference of rates.
//! - [`fisher_exact`]: Fisher's exact test on the 2×2 table
//!   `[[x_ok, x_fail], [y_ok, y_fail]]` as `scipy.stats.fisher_exact`:
//!   one-sided p-values are hypergeometric tails; the two-sided p-value
//!   sums every table no more likely than the observed one (relative
//!   tolerance 1e-7, R's; SciPy uses 1e-14).
//!
//! The special functions (`erfc`, the normal and Student-t distributions,
//! `ln Γ`, the incomplete beta) are in `special.rs`, re-exported here; the
//! selection of the k-th pairwise difference is in `selection.rs`.

use thiserror::Error;

use super::selection::{kth_difference, kth_differences};
use super::special::ln_choose;
pub use super::special::{erfc, inc_beta, ln_gamma, normal_cdf, normal_isf, normal_sf, student_t_isf, student_t_sf};

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Error {
    #[error("the {0} sample is empty")]
    Empty(&'static str),
    #[error("the {0} sample holds a NaN or infinite value; remove or replace them first")]
    NotFinite(&'static str),
    #[error("the {0} sample needs at least 2 values for a variance, it has {1}")]
    TooFew(&'static str, usize),
    #[error("{ok} successes out of {n} trials in the {which} group: successes must not exceed trials and trials must be > 0")]
    Counts { which: &'static str, ok: u64, n: u64 },
    #[error("alpha {0} is not in (0, 1)")]
    Alpha(f64),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The p-values of one test for each alternative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PValues {
    /// The canary differs from the control.
    pub two_sided: f64,
    /// The canary is larger (stochastically, in mean or in rate).
    pub greater: f64,
    /// The canary is smaller.
    pub less: f64,
}

/// How a Mann–Whitney p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Exact,
    Asymptotic,
}

/// A Mann–Whitney U test.
#[derive(Debug, Clone, PartialEq)]
pub struct MannWhitney {
    /// U of the canary: the number of pairs with `x_i > y_j`, ties
    /// counting one half (SciPy's `statistic`).
    pub u: f64,
    pub n_x: usize,
    pub n_y: usize,
    /// Whether any value occurs more than once in the pooled sample.
    pub ties: bool,
    pub method: Method,
    pub p: PValues,
}

/// A Hodges–Lehmann shift and its confidence interval.
#[derive(Debug, Clone, PartialEq)]
pub struct HodgesLehmann {
    /// Median of the differences `x_i − y_j` (mean of the two middle ones
    /// when `m·n` is even).
    pub shift: f64,
    /// `d_(k)` and `d_(mn−k+1)`.
    pub lower: f64,
    pub upper: f64,
    /// The order statistic index `k` (1-based).
    pub k: u64,
    /// Whether `k` came from the exact null distribution.
    pub exact: bool,
    /// The interval's confidence, `1 − 2·P(U ≤ k − 1)` (≥ 1 − α unless the
    /// samples are too small to reach it, e.g. 2 against 2).
    pub achieved_confidence: f64,
}

/// A Welch t-test.
#[derive(Debug, Clone, PartialEq)]
pub struct Welch {
    pub t: f64,
    pub df: f64,
    pub mean_x: f64,
    pub mean_y: f64,
    /// `mean_x − mean_y` and its `1 − α` interval.
    pub diff: f64,
    pub interval: (f64, f64),
    pub p: PValues,
}

/// A two-proportion z-test.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoProportion {
    pub z: f64,
    pub rate_x: f64,
    pub rate_y: f64,
    /// `rate_x − rate_y` and its Newcombe `1 − α` interval.
    pub diff: f64,
    pub interval: (f64, f64),
    pub p: PValues,
}

/// Fisher's exact test.
#[derive(Debug, Clone, PartialEq)]
pub struct Fisher {
    /// Sample odds ratio `x_ok·y_fail / (x_fail·y_ok)` (∞ when the divisor
    /// is 0, NaN when a row or column is empty), as SciPy reports it.
    pub odds_ratio: f64,
    pub p: PValues,
}

fn check(name: &'static str, v: &[f64]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::Empty(name));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::NotFinite(name));
    }
    Ok(())
}

fn check_alpha(alpha: f64) -> Result<()> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(Error::Alpha(alpha))
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

// ---------------------------------------------------------------- Mann–Whitney

/// Largest `m·n` for which the exact null distribution of U is computed.
const EXACT_MAX_CELLS: usize = 1_000_000;

/// Rank sum of `x` in the pooled sample (average ranks) and the tie term
/// `Σ (t³ − t)` over tie groups.
fn rank_sum(x: &[f64], y: &[f64]) -> (f64, f64) {
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut r1 = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i + 1;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let avg = (i + 1 + j) as f64 / 2.0;
        let in_x = pooled[i..j].iter().filter(|p| p.1).count();
        r1 += avg * in_x as f64;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }
    (r1, tie_term)
}

/// Counts of U = 0 ..= m·n under the null hypothesis (no ties): the
/// coefficients of the Gaussian binomial `[m+n choose m]_q`, built as
/// `∏_{i=1..m} (1 − q^{n+i}) / (1 − q^i)`. Every intermediate polynomial is
/// itself a Gaussian binomial, so its coefficients stay within
/// `C(m+n, m)`; `None` when that does not fit comfortably in an `i128` or
/// the table would be too large.
fn exact_counts(m: usize, n: usize) -> Option<Vec<i128>> {
    let (m, n) = if m <= n { (m, n) } else { (n, m) };
    let cells = m.checked_mul(n)?;
    if cells > EXACT_MAX_CELLS || ln_choose(m + n, m) > 37.0 * std::f64::consts::LN_10 {
        return None;
    }
    let mut poly = vec![0i128; cells + m + 1];
    poly[0] = 1;
    let mut deg = 0usize;
    for i in 1..=m {
        let shift = n + i;
        for k in (shift..=deg + shift).rev() {
            poly[k] -= poly[k - shift];
        }
        // Exact division by (1 − q^i): c'[k] = c[k] + c'[k − i].
        let new_deg = i * n;
        for k in i..=new_deg {
            poly[k] += poly[k - i];
        }
        for c in poly.iter_mut().skip(new_deg + 1).take(deg + shift - new_deg) {
            *c = 0;
        }
        deg = new_deg;
    }
    poly.truncate(cells + 1);
    Some(poly)
}

/// Cumulative probabilities `P(U ≤ q)` for q = 0 ..= m·n.
fn exact_cdf(counts: &[i128]) -> Vec<f64> {
    let total: i128 = counts.iter().sum();
    let mut acc: i128 = 0;
    counts
        .iter()
        .map(|&c| {
            acc += c;
            acc as f64 / total as f64
        })
        .collect()
}

/// The Mann–Whitney U test of `x` (canary) against `y` (control), as
/// `scipy.stats.mannwhitneyu(x, y, use_continuity=True, method='auto')`.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Result<MannWhitney> {
    check("canary", x)?;
    check("control", y)?;
    let (n1, n2) = (x.len(), y.len());
    let (r1, tie_term) = rank_sum(x, y);
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let mn = n1 as f64 * n2 as f64;
    let u2 = mn - u1;
    let ties = tie_term > 0.0;
    let exact = if !ties && (n1 <= 8 || n2 <= 8) {
        exact_counts(n1, n2)
    } else {
        None
    };
    let p = match &exact {
        Some(counts) => {
            let cdf = exact_cdf(counts);
            let cells = n1 * n2;
            // P(U ≥ u) = P(U ≤ mn − u) by symmetry; U is an integer here.
            let sf = |u: f64| cdf[cells - u.round() as usize].min(1.0);
            PValues {
                two_sided: (2.0 * sf(u1.max(u2))).min(1.0),
                greater: sf(u1),
                less: sf(u2),
            }
        }
        None => {
            let n = (n1 + n2) as f64;
            let s = (mn / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
            let sf = |u: f64| {
                if s > 0.0 {
                    normal_sf((u - mn / 2.0 - 0.5) / s).min(1.0)
                } else {
                    1.0
                }
            };
            PValues {
                two_sided: (2.0 * sf(u1.max(u2))).min(1.0),
                greater: sf(u1),
                less: sf(u2),
            }
        }
    };
    Ok(MannWhitney {
        u: u1,
        n_x: n1,
        n_y: n2,
        ties,
        method: if exact.is_some() {
            Method::Exact
        } else {
            Method::Asymptotic
        },
        p,
    })
}

// -------------------------------------------------------------- Hodges–Lehmann

/// The Hodges–Lehmann shift of `x` (canary) against `y` (control) and its
/// `1 − alpha` confidence interval (see the module docs for `k`).
pub fn hodges_lehmann(x: &[f64], y: &[f64], alpha: f64) -> Result<HodgesLehmann> {
    check("canary", x)?;
    check("control", y)?;
    check_alpha(alpha)?;
    let xs = sorted(x);
    let ys = sorted(y);
    let (m, n) = (xs.len(), ys.len());
    let cells = m as u64 * n as u64;
    let shift = if cells % 2 == 1 {
        kth_difference(&xs, &ys, cells.div_ceil(2))
    } else {
        let limit = 2 * (m + n) as u64;
        let mid = kth_differences(&xs, &ys, cells / 2, cells / 2 + 1, limit);
        mid[0] + (mid[1] - mid[0]) / 2.0
    };
    let (_, tie_term) = rank_sum(x, y);
    let exact = if tie_term == 0.0 && m < 50 && n < 50 {
        exact_counts(m, n)
    } else {
        None
    };
    let (k, achieved_confidence) = match &exact {
        Some(counts) => {
            let cdf = exact_cdf(counts);
            let q = cdf.iter().position(|&p| p >= alpha / 2.0).unwrap_or(cdf.len() - 1) as u64;
            let k = q.max(1);
            (k, 1.0 - 2.0 * cdf[(k - 1) as usize])
        }
        None => {
            let mnf = cells as f64;
            let sigma = (mnf * (m + n + 1) as f64 / 12.0).sqrt();
            let z = normal_isf(alpha / 2.0);
            let k = (mnf / 2.0 + 0.5 - z * sigma).floor().max(1.0) as u64;
            let below = normal_cdf((k as f64 - 1.0 + 0.5 - mnf / 2.0) / sigma);
            (k, 1.0 - 2.0 * below)
        }
    };
    let lower = kth_difference(&xs, &ys, k);
    let upper = kth_difference(&xs, &ys, cells - k + 1);
    Ok(HodgesLehmann {
        shift,
        lower,
        upper,
        k,
        exact: exact.is_some(),
        achieved_confidence,
    })
}

// ----------------------------------------------------------------------- Welch

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
    (mean, ss / (n - 1.0))
}

/// Welch's t-test of `x` (canary) against `y` (control), as
/// `scipy.stats.ttest_ind(x, y, equal_var=False)`, with the `1 − alpha`
/// interval of the difference of means. Both samples constant: the
/// difference is exact, so `t` is ±∞ (p 0 on its side) or, with equal
/// means, 0 (p 1); SciPy returns NaN there.
pub fn welch(x: &[f64], y: &[f64], alpha: f64) -> Result<Welch> {
    check("canary", x)?;
    check("control", y)?;
    check_alpha(alpha)?;
    if x.len() < 2 {
        return Err(Error::TooFew("canary", x.len()));
    }
    if y.len() < 2 {
        return Err(Error::TooFew("control", y.len()));
    }
    let (mx, vx) = mean_var(x);
    let (my, vy) = mean_var(y);
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let (ax, ay) = (vx / nx, vy / ny);
    let se2 = ax + ay;
    let diff = mx - my;
    if se2 == 0.0 {
        let (t, p) = if diff == 0.0 {
            (
                0.0,
                PValues {
                    two_sided: 1.0,
                    greater: 1.0,
                    less: 1.0,
                },
            )
        } else if diff > 0.0 {
            (
                f64::INFINITY,
                PValues {
                    two_sided: 0.0,
                    greater: 0.0,
                    less: 1.0,
                },
            )
        } else {
            (
                f64::NEG_INFINITY,
                PValues {
                    two_sided: 0.0,
                    greater: 1.0,
                    less: 0.0,
                },
            )
        };
        return Ok(Welch {
            t,
            df: nx + ny - 2.0,
            mean_x: mx,
            mean_y: my,
            diff,
            interval: (diff, diff),
            p,
        });
    }
    let se = se2.sqrt();
    let t = diff / se;
    let df = se2 * se2 / (ax * ax / (nx - 1.0) + ay * ay / (ny - 1.0));
    let half = student_t_isf(alpha / 2.0, df) * se;
    Ok(Welch {
        t,
        df,
        mean_x: mx,
        mean_y: my,
        diff,
        interval: (diff - half, diff + half),
        p: PValues {
            two_sided: (2.0 * student_t_sf(t.abs(), df)).min(1.0),
            greater: student_t_sf(t, df),
            less: student_t_sf(-t, df),
        },
    })
}

// ---------------------------------------------------------------- proportions

fn check_counts(which: &'static str, ok: u64, n: u64) -> Result<()> {
    if n == 0 || ok > n {
        Err(Error::Counts { which, ok, n })
    } else {
        Ok(())
    }
}

/// Wilson score interval of a proportion.
fn wilson(ok: u64, n: u64, z: f64) -> (f64, f64) {
    let nf = n as f64;
    let p = ok as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// The pooled two-proportion z-test of the canary's success rate against
/// the control's, with Newcombe's interval of the difference.
pub fn two_proportion(x_ok: u64, x_n: u64, y_ok: u64, y_n: u64, alpha: f64) -> Result<TwoProportion> {
    check_counts("canary", x_ok, x_n)?;
    check_counts("control", y_ok, y_n)?;
    check_alpha(alpha)?;
    let (p1, p2) = (x_ok as f64 / x_n as f64, y_ok as f64 / y_n as f64);
    let pooled = (x_ok + y_ok) as f64 / (x_n + y_n) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / x_n as f64 + 1.0 / y_n as f64)).sqrt();
    let diff = p1 - p2;
    let (z, p) = if se > 0.0 {
        let z = diff / se;
        (
            z,
            PValues {
                two_sided: (2.0 * normal_sf(z.abs())).min(1.0),
                greater: normal_sf(z),
                less: normal_cdf(z),
            },
        )
    } else {
        // Both groups all successes or all failures: no difference.
        (
            0.0,
            PValues {
                two_sided: 1.0,
                greater: 1.0,
                less: 1.0,
            },
        )
    };
    let zq = normal_isf(alpha / 2.0);
    let (l1, u1) = wilson(x_ok, x_n, zq);
    let (l2, u2) = wilson(y_ok, y_n, zq);
    let lower = diff - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let upper = diff + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    Ok(TwoProportion {
        z,
        rate_x: p1,
        rate_y: p2,
        diff,
        interval: (lower, upper),
        p,
    })
}

/// Fisher's exact test of the canary's successes against the control's
/// (see the module docs for the table and the two-sided rule).
pub fn fisher_exact(x_ok: u64, x_n: u64, y_ok: u64, y_n: u64) -> Result<Fisher> {
    check_counts("canary", x_ok, x_n)?;
    check_counts("control", y_ok, y_n)?;
    let (a, b, c, d) = (x_ok, x_n - x_ok, y_ok, y_n - y_ok);
    let odds_ratio = if a + c == 0 || b + d == 0 {
        f64::NAN
    } else if b == 0 || c == 0 {
        f64::INFINITY
    } else {
        (a as f64 * d as f64) / (b as f64 * c as f64)
    };
    let total = x_n + y_n;
    let successes = a + c;
    // X = canary successes ~ Hypergeometric(total, successes, x_n).
    let lo = (x_n + successes).saturating_sub(total);
    let hi = x_n.min(successes);
    if lo == hi {
        return Ok(Fisher {
            odds_ratio,
            p: PValues {
                two_sided: 1.0,
                greater: 1.0,
                less: 1.0,
            },
        });
    }
    let mode = (((x_n + 1) as f64 * (successes + 1) as f64) / (total + 2) as f64).floor() as u64;
    let mode = mode.clamp(lo, hi);
    let len = (hi - lo + 1) as usize;
    // Unnormalized pmf by the ratio P(k+1)/P(k), starting at 1 at the mode so
    // nothing overflows; far tails underflow to 0.
    let mut w = vec![0.0f64; len];
    w[(mode - lo) as usize] = 1.0;
    let ratio = |k: u64| -> f64 {
        // Failures left for the control row: (total − successes) − (x_n − k) ≥ 0
        // on the support; computed in f64 so no step underflows.
        let control_failures = (total - successes) as f64 - (x_n - k) as f64;
        ((successes - k) as f64 * (x_n - k) as f64) / ((k + 1) as f64 * (control_failures + 1.0))
    };
    for k in mode..hi {
        let i = (k - lo) as usize;
        w[i + 1] = w[i] * ratio(k);
    }
    for k in (lo..mode).rev() {
        let i = (k - lo) as usize;
        w[i] = w[i + 1] / ratio(k);
    }
    let sum: f64 = w.iter().sum();
    let pmf: Vec<f64> = w.iter().map(|v| v / sum).collect();
    let at = (a - lo) as usize;
    let less: f64 = pmf[..=at].iter().sum();
    let greater: f64 = pmf[at..].iter().sum();
    let bound = pmf[at] * (1.0 + 1e-7);
    let two: f64 = pmf.iter().filter(|&&p| p <= bound).sum();
    Ok(Fisher {
        odds_ratio,
        p: PValues {
            two_sided: two.min(1.0),
            greater: greater.min(1.0),
            less: less.min(1.0),
        },
    })
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
