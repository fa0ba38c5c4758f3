"""An upper-tail linear rank test: is the fault's upper tail (the p99 region) higher than the baseline's?
(:class:`TailRankTest` explains the statistic and its null law.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from ._validate import check_alternative, check_quantile, check_samples
from .dependence import Dependence, series_dependence
from .quantiles import _point_rank

__all__ = ["TailRankTest", "tail_rank_test"]


_EXACT_PERMUTATIONS = 20_000  # tied scores: enumerate every label assignment when C(N, n_fault) <= this
_EXACT_TAIL = 150  # integer (untied) scores: exact subset-sum distribution when at most this many are > 0


@dataclass(frozen=True, slots=True)
class TailRankTest:
    """Upper-tail linear rank test: is the fault's upper tail (the p99 region) higher than baseline's?

    Pool both samples (size N) and keep the top ``k = ceil((1 - tail) * N)`` pooled values. Each pooled
    observation of pooled rank r gets the score ``max(0, r - (N - k))`` (1 .. k inside the tail, 0 below;
    tied values get the average score of their positions). ``statistic`` is the sum of the fault sample's
    scores. Equivalently, it is the sum over the k pooled order statistics ``t_j`` from the ``tail`` quantile
    up of ``#(fault > t_j)``: the exceedance statistic of :func:`quantile_shift_test` averaged over all
    quantile levels in ``[tail, 1)`` (centre 0.99 for the default ``tail=0.98``), so it uses the whole p99
    region instead of a single threshold.

    Under H0 (both samples from one distribution) the labels are exchangeable: the null law is the
    permutation law. ``method`` says how the p-value was obtained: ``"exact"`` (the permutation law itself:
    hypergeometric number of fault values in the tail times the exact subset-sum law of their scores when
    at most 150 scores are positive and untied; with ties, all C(N, n_fault) label assignments enumerated
    when there are at most 20 000) or ``"hypergeometric-normal"``: the number s of fault values
    among the L positive-score positions is hypergeometric (exact), and given s their scores are a uniform
    s-subset of the L scores, whose sum is approximated by a normal law with its exact conditional mean and
    variance (continuity-corrected when the scores are integers). The skewness of the permutation law
    (which makes a plain normal approximation anti-conservative for unequal sample sizes) comes from s and
    is handled exactly.

    ``zscore`` is ``(statistic - null_mean) / null_sd`` (exact permutation moments, tie-corrected);
    ``effect`` is the ratio of the fault to the baseline ``q``-quantile (point estimates, nan if the
    baseline quantile is not positive); ``threshold`` the lowest pooled value with a positive score;
    ``tail_baseline`` / ``tail_fault`` how many of each sample have a positive score. With no rank
    information (all positive scores tied, e.g. constant data) ``pvalue`` is 1 and ``inconclusive`` True.

    Dependent samples (``ordered=True``, the default: each sample in time order): each sample's score series
    (its values' tail scores in time order, 0 below the tail) is tested for serial dependence
    (:func:`chaosinject.analysis.series_dependence`). ``T - null_mean = (m n / N) (mean fault score - mean
    baseline score)``, so with variance inflations ``VIF_b``, ``VIF_f`` of the two score series the null
    variance becomes ``null_sd^2 (m VIF_f + n VIF_b) / N``. When either is dependent, ``null_sd`` is that,
    ``method`` is ``"dependence-normal"`` and the p-value normal (continuity-corrected for integer scores);
    ``dependence``: the two :class:`Dependence` records (baseline, fault).
    """

    statistic: float
    pvalue: float
    alternative: str
    zscore: float
    effect: float
    q: float
    tail: float
    k: int
    threshold: float
    tail_baseline: int
    tail_fault: int
    null_mean: float
    null_sd: float
    method: str
    reason: str = ""
    dependence: tuple[Dependence, Dependence] | None = None

    @property
    def inconclusive(self) -> bool:
        return self.null_sd == 0.0

    @property
    def dependent(self) -> bool:
        return self.dependence is not None and any(d.applied for d in self.dependence)


def _tail_scores(x: np.ndarray, y: np.ndarray, k: int, in_time: bool = False):
    """Averaged tail scores of the positive-score pooled values, their fault labels and the threshold; with
    ``in_time``, also each sample's scores in its own (time) order (0 below the tail).

    Only the top k pooled values (plus values tied with the k-th largest) are sorted: one np.partition
    of the pooled sample, then a sort of those L >= k values.
    """
    N = x.size + y.size
    t = float(np.partition(np.concatenate((x, y)), N - k)[N - k])
    px, py = np.flatnonzero(x >= t), np.flatnonzero(y >= t)
    v = np.concatenate((x[px], y[py]))
    lab = np.zeros(v.size, dtype=bool)
    lab[px.size:] = True
    order = np.argsort(v, kind="stable")
    v, lab = v[order], lab[order]
    L = v.size
    raw = np.arange(k - L + 1, k + 1, dtype=np.float64)  # position N-L+1..N minus (N-k); <= 0 below the cut
    np.maximum(raw, 0.0, out=raw)
    starts = np.flatnonzero(np.concatenate(([True], v[1:] != v[:-1])))
    if starts.size == L:
        a = raw
    else:
        counts = np.diff(np.append(starts, L))
        a = np.repeat(np.add.reduceat(raw, starts) / counts, counts)
    if not in_time:
        return a, lab, t
    back = np.empty(L)
    back[order] = a          # scores in the order of concatenate((x[px], y[py]))
    sx, sy = np.zeros(x.size), np.zeros(y.size)
    sx[px], sy[py] = back[:px.size], back[px.size:]
    return a, lab, t, sx, sy


def _hypergeom_pmf(s: np.ndarray, N: int, L: int, n: int) -> np.ndarray:
    """P(s of the L tail positions are fault) over the whole support s (log-gamma form, renormalised)."""
    def lchoose(a, b):
        return special.gammaln(a + 1.0) - special.gammaln(b + 1.0) - special.gammaln(a - b + 1.0)
    lw = lchoose(L, s) + lchoose(N - L, n - s)
    w = np.exp(lw - lw.max())
    return w / w.sum()


def _tail_pvalue_mixture(T: float, a: np.ndarray, N: int, n: int, alternative: str, cc: float) -> float:
    """P-value from hypergeometric(s) x normal(sum of a uniform s-subset of the L scores a)."""
    L = a.size
    s = np.arange(max(0, n - (N - L)), min(L, n) + 1)
    w = _hypergeom_pmf(s, N, L, n)
    abar = float(a.mean())
    ss = float(np.sum((a - abar) ** 2))
    mu = s * abar
    var = s * (L - s) / (L * (L - 1)) * ss if L > 1 else np.zeros(s.size)
    sd = np.sqrt(np.maximum(var, 0.0))
    eps = 1e-9 * max(1.0, abs(T))
    pos = sd > 0
    safe = np.where(pos, sd, 1.0)
    upper = np.where(pos, special.ndtr(-(T - cc - mu) / safe), (mu >= T - eps).astype(float))
    lower = np.where(pos, special.ndtr((T + cc - mu) / safe), (mu <= T + eps).astype(float))
    pg, pl = float(np.sum(w * upper)), float(np.sum(w * lower))
    if alternative == "greater":
        return min(1.0, pg)
    if alternative == "less":
        return min(1.0, pl)
    return min(1.0, 2 * min(pg, pl))


def _tail_pvalue_exact(T: float, a: np.ndarray, N: int, n: int, alternative: str) -> float:
    """Exact permutation p-value for integer tail scores (small L): hypergeometric(s) x exact subset sums.

    counts[s, v] = number of s-subsets of the L scores with sum v (dynamic programming, O(L * s * sum)).
    """
    L = a.size
    ai = np.round(a).astype(np.int64)
    smax = min(L, n)
    top = int(np.sort(ai)[L - smax:].sum()) if smax else 0
    counts = np.zeros((smax + 1, top + 1))
    counts[0, 0] = 1.0
    for c in ai:
        if smax == 0:
            break
        counts[1:, c:] += counts[:-1, : top + 1 - c].copy()
    s = np.arange(max(0, n - (N - L)), smax + 1)
    w = _hypergeom_pmf(s, N, L, n)
    tot = counts[s].sum(axis=1)
    cum_ge = np.cumsum(counts[s][:, ::-1], axis=1)[:, ::-1] / tot[:, None]  # P(sum >= v | s)
    cum_le = np.cumsum(counts[s], axis=1) / tot[:, None]  # P(sum <= v | s)
    t = int(round(T))
    pg = float(np.sum(w * (cum_ge[:, t] if 0 <= t <= top else (1.0 if t < 0 else 0.0))))
    pl = float(np.sum(w * (cum_le[:, t] if 0 <= t <= top else (0.0 if t < 0 else 1.0))))
    if alternative == "greater":
        return min(1.0, pg)
    if alternative == "less":
        return min(1.0, pl)
    return min(1.0, 2 * min(pg, pl))


def _tail_pvalue_enumerated(T: float, scores: np.ndarray, n: int, alternative: str) -> float:
    """Exact permutation p-value: every n-subset of the N pooled scores (tiny N only)."""
    import itertools

    N = scores.size
    idx = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(N), n)), dtype=np.int64)
    sums = scores[idx.reshape(-1, n)].sum(axis=1) if n else np.zeros(1)
    eps = 1e-9 * max(1.0, abs(T))
    pg = float(np.mean(sums >= T - eps))
    pl = float(np.mean(sums <= T + eps))
    if alternative == "greater":
        return pg
    if alternative == "less":
        return pl
    return min(1.0, 2 * min(pg, pl))


def tail_rank_test(baseline: object, fault: object, q: float = 0.99, *, tail: float = 0.98,
                   alternative: str = "greater", ordered: bool = True) -> TailRankTest:
    """Linear rank test restricted to the pooled upper tail (above the ``tail`` quantile); see TailRankTest.

    ``alternative="greater"`` (default): the fault's upper tail is stochastically higher. ``q`` only sets
    the reported ``effect`` (ratio of q-quantiles). Cost: one np.partition of the pooled sample and a sort
    of its top ~(1 - tail) * N values (no full sort).

    The default ``tail=0.98`` averages the exceedance tests over quantile levels 0.98 .. 1, centred on
    p99. Measured at 1e5 samples per phase with the fault = baseline x 1.05: power 1.0 (lognormal,
    bimodal) and ~0.96 (Lomax, tail index 3) at the 5 % level, against ~0.9 for the single-threshold
    :func:`quantile_shift_test`; ``tail=0.97`` raises the Lomax power to ~0.99 at the cost of weighting
    p97..p99 more. ``ordered=False``: the samples carry no time order (pooled): treated as independent.
    """
    x = check_samples(baseline, "baseline", allow_empty=False)
    y = check_samples(fault, "fault", allow_empty=False)
    q = check_quantile(q)
    tail = check_quantile(tail)
    check_alternative(alternative)
    m, n = x.size, y.size
    N = m + n
    k = min(N, max(1, math.ceil((1.0 - tail) * N - 1e-9)))
    a, lab, t, sx, sy = _tail_scores(x, y, k, in_time=True)
    deps = (series_dependence(sx, "baseline tail scores", ordered=ordered),
            series_dependence(sy, "fault tail scores", ordered=ordered))
    del sx, sy
    T = float(a[lab].sum())
    tail_fault = int(np.count_nonzero(lab & (a > 0)))
    tail_baseline = int(np.count_nonzero(~lab & (a > 0)))
    # exact permutation moments of a linear rank statistic (scores 0 outside the tail; ties averaged)
    abar = float(a.sum()) / N  # mean score over all N pooled values (N - L of them score 0)
    ss = float(np.sum((a - abar) ** 2)) + (N - a.size) * abar * abar
    mean = n * abar
    var = m * n / (N * (N - 1)) * ss if N > 1 else 0.0
    sd = math.sqrt(max(var, 0.0))
    if a.size == N and np.ptp(a) == 0:  # every pooled value tied: all scores equal
        sd = 0.0
    bx = float(np.partition(x, _point_rank(m, q) - 1)[_point_rank(m, q) - 1])
    by = float(np.partition(y, _point_rank(n, q) - 1)[_point_rank(n, q) - 1])
    effect = by / bx if bx > 0 else math.nan
    if sd == 0.0:
        return TailRankTest(T, 1.0, alternative, 0.0, effect, q, tail, k, t, tail_baseline, tail_fault,
                            mean, 0.0, "none", "all tail scores tied: no rank information", deps)
    integer = bool(np.all(a == np.round(a)))
    if any(d.applied for d in deps):
        sd *= math.sqrt((m * deps[1].vif + n * deps[0].vif) / N)
        z = (T - mean) / sd
        cc = 0.5 / sd if integer else 0.0
        pg, pl = float(special.ndtr(-(z - cc))), float(special.ndtr(z + cc))
        p = {"greater": pg, "less": pl}.get(alternative, 2 * min(pg, pl))
        return TailRankTest(T, min(1.0, p), alternative, z, effect, q, tail, k, t, tail_baseline, tail_fault,
                            mean, sd, "dependence-normal", "tail scores dependent in time order: null variance "
                            "inflated", deps)
    z = (T - mean) / sd
    if integer and a.size <= _EXACT_TAIL:
        p, method = _tail_pvalue_exact(T, a, N, n, alternative), "exact"
    elif N <= 64 and math.comb(N, n) <= _EXACT_PERMUTATIONS:
        full = np.zeros(N)
        full[N - a.size:] = a
        p, method = _tail_pvalue_enumerated(T, full, n, alternative), "exact"
    else:
        p = _tail_pvalue_mixture(T, a, N, n, alternative, 0.5 if integer else 0.0)
        method = "hypergeometric-normal"
    return TailRankTest(T, p, alternative, z, effect, q, tail, k, t, tail_baseline, tail_fault, mean, sd,
                        method, "", deps)
