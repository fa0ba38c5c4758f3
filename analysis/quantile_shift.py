"""Quantiles of two samples: a distribution-free interval for the difference (and ratio) of their q-quantiles,
and an exact conditional test that the fault's q-quantile exceeds the baseline's (Mood's median test
generalised to any quantile), widened for serial dependence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ._types import ConfidenceInterval
from ._validate import check_alternative, check_confidence, check_quantile, check_samples
from .dependence import Dependence, indicator_dependence
from .quantiles import order_statistic_ranks, _point_rank

__all__ = ["QuantileDifference", "QuantileShiftTest", "quantile_difference_ci", "quantile_shift_test"]


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

    Dependent samples (``ordered=True``, the default: each sample in time order): the exceedances of each
    sample are tested for serial dependence (:func:`chaosinject.analysis.indicator_dependence`). When either
    sample's are dependent, ``method`` is ``"dependence-normal"``: the difference of exceedance fractions is
    referred to a normal law with the pooled-proportion variance inflated per sample,
    ``p (1 - p) (VIF_b / n_b + VIF_f / n_f)``, and ``interval`` is the Newcombe CI on the effective counts
    (counts / VIF). Otherwise ``method`` is ``"hypergeometric"`` (the exact test). ``dependence``: the two
    :class:`Dependence` records (baseline, fault).
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
    method: str = "hypergeometric"
    dependence: tuple[Dependence, Dependence] | None = None

    @property
    def dependent(self) -> bool:
        return self.dependence is not None and any(d.applied for d in self.dependence)


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
                        confidence: float = 0.95, ordered: bool = True) -> QuantileShiftTest:
    """Conditional test that the fault q-quantile is higher (or lower / different) than baseline's: exact
    (hypergeometric) for independent samples, widened for the dependence found in time order (see
    :class:`QuantileShiftTest`). ``ordered=False``: the samples carry no time order (pooled): treated as
    independent, which the ``dependence`` records say."""
    from .proportions import _newcombe_diff

    x = check_samples(baseline, "baseline", allow_empty=False)
    y = check_samples(fault, "fault", allow_empty=False)
    q = check_quantile(q)
    conf = check_confidence(confidence)
    check_alternative(alternative)
    pooled = np.concatenate((x, y))
    r = _point_rank(pooled.size, q)
    t = float(np.partition(pooled, r - 1)[r - 1])
    del pooled
    ix, iy = x > t, y > t
    bx = int(np.count_nonzero(ix))
    by = int(np.count_nonzero(iy))
    name = f"exceedances of the pooled q={q:g} quantile"
    deps = (indicator_dependence(ix, "baseline " + name, ordered=ordered),
            indicator_dependence(iy, "fault " + name, ordered=ordered))
    del ix, iy
    eff = by / y.size - bx / x.size
    if any(d.applied for d in deps):
        vx, vy = deps[0].vif, deps[1].vif
        N = x.size + y.size
        pp = (bx + by) / N
        sd = math.sqrt(pp * (1 - pp) * (vx / x.size + vy / y.size))
        if sd == 0.0:
            p = 1.0
        else:
            z = eff / sd
            p = {"greater": special.ndtr(-z), "less": special.ndtr(z)}.get(alternative, 2 * special.ndtr(-abs(z)))
        nx_, ny_ = max(1, round(x.size / vx)), max(1, round(y.size / vy))   # effective sizes
        ci = _newcombe_diff(min(nx_, round(bx / vx)), nx_, min(ny_, round(by / vy)), ny_, conf)
        return QuantileShiftTest(q, t, by, float(min(1.0, p)), alternative, bx, by, eff, ci, "dependence-normal",
                                 deps)
    N, K, n = x.size + y.size, bx + by, y.size
    hg = stats.hypergeom(N, K, n)
    if alternative == "greater":
        p = float(hg.sf(by - 1))
    elif alternative == "less":
        p = float(hg.cdf(by))
    else:
        p = float(min(1.0, 2 * min(hg.sf(by - 1), hg.cdf(by))))
    return QuantileShiftTest(q, t, by, min(1.0, p), alternative, bx, by, eff,
                             _newcombe_diff(bx, x.size, by, y.size, conf), "hypergeometric", deps)
