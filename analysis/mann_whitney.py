"""Mann-Whitney U with the Hodges-Lehmann shift and its Moses interval (Kayenta style): is the fault sample
shifted against the baseline, by how much, and does it matter?

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
from ._validate import check_alternative, check_confidence, check_samples
from .dependence import Dependence, series_dependence

__all__ = ["HodgesLehmann", "LatencyComparison", "compare_latency", "hodges_lehmann"]

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

    Dependent samples (``ordered=True``, the default: each sample in time order): each sample's pooled
    midranks in time order (interpolated between ~8,000 pooled order statistics: within N / 4096 of the exact
    ranks) are tested for serial dependence (:func:`chaosinject.analysis.series_dependence`);
    U is a linear rank statistic, so with variance inflations ``VIF_b``, ``VIF_f`` of the two rank series its
    null variance is multiplied by ``(n_b VIF_f + n_f VIF_b) / N``. When either is dependent, the p-value is
    normal with that variance and the Moses interval's rank C uses it (a wider interval); ``dependence``: the
    two :class:`Dependence` records (baseline, fault).
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
    dependence: tuple[Dependence, Dependence] | None = None

    @property
    def dependent(self) -> bool:
        return self.dependence is not None and any(d.applied for d in self.dependence)


@dataclass(frozen=True, slots=True)
class HodgesLehmann:
    """Hodges-Lehmann shift (fault - baseline): median of all pairwise differences.

    The exact value lies in ``[shift - error, shift + error]`` (rigorous bracket, see the module docstring).
    """

    shift: float
    error: float
    n_baseline: int
    n_fault: int



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
    ordered: bool = True,
) -> LatencyComparison:
    """Mann-Whitney U test with Hodges-Lehmann shift and its CI, classified Kayenta-style.

    ``confidence`` defaults to Kayenta's 98 %. The fault is "higher" when the shift CI lies above 0 AND the
    relative shift (HL / baseline median) exceeds ``allowed_increase``; "lower" symmetrically with
    ``allowed_decrease``; "pass" otherwise, or "inconclusive" if n is too small for a CI.
    """
    x = check_samples(baseline, "baseline", allow_empty=False)
    y = check_samples(fault, "fault", allow_empty=False)
    conf = check_confidence(confidence)
    check_alternative(alternative)
    xs, ys = _sorted(x), _sorted(y)
    if ordered:
        g, rg = _rank_knots(xs, ys)
        deps = (series_dependence(np.interp(x, g, rg), "baseline pooled ranks"),
                series_dependence(np.interp(y, g, rg), "fault pooled ranks"))
    else:
        deps = (series_dependence(xs, "baseline pooled ranks", ordered=False),
                series_dependence(ys, "fault pooled ranks", ordered=False))
    dependent = any(d.applied for d in deps)
    nx, ny = xs.size, ys.size
    N = nx * ny
    u, ties = _u_and_ties(xs, ys)
    ntot = nx + ny
    var = nx * ny / 12.0 * ((ntot + 1) - ties / (ntot * (ntot - 1))) if ntot > 1 else 0.0
    if dependent:
        var *= (nx * deps[1].vif + ny * deps[0].vif) / ntot
    sd = math.sqrt(max(var, 0.0))
    if ntot <= _EXACT_LIMIT and not dependent:
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
    if dependent:
        reason += "; ranks dependent in time order: test and interval widened"
    return LatencyComparison(u, p, alternative, shift, err, interval, effect, cls, conf, nx, ny, reason, deps)


def _rank_knots(xs: np.ndarray, ys: np.ndarray, per_sample: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Pooled midranks at up to ``per_sample`` + 1 evenly spaced order statistics of each sorted sample (the
    extremes included): ``np.interp`` over them gives every value's pooled midrank within N / per_sample of the
    exact one, at the cost of an interpolation instead of a sort (the dependence estimate needs the ranks in
    time order)."""
    def picks(s: np.ndarray) -> np.ndarray:
        return s[np.unique(np.linspace(0, s.size - 1, min(s.size, per_sample + 1)).astype(np.int64))]
    g = np.unique(np.concatenate((picks(xs), picks(ys))))
    rg = 0.5 * (np.searchsorted(xs, g, "left") + np.searchsorted(ys, g, "left")
                + np.searchsorted(xs, g, "right") + np.searchsorted(ys, g, "right") + 1)
    return g, rg
