"""Seeded generators of dependent latency series (and bursty errors) with known marginal quantiles, for the
calibration suite of :mod:`chaosinject.analysis.dependence`. Latencies in ms; each generator returns a series in time order."""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

MU, SIGMA = math.log(20.0), 0.5  # lognormal base latency: median 20 ms


def two_state(rng: np.random.Generator, n: int, frac: float, mean_len: float) -> np.ndarray:
    """Stationary two-state Markov chain: True with probability frac, True-runs of mean length mean_len
    (built from geometric run lengths)."""
    leave = 1.0 / mean_len
    enter = leave * frac / (1.0 - frac)
    out = np.empty(n, dtype=bool)
    s = bool(rng.random() < frac)
    i = 0
    while i < n:
        k = int(rng.geometric(leave if s else enter, size=1)[0])
        out[i:i + k] = s
        i += k
        s = not s
    return out


def markov_episodes(rng, n, frac=0.05, mean_len=100.0, factor=3.0):
    """Congestion episodes: latency x factor while congested (5 % of the time, runs of ~100 samples)."""
    lat = rng.lognormal(MU, SIGMA, n)
    lat[two_state(rng, n, frac, mean_len)] *= factor
    return lat


def markov_quantile(q, frac=0.05, factor=3.0):
    def cdf(x):
        return (1 - frac) * stats.lognorm.cdf(x, SIGMA, scale=math.exp(MU)) + frac * stats.lognorm.cdf(
            x, SIGMA, scale=factor * math.exp(MU))
    return optimize.brentq(lambda x: cdf(x) - q, 1e-3, 1e4, xtol=1e-10)


def ar1_log(rng, n, phi=0.95):
    """AR(1) on log latency with the same stationary lognormal marginal as the independent generator."""
    e = rng.normal(0.0, SIGMA * math.sqrt(1 - phi * phi), n)
    z = np.empty(n)
    z[0] = rng.normal(0.0, SIGMA)
    # z_t = phi z_{t-1} + e_t via a linear filter
    from scipy.signal import lfilter
    z[1:] = lfilter([1.0], [1.0, -phi], e[1:], zi=[phi * z[0]])[0]
    return np.exp(MU + z)


def lognormal_quantile(q):
    return math.exp(MU + SIGMA * stats.norm.ppf(q))


def periodic_pauses(rng, n, period=1000, pause=30, add=60.0):
    """Pauses (GC-like) about every ``period`` samples (gaps uniform in 0.5-1.5 x period, random phase) add
    ``add`` ms to ``pause`` consecutive samples."""
    lat = rng.lognormal(MU, SIGMA, n)
    pos = -int(rng.integers(period))
    while pos < n:
        lat[max(pos, 0):max(pos + pause, 0)] += add
        pos += pause + int(rng.integers(period // 2, 3 * period // 2)) - pause
    return lat


def periodic_quantile(q, period=1000, pause=30, add=60.0):
    f = pause / period
    def cdf(x):
        return (1 - f) * stats.lognorm.cdf(x, SIGMA, scale=math.exp(MU)) + f * stats.lognorm.cdf(
            max(x - add, 1e-12), SIGMA, scale=math.exp(MU))
    return optimize.brentq(lambda x: cdf(x) - q, 1e-3, 1e4, xtol=1e-10)


def independent(rng, n):
    return rng.lognormal(MU, SIGMA, n)


def bursty_errors(rng, n, rate=0.01, mean_len=20.0):
    """Error flags in bursts: a two-state chain in the failing state with probability ``rate``."""
    return two_state(rng, n, rate, mean_len)


def independent_errors(rng, n, rate=0.01):
    return rng.random(n) < rate


GENERATORS = {
    "markov": (markov_episodes, markov_quantile),
    "ar1": (ar1_log, lognormal_quantile),
    "periodic": (periodic_pauses, periodic_quantile),
    "independent": (independent, lognormal_quantile),
}
