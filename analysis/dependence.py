"""Serial dependence of a phase's samples, from their time order: effective sample size by batch means.

Latency samples in time order are not independent (congestion episodes, GC pauses, reconnect storms), and
errors come in bursts. Every interval the verdict uses is a statement about a proportion of events: the
order-statistic interval of a q-quantile counts the samples above it, an error rate counts failures. So the
dependence that matters is that of the event indicator ``I_t`` (sample t above the estimated q-quantile, or
request t failed), and it enters through one number, the variance inflation

    VIF = n * Var(mean of I) / (p (1 - p))    (1 for independent samples)

which makes the phase worth ``n_eff = n / VIF`` independent samples.

Estimate (batch means): the series is cut, in time order, into B consecutive batches of m samples
(B = clamp(round(n^(1/3) / 2), 8, 40), m = n // B, the last n - B m samples left out of the estimate only);
``VIF_hat = m * s^2(batch means) / (p (1 - p))``. Under independence (B - 1) VIF_hat is approximately
chi-square with B - 1 degrees of freedom (the Poisson dispersion test when events are rare): dependence is
declared when that test rejects at ``DEPENDENCE_ALPHA`` (5 %), and then the intervals use

    VIF_used = VIF_hat * (t_{B-1} / z)^2

(the batch-means t interval: the estimate of VIF has only B - 1 degrees of freedom). Otherwise the samples are
treated as independent and nothing changes (independent data keep the exact order-statistic and
Clopper-Pearson intervals, except in the 5 % of phases where the test falsely fires and widens them).
The widened q-quantile interval's lower end is then re-checked with the inflation of its own exceedances
(:func:`chaosinject.analysis.quantiles.quantile_ci_dependent`): a lower threshold counts more of each episode.

Rank tests (:func:`chaosinject.analysis.tail_rank_test`) sum real-valued scores, not 0/1 events:
:func:`series_dependence` is the same estimate and test for any series, with the series' variance in place of
``p (1 - p)`` (``events``: the nonzero scores, ``episode``: the mean run of consecutive nonzero scores).

The halt guard's sequential monitors need more than the phase-length inflation: their evidence accumulates
over every stretch of the stream, so what must be bounded is the inflation at *every* time scale. Quasi-periodic
bursts (GC-like pauses of 30 samples about every 1,000) cluster events strongly over a few hundred samples but
barely vary over 1,400-sample batches (the count of pauses per batch is nearly constant): the phase-length
estimate (~2.5) is far below the clusters' local inflation (~7), and a monitor tempered by it false-alarmed in
7.8 % of streams. :func:`burst_inflation` is the largest batch-means inflation over batch lengths 16, 32, 64, ...
(while at least 8 batches fit), each tested against independence at ``alpha / scales`` (Bonferroni: independent
events keep inflation 1 in >= 95 % of baselines) and widened by ``(t_{B-1} / z)^2`` as above.

The absolute error-rate interval of a phase whose errors are dependent comes from the failures' *episodes*
(:func:`episode_rate_ci`), not from the batch-means inflation: with bursts of ~20 failures at a 1 % rate a
20,000-request phase holds only ~10 episodes, and 14 batches then estimate the inflation so noisily that it is
low exactly when the phase saw few or short bursts (a low rate): the interval on effective counts covered the
true rate 92-94 % of the time, missing it almost only from below. Failures less than a tenth of the mean spacing
``n / errors`` apart join one episode; the rate is (episodes per request) x (mean episode size), the episode
count taken as Poisson (mid-p interval), the mean size from a gamma law with the sizes' own coefficient of
variation (widened ``(t_{K-1} / z)^2`` as above, for K episodes), the two combined on the log scale by MOVER.
With fewer than 2 episodes there is nothing to estimate a size's spread from: the verdict keeps the batch-means
interval's lower end there (a phase whose failures are one block stays violated when its block is), but with one
episode the upper end is at least the episode one with the size's cv taken as 1 (bursts that end with a constant
chance per request: geometric sizes). Batch means alone put it at ~7x the one episode's size, so a phase that
saw one short burst missed from below (~4 bursts of ~50 per phase: K = 1 in 7 % of phases, half of them missed).

Samples that carry no time order (pooled from several sources) cannot be tested: :func:`indicator_dependence`
with ``ordered=False`` says so in its text, and the verdict treats them as independent *with that caveat shown*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from ._types import ConfidenceInterval
from ._validate import check_confidence

__all__ = ["DEPENDENCE_ALPHA", "BurstInflation", "Dependence", "EpisodeInterval", "batch_count", "burst_inflation",
           "episode_rate_ci", "indicator_dependence", "series_dependence"]

DEPENDENCE_ALPHA = 0.05
_MIN_BATCH = 4  # fewer samples per batch than this: too short to estimate anything
_BURST_MIN_LEN = 16      # shortest batch of burst_inflation
_BURST_MIN_BATCHES = 8   # longest batch of burst_inflation: at least this many batches fit


def batch_count(n: int) -> int:
    """Number of time batches used for n samples (see the module docstring)."""
    return int(min(40, max(8, round(n ** (1.0 / 3.0) / 2.0))))


@dataclass(frozen=True, slots=True)
class Dependence:
    """Dependence of one event indicator (``what``: e.g. "p99 exceedances", "errors") in time order.

    ``vif``: the variance inflation used (1.0 unless ``applied``); ``vif_estimate``: the batch-means estimate;
    ``pvalue``: of the dispersion test against independence; ``applied``: intervals widened for dependence;
    ``lag1``: lag-1 autocorrelation of the indicator; ``episode``: mean length of runs of consecutive events;
    ``ordered``: False when the samples carry no time order (nothing could be estimated).
    """

    what: str
    n: int
    events: int
    vif: float
    vif_estimate: float
    pvalue: float
    applied: bool
    batches: int
    batch_size: int
    lag1: float
    episode: float
    ordered: bool = True

    @property
    def n_eff(self) -> float:
        return self.n / self.vif

    @property
    def width_factor(self) -> float:
        """How much wider the intervals are than under independence (sqrt of the inflation)."""
        return math.sqrt(self.vif)

    def text(self) -> str:
        if not self.ordered:
            return (f"{self.what}: n={self.n}, samples carry no time order (pooled): dependence cannot be "
                    f"estimated, treated as independent (intervals too narrow if they are not)")
        if self.batches == 0:
            return f"{self.what}: n={self.n}, too few samples to estimate dependence: treated as independent"
        ep = f", episodes of {self.episode:.3g} consecutive" if self.events else ""
        base = (f"{self.what}: n={self.n}, {self.events} events{ep}, lag-1 autocorrelation {self.lag1:.2f}, "
                f"variance inflation {self.vif_estimate:.2f} over {self.batches} time batches "
                f"(independence test p={self.pvalue:.2g})")
        if self.applied:
            return (f"{base}: DEPENDENT, effective n={self.n_eff:.0f}; intervals widened "
                    f"{self.width_factor:.2f}x for dependence")
        return f"{base}: no significant dependence, effective n=n"

    def to_record(self) -> dict:
        return {"what": self.what, "n": self.n, "n_eff": self.n_eff, "events": self.events, "vif": self.vif,
                "vif_estimate": self.vif_estimate, "pvalue": self.pvalue, "applied": self.applied,
                "batches": self.batches, "batch_size": self.batch_size, "lag1": self.lag1,
                "episode": self.episode, "ordered": self.ordered, "text": self.text()}


def _lag1_and_episode(ind: np.ndarray, p: float) -> tuple[float, float]:
    n = ind.size
    k = int(np.count_nonzero(ind))
    if n < 2 or k == 0 or k == n:
        return 0.0, (float(k) if k else 0.0)
    both = int(np.count_nonzero(ind[1:] & ind[:-1]))
    # lag-1 autocorrelation of a 0/1 series from the count of adjacent event pairs
    c1 = both / (n - 1) - p * p
    lag1 = c1 / (p * (1 - p))
    starts = k - both  # runs of events: each run has one event not preceded by an event
    return float(lag1), k / max(starts, 1)


def indicator_dependence(ind: object, what: str, *, ordered: bool = True,
                         alpha: float = DEPENDENCE_ALPHA) -> Dependence:
    """Batch-means dependence of a 0/1 event series in time order (see the module docstring)."""
    a = np.asarray(ind, dtype=bool).ravel()
    n = int(a.size)
    k = int(np.count_nonzero(a))
    if not ordered:
        return Dependence(what, n, k, 1.0, math.nan, math.nan, False, 0, 0, math.nan, math.nan, False)
    p = k / n if n else 0.0
    lag1, episode = _lag1_and_episode(a, p)
    B = batch_count(n)
    m = n // B if n else 0
    if m < _MIN_BATCH:
        return Dependence(what, n, k, 1.0, math.nan, math.nan, False, 0, 0, lag1, episode)
    if k == 0 or k == n:
        return Dependence(what, n, k, 1.0, 1.0, 1.0, False, B, m, lag1, episode)
    counts = np.add.reduceat(a[: B * m].astype(np.int32), np.arange(0, B * m, m)).astype(np.float64)
    means = counts / m
    vif_hat = float(m * means.var(ddof=1) / (p * (1 - p)))
    return _tested(what, n, k, vif_hat, B, m, lag1, episode, alpha)


def series_dependence(values: object, what: str, *, ordered: bool = True,
                      alpha: float = DEPENDENCE_ALPHA) -> Dependence:
    """Batch-means dependence of a real-valued series in time order (e.g. a rank test's scores, 0 for most
    samples): ``VIF_hat = m * s^2(batch means) / s^2(values)``, the same test and widening as
    :func:`indicator_dependence` (which it equals on a 0/1 series)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n = int(v.size)
    nz = v != 0
    k = int(np.count_nonzero(nz))
    if not ordered:
        return Dependence(what, n, k, 1.0, math.nan, math.nan, False, 0, 0, math.nan, math.nan, False)
    _, episode = _lag1_and_episode(nz, k / n if n else 0.0)
    var = float(v.var()) if n else 0.0
    lag1 = 0.0
    if n >= 2 and var > 0:
        c = v - v.mean()
        lag1 = float(np.dot(c[1:], c[:-1]) / (n - 1) / var)
    B = batch_count(n)
    m = n // B if n else 0
    if m < _MIN_BATCH:
        return Dependence(what, n, k, 1.0, math.nan, math.nan, False, 0, 0, lag1, episode)
    if var == 0.0:
        return Dependence(what, n, k, 1.0, 1.0, 1.0, False, B, m, lag1, episode)
    means = np.add.reduceat(v[: B * m], np.arange(0, B * m, m)) / m
    vif_hat = float(m * means.var(ddof=1) / var)
    return _tested(what, n, k, vif_hat, B, m, lag1, episode, alpha)


