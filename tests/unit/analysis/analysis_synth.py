"""Shared synthetic distributions for calibration tests (seeded, vectorised)."""
import numpy as np


def lognormal(rng, size, sigma=0.5):
    return rng.lognormal(np.log(20e6), sigma, size=size)


def pareto_tail(rng, size, alpha=3.0):
    # Lomax/Pareto II with a 5 ms floor: heavy right tail (finite mean and variance at alpha=3)
    return 5e6 + 10e6 * rng.pareto(alpha, size=size)


def bimodal(rng, size):
    # 90 % fast path (~10 ms), 10 % slow path (~80 ms): p99 lies in the slow mode
    fast = rng.lognormal(np.log(10e6), 0.3, size=size)
    slow = rng.lognormal(np.log(80e6), 0.3, size=size)
    return np.where(rng.random(size) < 0.9, fast, slow)


DISTRIBUTIONS = {"lognormal": lognormal, "pareto": pareto_tail, "bimodal": bimodal}
