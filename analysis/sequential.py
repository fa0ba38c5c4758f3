"""Always-valid sequential tests for watching a running experiment (halt guards).

Mixture SPRT for a Bernoulli rate, H0: p <= p0 against H1: p > p0. For an alternative p1 > p0 the
likelihood ratio L_n(p1) = (p1/p0)^x ((1-p1)/(1-p0))^(n-x) is a non-negative supermartingale under every
p <= p0 (its one-step expectation p p1/p0 + (1-p)(1-p1)/(1-p0) is <= 1 there), and so is any mixture
M_n = sum_k w_k L_n(p1_k) with weights summing to 1. Ville's inequality gives
P(sup_n M_n >= 1/alpha) <= alpha: the guard may look after every batch, forever, and the probability of a
false alarm stays <= alpha. The mixture is over a fixed grid of alternatives p1 = p0 * r, r in
``DEFAULT_RATIOS`` (1.1x to 50x), so both small, long-lasting and large, sudden increases are caught.

Two monitors are built on it:
- :class:`ErrorRateMonitor`: errors / requests against a maximum error rate.
- :class:`QuantileExceedanceMonitor`: "is the q-quantile of latency above T?" is exactly "is
  P(latency > T) > 1 - q?", a Bernoulli rate of exceedances, so the same test applies, distribution-free.

Dependent streams (congestion episodes, error bursts)
-----------------------------------------------------
The supermartingale property needs each event to have probability <= p0 *given the past*. In an episode the
events cluster: a stream whose long-run rate is p0 has stretches far above it, and the plain mixture SPRT
breaches on the first one (measured: 75-100 % false alarms on Markov congestion episodes, AR(1) log latency
or bursty errors at the H0 boundary). With a variance inflation ``phi`` of the event count (``phi = 1`` for
independent events, see :mod:`chaosinject.analysis.dependence`) the monitors use the *tempered* likelihood
ratio ``L_n(p1)^(1/phi)``: each batch adds ``log L(batch) / phi`` to every alternative's log evidence. For a
count S of n events with variance ``phi n p0 (1 - p0)`` and the normal approximation, ``exp((S - n p0) log r /
phi - n p0 (r - 1 - log r) / phi)`` has expectation ``exp(n p0 (log^2 r / 2 + log r - r + 1) / phi) <= 1`` for
every ratio r >= 1: tempering by the inflation restores the supermartingale (for clusters of fixed size c,
``phi = c`` and it counts clusters instead of events). This is an approximation (normal block sums, an
estimated phi), so the false-alarm figures are measured (tests/unit/analysis/test_dependence_calibration.py,
bench/dependence_calibration.py), not proved.

``phi`` is estimated from the time order, never from the data it is applied to (each batch is tempered by
the estimate made before it, so the process stays predictable):

- ``prior_inflation``: from the baseline before monitoring starts (the halt guard's baseline phase; the
  quantile monitor's :meth:`QuantileExceedanceMonitor.from_baseline` takes it from the baseline's own
  q-exceedances, the error monitor from the baseline's per-request outcomes), by :func:`baseline_inflation`:
  the larger of the phase-length batch-means inflation and the largest one over time scales of 16 samples and
  up (:func:`chaosinject.analysis.burst_inflation`), since the evidence accumulates over every stretch and
  quasi-periodic bursts (GC-like pauses) inflate short stretches far more than whole-phase batches;
- optionally (``running=True``, off by default) a running estimate on the monitored stream: sequential
  batch means (blocks of at least 32 samples, the
  block length doubled and neighbours merged whenever 64 blocks are full, so 32-64 blocks at any length),
  with the mean squared successive difference of the block rates (a slow drift adds little; a step change
  still adds one large term); dependence is declared when its dispersion
  test rejects at 5 %, and then ``phi = VIF_hat (t_df / z)^2`` as in the verdict.

The inflation used is the larger of the two (never below 1). The running estimate is off by default because
a real breach looks like dependence: a step from no errors to all errors is one huge block difference, and
the inflation it produces slowed a halt from < 1 s to 9 s (tests/unit/test_experiment.py); and it helps
little: without a baseline prior it cut A/A false alarms on Markov episodes only from 59 % to 35 %. A
dependent stream can only be told from a breach once its dependence has been seen: with no baseline that
shows the episodes, the first episode of a stream at the H0 boundary may still halt it (the reason then says
the inflation was 1). So the halt guard's baseline should be long enough to hold several episodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaln, logsumexp

from ._types import ConfidenceInterval, InvalidInput
from ._validate import check_counts, check_samples
from .priors import RunningDependence, baseline_inflation

__all__ = [
    "DEFAULT_RATIOS",
    "SequentialProportionTest",
    "ErrorRateMonitor",
    "QuantileExceedanceMonitor",
    "mixture_log_evidence",
    "proportion_confidence_sequence",
]

DEFAULT_RATIOS: tuple[float, ...] = (1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)


def _grid(p0: float, ratios: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p1 = np.array([p0 * r for r in ratios if p0 * r < 1.0], dtype=np.float64)
    if p1.size == 0:
        p1 = np.array([(1.0 + p0) / 2])
    return p1, np.full(p1.size, -math.log(p1.size))


def mixture_log_evidence(events: np.ndarray, trials: np.ndarray, p0: float,
                         ratios: Sequence[float] = DEFAULT_RATIOS, inflation: object = 1.0) -> np.ndarray:
    """log M for arrays of cumulative (events, trials): vectorised, for simulations and plots. ``inflation``
    (a constant per stream, broadcast against ``events``): the tempered evidence of a
    :class:`SequentialProportionTest` with that ``prior_inflation`` (see the module docstring)."""
    p1, logw = _grid(p0, ratios)
    x = np.asarray(events, dtype=np.float64)[..., None]
    n = np.asarray(trials, dtype=np.float64)[..., None]
    ll = x * np.log(p1 / p0) + (n - x) * np.log((1 - p1) / (1 - p0))
    return logsumexp(ll / np.asarray(inflation, dtype=np.float64)[..., None] + logw, axis=-1)


def proportion_confidence_sequence(events: int, trials: int, alpha: float = 0.01,
                                   prior: tuple[float, float] = (0.5, 0.5)) -> ConfidenceInterval:
    """Always-valid (time-uniform) confidence interval for a Bernoulli rate after ``events`` of ``trials``.

    Robbins' beta-binomial mixture: for each p, M_n(p) = B(x+a, n-x+b) / B(a, b) / (p^x (1-p)^(n-x)) is a
    martingale under p, so by Ville the set {p : M_n(p) < 1/alpha} contains the true rate at every n
    simultaneously with probability >= 1 - alpha. A halt guard may recompute it after every batch.
    """
    x, n = check_counts(events, trials)
    if not (0.0 < float(alpha) < 1.0):
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha!r}")
    a, b = float(prior[0]), float(prior[1])
    if not (a > 0 and b > 0):
        raise InvalidInput(f"prior parameters must be positive, got {prior!r}")
    if n == 0:
        return ConfidenceInterval(0.0, 1.0)
    c = -math.log(alpha)
    mix = float(betaln(x + a, n - x + b) - betaln(a, b))

    def f(p: float) -> float:  # log M_n(p) - log(1/alpha); convex in p, minimal at x/n
        ll = (x * math.log(p) if x else 0.0) + ((n - x) * math.log1p(-p) if n - x else 0.0)
        return mix - ll - c

    phat = x / n
    eps = 1e-15
    if x == 0:
        low = 0.0
    else:
        lo_end = eps
        low = 0.0 if f(lo_end) < 0 else brentq(f, lo_end, phat, xtol=1e-15, rtol=1e-12)
    if x == n:
        high = 1.0
    else:
        hi_end = 1.0 - eps
        high = 1.0 if f(hi_end) < 0 else brentq(f, phat if phat > 0 else eps, hi_end, xtol=1e-15, rtol=1e-12)
    return ConfidenceInterval(float(low), float(high))


@dataclass
class SequentialProportionTest:
    """Stateful mixture SPRT of H0: rate <= ``p0``; feed batches with :meth:`update`, then ask :attr:`breached`.

    ``alpha`` bounds the probability of ever breaching when the true rate is <= p0, however often one looks
    (exactly for independent events; for dependent ones approximately, see the module docstring).
    Once breached it stays breached (the halt decision is final).

    ``dependence`` (default True): each batch's log likelihood ratio is divided by the inflation
    ``max(prior_inflation, running estimate if running)`` known before the batch (:class:`RunningDependence`);
    ``dependence=False``: the plain mixture SPRT for events known to be independent. :attr:`inflation` is the current one.
    """

    p0: float
    alpha: float = 0.01
    ratios: Sequence[float] = DEFAULT_RATIOS
    events: int = 0
    trials: int = 0
    max_log_evidence: float = 0.0
    breached_at_trials: int | None = None
    dependence: bool = True
    prior_inflation: float = 1.0
    prior_text: str = ""
    running: bool = False
    _p1: np.ndarray = field(init=False, repr=False)
    _logw: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (0.0 < float(self.p0) < 1.0):
            raise InvalidInput(f"p0 must be in (0, 1), got {self.p0!r}")
        if not (0.0 < float(self.alpha) < 1.0):
            raise InvalidInput(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not (math.isfinite(float(self.prior_inflation)) and float(self.prior_inflation) >= 1.0):
            raise InvalidInput(f"prior_inflation must be a finite number >= 1, got {self.prior_inflation!r}")
        self._p1, self._logw = _grid(float(self.p0), self.ratios)
        self._a = np.log(self._p1 / self.p0)
        self._b = np.log((1 - self._p1) / (1 - self.p0))
        self._running = RunningDependence()
        self._inflation = float(self.prior_inflation) if self.dependence else 1.0
        self._ll = (self.events * self._a + (self.trials - self.events) * self._b) / self._inflation
        self.max_inflation = self._inflation

    @property
    def threshold(self) -> float:
        """log(1/alpha): the evidence level at which the test breaches."""
        return -math.log(self.alpha)

    @property
    def inflation(self) -> float:
        """The variance inflation the next batch is tempered by (1: independent events)."""
        return self._inflation

    @property
    def log_evidence(self) -> float:
        """Current log of the (tempered) mixture likelihood ratio (log e-value)."""
        v = self._logw + self._ll   # logsumexp by hand: scipy's costs ~0.5 ms a look
        mx = float(v.max())
        return mx + math.log(float(np.exp(v - mx).sum()))

    @property
    def pvalue(self) -> float:
        """Always-valid p-value: 1 / (largest evidence seen so far), capped at 1."""
        return float(min(1.0, math.exp(-self.max_log_evidence)))

    @property
    def breached(self) -> bool:
        return self.breached_at_trials is not None

    @property
    def rate(self) -> float:
        return self.events / self.trials if self.trials else math.nan

    def update(self, events: int, trials: int, indicator: np.ndarray | None = None) -> bool:
        """Add a batch of ``events`` out of ``trials`` (``indicator``: the batch's 0/1 events in time order, for
        exact dependence blocks); returns :attr:`breached`."""
        x, n = check_counts(events, trials)
        self.events += x
        self.trials += n
        self._ll += (x * self._a + (n - x) * self._b) / self._inflation
        le = self.log_evidence
        self.max_log_evidence = max(self.max_log_evidence, le)
        if self.breached_at_trials is None and le >= self.threshold:
            self.breached_at_trials = self.trials
        if self.dependence and self.running:   # the estimate including this batch tempers only the next ones
            if indicator is not None:
                self._running.add_events(indicator)
            else:
                self._running.add_counts(x, n)
            self._inflation = max(float(self.prior_inflation), self._running.inflation())
            self.max_inflation = max(self.max_inflation, self._inflation)
        return self.breached

    def confidence_sequence(self, alpha: float | None = None) -> ConfidenceInterval:
        """Always-valid interval for the current rate (see :func:`proportion_confidence_sequence`; for
        independent events: with dependence it is too narrow by about sqrt(:attr:`inflation`))."""
        return proportion_confidence_sequence(self.events, self.trials, self.alpha if alpha is None else alpha)

    def dependence_text(self) -> str:
        if not self.dependence:
            return "events assumed independent"
        prior = f"from the baseline {self.prior_inflation:.3g}" + (f" ({self.prior_text})" if self.prior_text else "")
        run = (f", running {self._running.inflation():.3g} over {self._running.blocks} time blocks" if self.running
               else "")
        if self._inflation > 1.0:
            return (f"evidence tempered for dependence in time order: variance inflation {self._inflation:.3g} "
                    f"(effective n {self.trials / self._inflation:.0f} of {self.trials}; {prior}{run})")
        return f"no dependence found in time order (variance inflation 1 {prior}{run})"

    def reason(self) -> str:
        state = "BREACHED" if self.breached else "not breached"
        return (f"{state}: {self.events}/{self.trials} events (rate {self.rate:.4g}) vs allowed {self.p0:.4g}; "
                f"evidence {math.exp(min(self.log_evidence, 700)):.3g} vs threshold {1 / self.alpha:.3g} "
                f"(false-alarm bound {self.alpha:.2%} under continuous monitoring); {self.dependence_text()}")


class ErrorRateMonitor(SequentialProportionTest):
    """Halts when the error rate is, with always-valid confidence, above ``max_error_rate``.

    ``baseline_ok``: the baseline's request outcomes in time order (True = succeeded): the dependence of its
    errors (:func:`baseline_inflation`) is the prior inflation of the tempered test.
    """

    def __init__(self, max_error_rate: float, alpha: float = 0.01, ratios: Sequence[float] = DEFAULT_RATIOS,
                 *, baseline_ok: object = None, dependence: bool = True):
        prior, text = 1.0, ""
        if baseline_ok is not None and dependence:
            b = np.asarray(baseline_ok)
            if b.dtype != bool:
                raise InvalidInput(f"baseline_ok must be a boolean array, got dtype {b.dtype}")
            prior, text = baseline_inflation(~b, "baseline errors")
        super().__init__(p0=max_error_rate, alpha=alpha, ratios=ratios, dependence=dependence,
                         prior_inflation=prior, prior_text=text)

    def update_ok(self, ok: object) -> bool:
        """Feed a boolean array of request outcomes (True = succeeded), in time order."""
        a = np.asarray(ok)
        if a.dtype != bool:
            raise InvalidInput(f"ok must be a boolean array, got dtype {a.dtype}")
        return self.update(int(a.size - np.count_nonzero(a)), int(a.size), ~a.ravel())


class QuantileExceedanceMonitor(SequentialProportionTest):
    """Halts when the ``quantile`` of latency is, with always-valid confidence, above ``threshold``.

    The q-quantile exceeds T exactly when P(latency > T) > 1 - q; each sample is a Bernoulli exceedance.
    """

    def __init__(self, threshold: float, quantile: float = 0.99, alpha: float = 0.01,
                 ratios: Sequence[float] = DEFAULT_RATIOS, *, prior_inflation: float = 1.0,
                 prior_text: str = "", dependence: bool = True):
        if not (0.0 < float(quantile) < 1.0):
            raise InvalidInput(f"quantile must be in (0, 1), got {quantile!r}")
        if not math.isfinite(float(threshold)):
            raise InvalidInput(f"threshold must be finite, got {threshold!r}")
        self.latency_threshold = float(threshold)
        self.quantile = float(quantile)
        super().__init__(p0=1.0 - float(quantile), alpha=alpha, ratios=ratios, dependence=dependence,
                         prior_inflation=prior_inflation if dependence else 1.0, prior_text=prior_text)

    @classmethod
    def from_baseline(cls, baseline: object, factor: float = 2.0, quantile: float = 0.99, alpha: float = 0.01,
                      confidence: float = 0.95, *, ordered: bool = True,
                      dependence: bool = True) -> "QuantileExceedanceMonitor":
        """Threshold = ``factor`` x the upper confidence bound of the baseline quantile (runbook: p99 > 2x
        baseline). Using the upper bound keeps the false-alarm guarantee despite baseline sampling error
        (up to the bound's own 2.5 % error); with too few baseline samples this raises InvalidInput.

        ``ordered`` (the baseline in time order): the dependence of its own q-exceedances is the prior inflation
        (and widens the baseline's bound, as in the verdict); ``ordered=False`` (pooled baseline): no prior,
        which the reason says."""
        from .dependence import indicator_dependence
        from .quantiles import quantile_ci, quantile_ci_dependent

        base = check_samples(baseline, "baseline")
        est = quantile_ci(base, quantile, confidence)
        if est.interval is None:
            raise InvalidInput(f"baseline cannot define a threshold: {est.reason}")
        prior, text = 1.0, "baseline without time order: dependence not estimated"
        if dependence and ordered:
            d = indicator_dependence(base > est.estimate, f"baseline p{quantile * 100:g} exceedances")
            prior, text = baseline_inflation(base > est.estimate, d.what, d)
            if d.applied:
                wide = quantile_ci_dependent(base, quantile, confidence, d.vif, est.estimate)
                if wide.interval is None:   # a guard stays on: the unwidened bound, and the reason says so
                    text += f"; threshold from the unwidened bound: {wide.reason}"
                else:
                    est = wide
        return cls(factor * est.interval.high, quantile, alpha, prior_inflation=prior, prior_text=text,
                   dependence=dependence)

    def update_latencies(self, latencies: object) -> bool:
        """Feed a batch of latency samples in time order (NaN/inf raise InvalidInput)."""
        a = check_samples(latencies, "latencies")
        ind = a > self.latency_threshold
        return self.update(int(np.count_nonzero(ind)), int(a.size), ind)