def _tested(what: str, n: int, k: int, vif_hat: float, B: int, m: int, lag1: float, episode: float,
            alpha: float) -> Dependence:
    """The batch-means test of ``vif_hat`` over ``B`` batches (chi-square, B - 1 degrees of freedom) and, when
    it rejects at ``alpha`` with an inflation, the widening by ``vif_hat * (t_{B-1} / z)^2`` at 97.5 %."""
    pvalue = float(stats.chi2.sf((B - 1) * vif_hat, B - 1))
    applied = pvalue < alpha and vif_hat > 1.0
    vif = 1.0
    if applied:
        z = float(special.ndtri(0.975))
        t = float(stats.t.ppf(0.975, B - 1))
        vif = vif_hat * (t / z) ** 2
    return Dependence(what, n, k, vif, vif_hat, pvalue, applied, B, m, lag1, episode)


@dataclass(frozen=True, slots=True)
class BurstInflation:
    """Largest variance inflation of an event series over time scales (:func:`burst_inflation`).

    ``inflation``: to temper with (1.0 unless some scale's test rejected); ``batch_len``: the scale it came
    from (0: none rejected); ``vif_estimate`` / ``pvalue``: that scale's estimate and test (the largest
    estimate over scales, and the smallest p-value, when none rejected); ``scales``: how many were tested.
    """

    inflation: float
    batch_len: int
    vif_estimate: float
    pvalue: float
    scales: int

    def text(self) -> str:
        if self.scales == 0:
            return "too few samples for the burst scales"
        if self.batch_len == 0:
            return (f"no burst scale significant (largest estimate {self.vif_estimate:.3g} over {self.scales} "
                    f"batch lengths, p>={self.pvalue:.2g})")
        return (f"bursts: inflation {self.vif_estimate:.3g} at batch length {self.batch_len} "
                f"(p={self.pvalue:.2g}, {self.scales} lengths tested)")


