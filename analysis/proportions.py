"""Error-rate statistics: binomial proportion intervals and two-sample proportion tests."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ._types import ConfidenceInterval, InvalidInput
from ._validate import check_confidence, check_counts

__all__ = ["proportion_ci"]

_METHODS = ("clopper-pearson", "wilson")


def proportion_ci(
    successes: int, trials: int, confidence: float = 0.95, method: str = "clopper-pearson"
) -> ConfidenceInterval:
    """Two-sided confidence interval for a binomial proportion ``successes / trials``.

    ``method``: ``"clopper-pearson"`` (exact, conservative: coverage >= ``confidence`` for every p) or
    ``"wilson"`` (score interval; coverage close to nominal on average, can dip below it for some p).
    ``trials == 0`` gives the vacuous interval ``[0, 1]`` (nothing is known), never an exception.
    Invalid input (negative, non-integer, ``successes > trials``, confidence outside (0, 1), unknown method)
    raises :class:`analysis.InvalidInput` (a ``ValueError``).
    """
    x, n = check_counts(successes, trials)
    c = check_confidence(confidence)
    m = str(method).lower().replace("_", "-")
    if m not in _METHODS:
        raise InvalidInput(f"method must be one of {_METHODS}, got {method!r}")
    if n == 0:
        return ConfidenceInterval(0.0, 1.0)
    alpha = 1.0 - c
    if m == "clopper-pearson":
        low = 0.0 if x == 0 else float(special.betaincinv(x, n - x + 1, alpha / 2))
        high = 1.0 if x == n else float(special.betaincinv(x + 1, n - x, 1 - alpha / 2))
        return ConfidenceInterval(low, high)
    z = float(special.ndtri(1 - alpha / 2))
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if x == 0 else max(0.0, centre - half)
    high = 1.0 if x == n else min(1.0, centre + half)
    return ConfidenceInterval(low, high)
