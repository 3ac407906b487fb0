//! Exact selection among the `m·n` differences `x_i − y_j` of two sorted
//! samples without storing them: the k-th smallest for the Hodges–Lehmann
//! shift and its interval (see [`super::stats`]).
//!
//! The search keeps a bracket `(lo, hi]` of `f64` values with fewer than
//! `k` differences at or below `lo` and at least `k` at or below `hi`,
//! counting with two pointers over the sorted samples in O(m + n) per
//! probe: floating-point subtraction is monotone in each argument, so the
//! counts are exact for the very differences the brute force would sort.
//! Probes are value midpoints first (halving the width, and so roughly the
//! count), then bit-pattern midpoints (at most 64 to reach adjacent
//! floats); once at most `2(m + n)` differences remain they are listed and
//! sorted. For 10,000 against 10,000 that is a few dozen probes instead of
//! sorting 10⁸ values.

/// Maps an `f64` to a `u64` whose order is the numeric order (for finite
/// values; -0.0 sorts just below +0.0).
fn ordered_bits(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn from_ordered_bits(k: u64) -> f64 {
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// The number of pairs with `fl(x_i − y_j) ≤ d`, both sorted ascending.
/// Floating-point subtraction is monotone in each argument, so the first
/// `j` with `x_i − y_j ≤ d` never moves left as `i` grows.
pub(crate) fn count_le(xs: &[f64], ys: &[f64], d: f64) -> u64 {
    let n = ys.len();
    let mut j = 0usize;
    let mut count = 0u64;
    for &xi in xs {
        while j < n && xi - ys[j] > d {
            j += 1;
        }
        count += (n - j) as u64;
    }
    count
}

/// The differences `d` with `lo < d ≤ hi`, unsorted.
fn differences_between(xs: &[f64], ys: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let n = ys.len();
    let (mut j_hi, mut j_lo) = (0usize, 0usize);
    let mut out = Vec::new();
    for &xi in xs {
        while j_hi < n && xi - ys[j_hi] > hi {
            j_hi += 1;
        }
        while j_lo < n && xi - ys[j_lo] > lo {
            j_lo += 1;
        }
        out.extend(ys[j_hi..j_lo.max(j_hi)].iter().map(|&y| xi - y));
    }
    out
}

/// The `k1`-th to `k2`-th smallest (1-based, `k1 ≤ k2`) of the differences
/// `x_i − y_j` of two ascending samples, exactly, without storing all of
/// them: bisection over the bit patterns of `f64` keeps a bracket
/// `(lo, hi]` with fewer than `k1` differences at or below `lo` and at
/// least `k2` at or below `hi`; once at most `limit` differences lie inside
/// it they are listed and sorted. A bracket holding a single value (heavy
/// ties) answers at once; a probe that falls between `k1` and `k2` splits
/// the range in two. At most 112 probes of O(m + n) each (see [`probe`]).
pub(crate) fn kth_differences(xs: &[f64], ys: &[f64], k1: u64, k2: u64, limit: u64) -> Vec<f64> {
    let min = xs[0] - ys[ys.len() - 1];
    let max = xs[xs.len() - 1] - ys[0];
    // Just below the smallest difference (and below -0.0 when it is a zero).
    let lo = ordered_bits(if min == 0.0 { -0.0 } else { min }) - 1;
    let hi = ordered_bits(max);
    let cells = xs.len() as u64 * ys.len() as u64;
    let mut out = Vec::with_capacity((k2 - k1 + 1) as usize);
    let bracket = Bracket {
        lo,
        c_lo: 0,
        hi,
        c_hi: cells,
        probes: 0,
    };
    select_range(xs, ys, k1, k2, bracket, limit, &mut out);
    out.into_iter().map(|v| if v == 0.0 { 0.0 } else { v }).collect()
}

/// Ordered bit patterns `lo < hi` and the counts of differences at or
/// below each; `probes` counted so far.
#[derive(Clone, Copy)]
struct Bracket {
    lo: u64,
    c_lo: u64,
    hi: u64,
    c_hi: u64,
    probes: u32,
}

/// Probes before the bisection switches from the midpoint in value (which
/// halves the bracket's width, and so roughly its count) to the midpoint in
/// bit patterns (which reaches adjacent floats in at most 64 more).
const VALUE_PROBES: u32 = 48;

/// The next probe strictly inside the bracket (`hi − lo ≥ 2`).
fn probe(b: &mut Bracket) -> u64 {
    b.probes += 1;
    if b.probes <= VALUE_PROBES {
        let (lo, hi) = (from_ordered_bits(b.lo), from_ordered_bits(b.hi));
        let mid = ordered_bits(lo + (hi - lo) / 2.0);
        if mid > b.lo && mid < b.hi && (hi - lo).is_finite() {
            return mid;
        }
    }
    b.lo + (b.hi - b.lo) / 2
}

fn select_range(xs: &[f64], ys: &[f64], k1: u64, k2: u64, mut b: Bracket, limit: u64, out: &mut Vec<f64>) {
    loop {
        if b.hi - b.lo <= 1 {
            // Only the value `hi` lies in the bracket.
            out.extend((k1..=k2).map(|_| from_ordered_bits(b.hi)));
            return;
        }
        if b.c_hi - b.c_lo <= limit {
            let mut v = differences_between(xs, ys, from_ordered_bits(b.lo), from_ordered_bits(b.hi));
            v.sort_by(f64::total_cmp);
            out.extend((k1..=k2).map(|k| v[(k - b.c_lo - 1) as usize]));
            return;
        }
        let mid = probe(&mut b);
        let c = count_le(xs, ys, from_ordered_bits(mid));
        if c >= k2 {
            b.hi = mid;
            b.c_hi = c;
        } else if c < k1 {
            b.lo = mid;
            b.c_lo = c;
        } else {
            // Ranks k1..=c are at or below `mid`, c+1..=k2 above it.
            select_range(xs, ys, k1, c, Bracket { hi: mid, c_hi: c, ..b }, limit, out);
            select_range(xs, ys, c + 1, k2, Bracket { lo: mid, c_lo: c, ..b }, limit, out);
            return;
        }
    }
}

/// The k-th smallest (1-based) difference, listing at most `2(m + n)`
/// candidates at the end.
pub(crate) fn kth_difference(xs: &[f64], ys: &[f64], k: u64) -> f64 {
    let limit = 2 * (xs.len() + ys.len()) as u64;
    kth_differences(xs, ys, k, k, limit)[0]
}