def burst_inflation(ind: object, alpha: float = DEPENDENCE_ALPHA) -> BurstInflation:
    """The largest batch-means inflation of a 0/1 event series in time order over batch lengths 16, 32, 64, ...
    with at least 8 batches (see the module docstring); for the sequential monitors' prior."""
    a = np.asarray(ind, dtype=bool).ravel()
    n = int(a.size)
    lengths = []
    m = _BURST_MIN_LEN
    while n // m >= _BURST_MIN_BATCHES:
        lengths.append(m)
        m *= 2
    k = int(np.count_nonzero(a))
    if not lengths or k == 0 or k == n:
        return BurstInflation(1.0, 0, 1.0 if lengths else math.nan, 1.0 if lengths else math.nan, len(lengths))
    p = k / n
    z = float(special.ndtri(0.975))
    # counts of the shortest batches once (from the events' positions: cheap when events are rare); each longer
    # length sums neighbours, dropping an odd last batch
    B0 = n // lengths[0]
    pos = np.flatnonzero(a[: B0 * lengths[0]])
    counts = np.bincount(pos // lengths[0], minlength=B0).astype(np.float64)
    best = BurstInflation(1.0, 0, 0.0, 1.0, len(lengths))
    top_est, low_p = 0.0, 1.0
    for m in lengths:
        B = counts.size
        vif_hat = float(counts.var(ddof=1) / (m * p * (1 - p)))
        pvalue = float(special.chdtrc(B - 1, (B - 1) * vif_hat))
        top_est, low_p = max(top_est, vif_hat), min(low_p, pvalue)
        if pvalue < alpha / len(lengths) and vif_hat > 1.0:
            used = vif_hat * (float(special.stdtrit(B - 1, 0.975)) / z) ** 2
            if used > best.inflation:
                best = BurstInflation(used, m, vif_hat, pvalue, len(lengths))
        counts = counts[: counts.size // 2 * 2].reshape(-1, 2).sum(axis=1)
    if best.batch_len == 0:
        return BurstInflation(1.0, 0, top_est, low_p, len(lengths))
    return best


@dataclass(frozen=True, slots=True)
class EpisodeInterval:
    """Interval of an event rate (errors per request) from the events' episodes in time order
    (:func:`episode_rate_ci`). ``episodes``: K, events less than ``gap`` non-events apart joined;
    ``mean_size``: events per episode; ``interval``: None with fewer than 2 episodes (no size spread to
    estimate); ``high``: the upper end of the rate, that of ``interval`` with 2 or more episodes and, with one,
    from a size of cv 1 (nan with none); ``n_eff``: the number of independent requests a binomial (Wald)
    interval of this width needs."""

    n: int
    events: int
    episodes: int
    mean_size: float
    gap: int
    interval: ConfidenceInterval | None
    confidence: float
    high: float = math.nan

    @property
    def rate(self) -> float:
        return self.events / self.n if self.n else math.nan

    @property
    def n_eff(self) -> float:
        if self.interval is None or self.n == 0:
            return math.nan
        p, w = self.rate, self.interval.high - self.interval.low
        z = float(special.ndtri((1 + self.confidence) / 2))
        return min(float(self.n), p * (1 - p) * (2 * z / w) ** 2) if w > 0 else float(self.n)

    def text(self) -> str:
        if self.interval is None and self.episodes == 1:
            return (f"{self.events} events in one episode (events less than {self.gap} requests apart joined): "
                    f"no size spread to estimate, upper end at least {self.high:.3%} (episode sizes taken as "
                    f"geometric, cv 1)")
        if self.interval is None:
            return (f"{self.events} events in {self.episodes} episode(s) (events less than {self.gap} requests "
                    f"apart joined): too few episodes for an episode interval")
        return (f"interval from {self.episodes} episodes of {self.mean_size:.3g} failures on average (failures "
                f"less than {self.gap} requests apart joined): episode rate x mean episode size")


def _poisson_midp(k: int, alpha: float) -> tuple[float, float]:
    """Mid-p interval of a Poisson mean from a count k >= 1: P(X > k) + P(X = k) / 2 = alpha / 2 at the lower
    end, P(X < k) + P(X = k) / 2 = alpha / 2 at the upper one (inside the exact Garwood interval, which is
    conservative for a discrete count: ~97 % at k ~ 10)."""
    g_lo, g_hi = float(special.gammaincinv(k, alpha / 2)), float(special.gammaincinv(k + 1, 1 - alpha / 2))

    def mid(mu: float) -> float:   # P(X < k) + P(X = k) / 2
        return 0.5 * (float(special.pdtr(k, mu)) + float(special.pdtr(k - 1, mu)))

    return (optimize.brentq(lambda mu: 1.0 - mid(mu) - alpha / 2, g_lo, k, xtol=1e-10 * k),
            optimize.brentq(lambda mu: mid(mu) - alpha / 2, k, g_hi, xtol=1e-10 * k))


def episode_rate_ci(ind: object, confidence: float = 0.95, *, gap: int | None = None) -> EpisodeInterval:
    """Confidence interval of the rate of a 0/1 event series from its episodes (see the module docstring).

    ``gap``: events less than this many non-events apart belong to one episode; by default a tenth of the
    mean spacing, ``ceil(0.1 n / events)``. The interval is (episodes / n) x (mean episode size), MOVER on
    the log scale of the mid-p Poisson interval of the episode count and the gamma interval of the mean size (shape
    ``K / cv^2``, the sizes' squared coefficient of variation widened by ``(t_{K-1} / z)^2``), clipped to [0, 1].
    With one episode only the upper end (``high``), from cv^2 = 1."""
    a = np.asarray(ind, dtype=bool).ravel()
    conf = check_confidence(confidence)
    n = int(a.size)
    pos = np.flatnonzero(a)
    k = int(pos.size)
    if gap is None:
        gap = int(math.ceil(0.1 * n / k)) if k else 1
    if k == 0:
        return EpisodeInterval(n, 0, 0, math.nan, gap, None, conf)
    new = np.empty(k, dtype=bool)
    new[0] = True
    new[1:] = np.diff(pos) > gap   # more than ``gap`` - 1 non-events between them: a new episode
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, k)).astype(np.float64)
    K = int(starts.size)
    mean = float(sizes.mean())
    alpha = 1.0 - conf
    k_lo, k_hi = _poisson_midp(K, alpha)
    # mean size: gamma law with the sizes' cv^2, widened for its K - 1 degrees of freedom; sizes are >= 1.
    # One size has no spread: cv^2 = 1 (geometric sizes), for the upper end only
    cv2 = float(sizes.var(ddof=1)) / (mean * mean) if K > 1 else 1.0
    if cv2 > 0.0:
        if K > 1:
            cv2 *= (float(special.stdtrit(K - 1, 1 - alpha / 2)) / float(special.ndtri(1 - alpha / 2))) ** 2
        shape = K / cv2
        m_lo = max(1.0, mean * shape / float(special.gammaincinv(shape, 1 - alpha / 2)))
        m_hi = mean * shape / float(special.gammaincinv(shape, alpha / 2))
    else:
        m_lo = m_hi = mean
    lk, lm = math.log(K), math.log(mean)
    lo = lk + lm - math.hypot(lk - math.log(k_lo), lm - math.log(min(m_lo, mean)))
    hi = lk + lm + math.hypot(math.log(k_hi) - lk, math.log(max(m_hi, mean)) - lm)
    rate = k / n
    high = min(1.0, max(rate, math.exp(hi) / n))
    if K < 2:
        return EpisodeInterval(n, k, K, mean, gap, None, conf, high)
    ci = ConfidenceInterval(max(0.0, min(rate, math.exp(lo) / n)), high)
    return EpisodeInterval(n, k, K, mean, gap, ci, conf, high)
