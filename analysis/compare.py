"""Two-sample latency comparisons: Mann-Whitney U with Hodges-Lehmann shift (Kayenta style), p99 difference
and ratio intervals, and a two-sample quantile exceedance test.

Hodges-Lehmann at scale
-----------------------
The HL shift is the median of all n_x * n_y differences ``fault_j - baseline_i`` (10^14 pairs for 10^7
samples each: never formed). Both samples are sorted; the fault sample is cut into at most ``hl_groups``
(default 65 536) runs of consecutive order statistics. For a shift d the number of pairs with difference
<= d is bracketed exactly: each run contributes between ``w * #(x >= y_hi - d)`` and ``w * #(x >= y_lo - d)``
(``searchsorted`` into the sorted baseline). Bisection on d for each bound gives a rigorous bracket
``[lower, upper]`` containing the exact k-th smallest difference; the reported value is its midpoint and
``shift_error`` its half-width plus the bisection tolerance. When n_fault <= hl_groups the bracket collapses
and the result equals the exact HL estimate (to the bisection tolerance, 1e-9 of the data range). Cost:
two sorts plus ~3 x 2 x 60 searches of 65 536 keys, about 2 s for 10^7 + 10^7 samples.

The CI of the shift is the Moses / Lehmann distribution-free interval: the differences of ranks
C and N + 1 - C with C = floor(N/2 - z * sd(U)) (normal approximation to the null law of U, tie-corrected).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ._types import ConfidenceInterval, InvalidInput
from ._validate import check_confidence, check_quantile, check_samples
from .quantiles import order_statistic_ranks, _point_rank

__all__ = [
    "HodgesLehmann",
    "LatencyComparison",
    "QuantileDifference",
    "QuantileShiftTest",
    "compare_latency",
    "hodges_lehmann",
    "quantile_difference_ci",
    "quantile_shift_test",
]

_EXACT_LIMIT = 2_000  # below this total size, delegate the MW p-value to scipy (exact when possible)


@dataclass(frozen=True, slots=True)
class LatencyComparison:
    """Mann-Whitney U / Hodges-Lehmann comparison of ``fault`` against ``baseline``.

    ``statistic`` is U of the fault sample (number of pairs fault > baseline, ties count 1/2); ``pvalue``
    for ``alternative``; ``shift`` the HL estimate of fault - baseline (same units as the data) with
    ``shift_error`` its computational precision; ``interval`` the Moses CI of the shift at ``confidence``
    (``None`` if n is too small); ``effect`` the relative shift ``shift / median(baseline)``;
    ``classification`` one of "higher", "lower", "pass" (no material difference) or "inconclusive",
    following Kayenta: significant AND beyond the effect-size threshold.
    """

    statistic: float
    pvalue: float
    alternative: str
    shift: float
    shift_error: float
    interval: ConfidenceInterval | None
    effect: float
    classification: str
    confidence: float
    n_baseline: int
    n_fault: int
    reason: str


@dataclass(frozen=True, slots=True)
class HodgesLehmann:
    """Hodges-Lehmann shift (fault - baseline): median of all pairwise differences.

    The exact value lies in ``[shift - error, shift + error]`` (rigorous bracket, see the module docstring).
    """

    shift: float
    error: float
    n_baseline: int
    n_fault: int


@dataclass(frozen=True, slots=True)
class QuantileDifference:
    """Conservative distribution-free interval for ``Q_fault(q) - Q_baseline(q)`` and their ratio.

    Each sample's order-statistic interval is taken at ``sqrt(confidence)``; the samples are independent,
    so both cover with probability >= confidence and the derived intervals are conservative.
    """

    q: float
    baseline: float
    fault: float
    difference: float
    interval: ConfidenceInterval | None
    ratio: float
    ratio_interval: ConfidenceInterval | None
    confidence: float
    reason: str = ""

    @property
    def inconclusive(self) -> bool:
        return self.interval is None


@dataclass(frozen=True, slots=True)
class QuantileShiftTest:
    """Two-sample test that the q-quantile of ``fault`` exceeds that of ``baseline``.

    The pooled sample's q-quantile is the threshold; under H0 (both samples from one distribution) the
    number of fault samples above it, given the total number above, is hypergeometric: an exact
    conditional test (Mood's median test generalised to any quantile). ``statistic`` is the fault
    exceedance count, ``effect`` the difference of exceedance fractions and ``interval`` its Newcombe CI.
    """

    q: float
    threshold: float
    statistic: int
    pvalue: float
    alternative: str
    exceed_baseline: int
    exceed_fault: int
    effect: float
    interval: ConfidenceInterval


def _sorted(a: np.ndarray) -> np.ndarray:
    s = np.sort(a, kind="quicksort")
    return s


def _tie_sum(xs: np.ndarray, ys: np.ndarray) -> float:
    """sum(t^3 - t) over tie groups of the pooled sample, from two sorted arrays."""
    def runs(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if s.size == 0:
            return s, np.empty(0, np.int64)
        starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
        counts = np.diff(np.append(starts, s.size))
        return s[starts], counts
    ux, cx = runs(xs)
    uy, cy = runs(ys)
    if ux.size == xs.size and uy.size == ys.size and np.intersect1d(ux, uy, assume_unique=True).size == 0:
        return 0.0
    u = np.concatenate((ux, uy))
    c = np.concatenate((cx, cy))
    order = np.argsort(u, kind="stable")
    u, c = u[order], c[order]
    starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1])))
    t = np.add.reduceat(c, starts).astype(np.float64)
    return float(np.sum(t ** 3 - t))


def _u_and_ties(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """U of y and the pooled tie term, with a fast path when no value occurs in both samples."""
    left = np.searchsorted(xs, ys, "left")
    inside = left < xs.size
    cross = bool(np.any(xs[left[inside]] == ys[inside]))
    if not cross:
        u = float(left.sum(dtype=np.int64))
        ties = 0.0
        for s in (xs, ys):
            if s.size > 1 and bool(np.any(s[1:] == s[:-1])):
                ties += _tie_sum(s, s[:0])
        return u, ties
    right = np.searchsorted(xs, ys, "right")
    u = float(left.sum(dtype=np.int64)) + 0.5 * float((right - left).sum(dtype=np.int64))
    return u, _tie_sum(xs, ys)


class _PairCounter:
    """Bracketed count of pairs with ``y - x <= d`` for sorted x, y (see module docstring)."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, groups: int):
        self.xs, self.ys = xs, ys
        n = ys.size
        g = max(1, min(groups, n))
        edges = np.unique(np.linspace(0, n, g + 1).astype(np.int64))
        self.lo_vals = ys[edges[:-1]]
        self.hi_vals = ys[edges[1:] - 1]
        self.w = np.diff(edges).astype(np.int64)
        self.nx = xs.size
        self.evaluations = 0
        self.thinned: np.ndarray | None = None

    def count(self, d: float, upper: bool) -> int:
        """upper=True: an upper bound of #(y - x <= d); False: a lower bound. Equal when groups are single."""
        self.evaluations += 1
        vals = self.lo_vals if upper else self.hi_vals
        c = self.nx - np.searchsorted(self.xs, vals - d, "left")
        return int(np.dot(self.w, c))

    def smallest(self, k: int, upper: bool, guess: tuple[float, float], limits: tuple[float, float],
                 tol: float) -> float:
        """Smallest d (to ``tol``) with count(d) >= k; safeguarded regula falsi on the step function."""
        lo_lim, hi_lim = limits
        a, b = max(guess[0], lo_lim), min(guess[1], hi_lim)
        if a > b:
            a, b = lo_lim, hi_lim
        fa = self.count(a, upper)
        w = max(b - a, tol)
        while fa >= k:  # widen downwards
            if a <= lo_lim:
                return lo_lim
            a = max(lo_lim, a - w)
            w *= 4
            fa = self.count(a, upper)
        fb = self.count(b, upper)
        w = max(b - a, tol)
        while fb < k:
            if b >= hi_lim:
                return hi_lim
            b = min(hi_lim, b + w)
            w *= 4
            fb = self.count(b, upper)
        bisect_next = False
        for _ in range(300):
            width = b - a
            if width <= tol:
                break
            if bisect_next:
                m = 0.5 * (a + b)
            else:
                m = a + width * (k - 0.5 - fa) / max(fb - fa, 1)
                m = min(max(m, a + 1e-3 * width), b - 1e-3 * width)
            fm = self.count(m, upper)
            if fm >= k:
                b, fb = m, fm
            else:
                a, fa = m, fm
            bisect_next = (b - a) > 0.5 * width
        return b


def _thinned_differences(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Sorted differences of at most 256 x 256 evenly spaced order statistics (for starting brackets)."""
    ix = np.unique(np.linspace(0, xs.size - 1, min(xs.size, 256)).astype(np.int64))
    iy = np.unique(np.linspace(0, ys.size - 1, min(ys.size, 256)).astype(np.int64))
    return np.sort(np.subtract.outer(ys[iy], xs[ix]).ravel())


def _initial_guess(d: np.ndarray, frac: float) -> tuple[float, float]:
    """Bracket guess for the frac-quantile of y - x from the thinned differences."""
    lo = int(max(0.0, frac - 0.03) * (d.size - 1))
    hi = int(math.ceil(min(1.0, frac + 0.03) * (d.size - 1)))
    return float(d[lo]), float(d[hi])


def _kth_bracket(pc: _PairCounter, k_low: int, k_high: int, tol: float) -> tuple[float, float]:
    """[a, b] containing the exact k_low-th and k_high-th smallest differences (1-based, k_low <= k_high)."""
    xs, ys = pc.xs, pc.ys
    limits = (float(ys[0] - xs[-1]), float(ys[-1] - xs[0]))
    N = xs.size * ys.size
    if pc.thinned is None:
        pc.thinned = _thinned_differences(xs, ys)
    a = pc.smallest(k_low, True, _initial_guess(pc.thinned, (k_low - 0.5) / N), limits, tol)
    b = pc.smallest(k_high, False, _initial_guess(pc.thinned, (k_high - 0.5) / N), limits, tol)
    return a, b


def _tolerance(xs: np.ndarray, ys: np.ndarray) -> float:
    spread = max(float(xs[-1] - xs[0]), float(ys[-1] - ys[0]), 0.0)
    qx = float(xs[(3 * (xs.size - 1)) // 4] - xs[(xs.size - 1) // 4])
    qy = float(ys[(3 * (ys.size - 1)) // 4] - ys[(ys.size - 1) // 4])
    scale = max(qx, qy) or spread or 1.0
    return 1e-9 * scale


def hodges_lehmann(baseline: object, fault: object, *, groups: int = 65_536) -> HodgesLehmann:
    """HL estimate of the shift fault - baseline with its precision (half-width of the exact bracket)."""
    x = check_samples(baseline, "baseline", allow_empty=False)
    y = check_samples(fault, "fault", allow_empty=False)
    if groups < 1:
        raise InvalidInput(f"groups must be >= 1, got {groups}")
    xs, ys = _sorted(x), _sorted(y)
    shift, err = _hl_from_sorted(xs, ys, groups)
    return HodgesLehmann(shift, err, xs.size, ys.size)


def _hl_from_sorted(xs: np.ndarray, ys: np.ndarray, groups: int, pc: "_PairCounter | None" = None
                    ) -> tuple[float, float]:
    n = xs.size * ys.size
    # median of N values: mean of ranks floor((N+1)/2) and ceil((N+1)/2); the bracket holds both
    k1, k2 = (n + 1) // 2, (n + 2) // 2
    tol = _tolerance(xs, ys)
    a, b = _kth_bracket(pc or _PairCounter(xs, ys, groups), k1, k2, tol)
    return 0.5 * (a + b), 0.5 * (b - a) + tol


def compare_latency(
    baseline: object,
    fault: object,
    *,
    confidence: float = 0.98,
    alternative: str = "two-sided",
    allowed_increase: float = 0.10,
    allowed_decrease: float = 0.10,
    groups: int = 65_536,
) -> LatencyComparison:
    """Mann-Whitney U test with Hodges-Lehmann shift and its CI, classified Kayenta-style.

    ``confidence`` defaults to Kayenta's 98 %. The fault is "higher" when the shift CI lies above 0 AND the
    relative shift (HL / baseline median) exceeds ``allowed_increase``; "lower" symmetrically with
    ``allowed_decrease``; "pass" otherwise, or "inconclusive" if n is too small for a CI.
    """
    x = check_samples(baseline, "baseline", allow_empty=False)
    y = check_samples(fault, "fault", allow_empty=False)
    conf = check_confidence(confidence)
    if alternative not in ("two-sided", "greater", "less"):
        raise InvalidInput(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    xs, ys = _sorted(x), _sorted(y)
    nx, ny = xs.size, ys.size
    N = nx * ny
    u, ties = _u_and_ties(xs, ys)
    ntot = nx + ny
    var = nx * ny / 12.0 * ((ntot + 1) - ties / (ntot * (ntot - 1))) if ntot > 1 else 0.0
    sd = math.sqrt(max(var, 0.0))
    if ntot <= _EXACT_LIMIT:
        p = float(stats.mannwhitneyu(y, x, alternative=alternative).pvalue)
    elif sd == 0.0:
        p = 1.0
    else:
        mu = N / 2.0
        if alternative == "greater":
            z = (u - mu - 0.5) / sd
            p = float(special.ndtr(-z))
        elif alternative == "less":
            z = (u - mu + 0.5) / sd
            p = float(special.ndtr(z))
        else:
            z = (abs(u - mu) - 0.5) / sd
            p = float(min(1.0, 2 * special.ndtr(-max(z, 0.0))))
    pc = _PairCounter(xs, ys, groups)
    shift, err = _hl_from_sorted(xs, ys, groups, pc)
    zc = float(special.ndtri(1 - (1 - conf) / 2))
    c = math.floor(N / 2.0 - zc * sd)
    med = float(xs[(nx - 1) // 2]) if nx % 2 else 0.5 * float(xs[nx // 2 - 1] + xs[nx // 2])
    effect = shift / med if med != 0 else (math.inf if shift > 0 else (-math.inf if shift < 0 else 0.0))
    interval: ConfidenceInterval | None
    if c < 1 or sd == 0.0:
        interval = None
        cls = "inconclusive"
        reason = f"too few samples for a {conf:.0%} shift interval (n_baseline={nx}, n_fault={ny})"
        if sd == 0.0 and nx > 1 and ny > 1:
            reason = "all values tied: no rank information"
    else:
        lo_a, hi_b = _kth_bracket(pc, c, N + 1 - c, _tolerance(xs, ys))
        interval = ConfidenceInterval(lo_a, hi_b)  # widened by the grouping bracket: conservative
        if interval.low > 0 and effect > allowed_increase:
            cls, reason = "higher", (
                f"fault latency is higher: shift {shift:.4g} ({effect:+.1%} of baseline median), "
                f"{conf:.0%} CI [{interval.low:.4g}, {interval.high:.4g}] excludes 0 and exceeds the "
                f"{allowed_increase:.0%} allowance")
        elif interval.high < 0 and effect < -allowed_decrease:
            cls, reason = "lower", (
                f"fault latency is lower: shift {shift:.4g} ({effect:+.1%}), CI excludes 0")
        else:
            cls, reason = "pass", (
                f"no material shift: {shift:.4g} ({effect:+.1%} of baseline median), "
                f"{conf:.0%} CI [{interval.low:.4g}, {interval.high:.4g}]")
    return LatencyComparison(u, p, alternative, shift, err, interval, effect, cls, conf, nx, ny, reason)


def _quantile_with_ranks(a: np.ndarray, q: float, conf: float):
    n = a.size
    r = _point_rank(n, q)
    ranks = order_statistic_ranks(n, q, conf)
    kth = [r - 1] + ([ranks[0] - 1, ranks[1] - 1] if ranks else [])
    part = np.partition(a, sorted(set(kth)))
    est = float(part[r - 1])
    if ranks is None:
        return est, None
    return est, (float(part[ranks[0] - 1]), float(part[ranks[1] - 1]))


def _quantile_difference_from_bounds(q, conf, bx, by, reason_x="", reason_y="") -> QuantileDifference:
    (ex, ix), (ey, iy) = bx, by
    ratio = ey / ex if ex > 0 else math.nan
    if ix is None or iy is None:
        return QuantileDifference(q, ex, ey, ey - ex, None, ratio, None, conf,
                                  "too few samples for the interval: " + (reason_x or reason_y or "n too small"))
    interval = ConfidenceInterval(iy[0] - ix[1], iy[1] - ix[0])
    if ix[0] > 0 and iy[0] >= 0:
        rint = ConfidenceInterval(iy[0] / ix[1], iy[1] / ix[0])
    else:
        rint = None
    return QuantileDifference(q, ex, ey, ey - ex, interval, ratio, rint, conf)


def quantile_difference_ci(baseline: object, fault: object, q: float = 0.99, confidence: float = 0.95
                           ) -> QuantileDifference:
    """Distribution-free conservative interval for the difference (and ratio) of q-quantiles."""
    x = check_samples(baseline, "baseline")
    y = check_samples(fault, "fault")
    q = check_quantile(q)
    conf = check_confidence(confidence)
    if x.size == 0 or y.size == 0:
        return QuantileDifference(q, math.nan, math.nan, math.nan, None, math.nan, None, conf, "no samples")
    each = math.sqrt(conf)
    return _quantile_difference_from_bounds(q, conf, _quantile_with_ranks(x, q, each), _quantile_with_ranks(y, q, each))


def quantile_shift_test(baseline: object, fault: object, q: float = 0.99, *, alternative: str = "greater",
                        confidence: float = 0.95) -> QuantileShiftTest:
    """Exact conditional test that the fault q-quantile is higher (or lower / different) than baseline's."""
    from .proportions import _newcombe_diff

    x = check_samples(baseline, "baseline", allow_empty=False)
    y = check_samples(fault, "fault", allow_empty=False)
    q = check_quantile(q)
    conf = check_confidence(confidence)
    if alternative not in ("greater", "less", "two-sided"):
        raise InvalidInput(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    pooled = np.concatenate((x, y))
    r = _point_rank(pooled.size, q)
    t = float(np.partition(pooled, r - 1)[r - 1])
    del pooled
    bx = int(np.count_nonzero(x > t))
    by = int(np.count_nonzero(y > t))
    N, K, n = x.size + y.size, bx + by, y.size
    hg = stats.hypergeom(N, K, n)
    if alternative == "greater":
        p = float(hg.sf(by - 1))
    elif alternative == "less":
        p = float(hg.cdf(by))
    else:
        p = float(min(1.0, 2 * min(hg.sf(by - 1), hg.cdf(by))))
    eff = by / y.size - bx / x.size
    return QuantileShiftTest(q, t, by, min(1.0, p), alternative, bx, by, eff,
                             _newcombe_diff(bx, x.size, by, y.size, conf))
