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
                         ratios: Sequence[float] = DEFAULT_RATIOS) -> np.ndarray:
    """log M for arrays of cumulative (events, trials): vectorised, for simulations and plots."""
    p1, logw = _grid(p0, ratios)
    x = np.asarray(events, dtype=np.float64)[..., None]
    n = np.asarray(trials, dtype=np.float64)[..., None]
    ll = x * np.log(p1 / p0) + (n - x) * np.log((1 - p1) / (1 - p0))
    return logsumexp(ll + logw, axis=-1)


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

    ``alpha`` bounds the probability of ever breaching when the true rate is <= p0, however often one looks.
    Once breached it stays breached (the halt decision is final).
    """

    p0: float
    alpha: float = 0.01
    ratios: Sequence[float] = DEFAULT_RATIOS
    events: int = 0
    trials: int = 0
    max_log_evidence: float = 0.0
    breached_at_trials: int | None = None
    _p1: np.ndarray = field(init=False, repr=False)
    _logw: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (0.0 < float(self.p0) < 1.0):
            raise InvalidInput(f"p0 must be in (0, 1), got {self.p0!r}")
        if not (0.0 < float(self.alpha) < 1.0):
            raise InvalidInput(f"alpha must be in (0, 1), got {self.alpha!r}")
        self._p1, self._logw = _grid(float(self.p0), self.ratios)
        self._a = np.log(self._p1 / self.p0)
        self._b = np.log((1 - self._p1) / (1 - self.p0))

    @property
    def threshold(self) -> float:
        """log(1/alpha): the evidence level at which the test breaches."""
        return -math.log(self.alpha)

    @property
    def log_evidence(self) -> float:
        """Current log of the mixture likelihood ratio (log e-value)."""
        return float(logsumexp(self._logw + self.events * self._a + (self.trials - self.events) * self._b))

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

    def update(self, events: int, trials: int) -> bool:
        """Add a batch of ``events`` out of ``trials``; returns :attr:`breached`."""
        x, n = check_counts(events, trials)
        self.events += x
        self.trials += n
        le = self.log_evidence
        self.max_log_evidence = max(self.max_log_evidence, le)
        if self.breached_at_trials is None and le >= self.threshold:
            self.breached_at_trials = self.trials
        return self.breached

    def confidence_sequence(self, alpha: float | None = None) -> ConfidenceInterval:
        """Always-valid interval for the current rate (see :func:`proportion_confidence_sequence`)."""
        return proportion_confidence_sequence(self.events, self.trials, self.alpha if alpha is None else alpha)

    def reason(self) -> str:
        state = "BREACHED" if self.breached else "not breached"
        return (f"{state}: {self.events}/{self.trials} events (rate {self.rate:.4g}) vs allowed {self.p0:.4g}; "
                f"evidence {math.exp(min(self.log_evidence, 700)):.3g} vs threshold {1 / self.alpha:.3g} "
                f"(false-alarm bound {self.alpha:.2%} under continuous monitoring)")


class ErrorRateMonitor(SequentialProportionTest):
    """Halts when the error rate is, with always-valid confidence, above ``max_error_rate``."""

    def __init__(self, max_error_rate: float, alpha: float = 0.01, ratios: Sequence[float] = DEFAULT_RATIOS):
        super().__init__(p0=max_error_rate, alpha=alpha, ratios=ratios)

    def update_ok(self, ok: object) -> bool:
        """Feed a boolean array of request outcomes (True = succeeded)."""
        a = np.asarray(ok)
        if a.dtype != bool:
            raise InvalidInput(f"ok must be a boolean array, got dtype {a.dtype}")
        return self.update(int(a.size - np.count_nonzero(a)), int(a.size))


class QuantileExceedanceMonitor(SequentialProportionTest):
    """Halts when the ``quantile`` of latency is, with always-valid confidence, above ``threshold``.

    The q-quantile exceeds T exactly when P(latency > T) > 1 - q; each sample is a Bernoulli exceedance.
    """

    def __init__(self, threshold: float, quantile: float = 0.99, alpha: float = 0.01,
                 ratios: Sequence[float] = DEFAULT_RATIOS):
        if not (0.0 < float(quantile) < 1.0):
            raise InvalidInput(f"quantile must be in (0, 1), got {quantile!r}")
        if not math.isfinite(float(threshold)):
            raise InvalidInput(f"threshold must be finite, got {threshold!r}")
        self.latency_threshold = float(threshold)
        self.quantile = float(quantile)
        super().__init__(p0=1.0 - float(quantile), alpha=alpha, ratios=ratios)

    @classmethod
    def from_baseline(cls, baseline: object, factor: float = 2.0, quantile: float = 0.99, alpha: float = 0.01,
                      confidence: float = 0.95) -> "QuantileExceedanceMonitor":
        """Threshold = ``factor`` x the upper confidence bound of the baseline quantile (runbook: p99 > 2x
        baseline). Using the upper bound keeps the false-alarm guarantee despite baseline sampling error
        (up to the bound's own 2.5 % error); with too few baseline samples this raises InvalidInput."""
        from .quantiles import quantile_ci

        est = quantile_ci(baseline, quantile, confidence)
        if est.interval is None:
            raise InvalidInput(f"baseline cannot define a threshold: {est.reason}")
        return cls(factor * est.interval.high, quantile, alpha)

    def update_latencies(self, latencies: object) -> bool:
        """Feed a batch of latency samples (NaN/inf raise InvalidInput)."""
        a = check_samples(latencies, "latencies")
        return self.update(int(np.count_nonzero(a > self.latency_threshold)), int(a.size))
