"""Reference values for coordinator/tests/canary_scipy.rs.

Reads a JSON list of cases on stdin and prints a JSON list of results, one
per case, for the mode named by the first argument:

- ``mw``: ``scipy.stats.mannwhitneyu(x, y, method='auto')`` (SciPy's default
  continuity correction) for the alternatives two-sided, greater and less.
- ``welch``: ``scipy.stats.ttest_ind(x, y, equal_var=False)`` for the three
  alternatives.
- ``fisher``: ``scipy.stats.fisher_exact([[a, b], [c, d]])`` for the three
  alternatives.
- ``hl``: the Hodges-Lehmann shift and its confidence interval, computed
  the slow, obvious way: all m*n differences x_i - y_j sorted with NumPy,
  the shift their ``numpy.median``, the interval [d_(k), d_(mn-k+1)]. The
  index k is, without ties and with both samples under 50 values, the
  smallest q with P(U <= q) >= alpha/2 (at least 1), where P(U <= q) is
  SciPy's own exact Mann-Whitney distribution: a tie-free pair of samples
  whose U is q is built and SciPy's exact 'less' p-value, which is
  P(U <= q), is read. Otherwise k = floor(mn/2 + 1/2 - z * sigma), at least
  1, with z = scipy.stats.norm.isf(alpha/2) and sigma = sqrt(mn(m+n+1)/12).
  This is the definition written in coordinator/src/canary/stats.rs, not an
  independent statistical authority for the interval (SciPy has no
  Hodges-Lehmann interval); it checks the selection algorithm and the exact
  critical values against a brute force and SciPy's distribution.
"""

import json
import math
import struct
import sys

import numpy as np
from scipy import stats

ALTERNATIVES = ("two-sided", "greater", "less")


def exact_cdf(m, n, q):
    """P(U <= q) for samples of m and n values, from SciPy's exact test."""
    y = [float(j) for j in range(n)]
    x = []
    rest = q
    for i in range(m):
        c = min(rest, n)
        rest -= c
        # Above exactly c of the y values, and distinct from each other.
        x.append(c - 0.5 + (i + 1) * 1e-4)
    return stats.mannwhitneyu(x, y, method="exact", alternative="less").pvalue


def hodges_lehmann(x, y, alpha):
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    m, n = len(x), len(y)
    mn = m * n
    d = np.sort(np.subtract.outer(x, y).ravel())
    shift = float(np.median(d))
    ties = len(np.unique(np.concatenate([x, y]))) < m + n
    exact = (not ties) and m < 50 and n < 50
    if exact:
        # The smallest q with P(U <= q) >= alpha/2, by bisection (the cdf
        # is nondecreasing; P(U <= mn) = 1).
        lo, hi = 0, mn
        while lo < hi:
            mid = (lo + hi) // 2
            if exact_cdf(m, n, mid) >= alpha / 2:
                hi = mid
            else:
                lo = mid + 1
        k = max(lo, 1)
    else:
        sigma = math.sqrt(mn * (m + n + 1) / 12.0)
        z = stats.norm.isf(alpha / 2)
        k = max(1, math.floor(mn / 2 + 0.5 - z * sigma))
    # The bounds as their IEEE-754 bit patterns: they must match exactly,
    # and a decimal round trip through JSON parsers is not guaranteed to.
    return {
        "shift": shift,
        "lower_bits": bits(d[k - 1]),
        "upper_bits": bits(d[mn - k]),
        "k": k,
        "exact": exact,
    }


def bits(v):
    return struct.unpack("<Q", struct.pack("<d", float(v)))[0]


def main():
    mode = sys.argv[1]
    cases = json.load(sys.stdin)
    out = []
    for case in cases:
        if mode == "mw":
            r = {}
            for alt in ALTERNATIVES:
                res = stats.mannwhitneyu(case["x"], case["y"], alternative=alt, method="auto")
                r["u"] = float(res.statistic)
                r[alt] = float(res.pvalue)
            out.append(r)
        elif mode == "welch":
            r = {}
            for alt in ALTERNATIVES:
                res = stats.ttest_ind(case["x"], case["y"], equal_var=False, alternative=alt)
                r["t"] = float(res.statistic)
                r[alt] = float(res.pvalue)
            out.append(r)
        elif mode == "fisher":
            table = [[case["a"], case["b"]], [case["c"], case["d"]]]
            r = {}
            for alt in ALTERNATIVES:
                res = stats.fisher_exact(table, alternative=alt)
                r[alt] = float(res[1])
            out.append(r)
        elif mode == "hl":
            out.append(hodges_lehmann(case["x"], case["y"], case["alpha"]))
        else:
            raise SystemExit("unknown mode " + mode)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
