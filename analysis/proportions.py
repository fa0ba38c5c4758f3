"""Error-rate statistics: binomial proportion intervals and two-sample proportion tests."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ._types import ConfidenceInterval, InvalidInput
from ._validate import check_alternative, check_confidence, check_counts

__all__ = ["proportion_ci", "ProportionComparison", "compare_proportions", "required_trials_two_proportions"]

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


@dataclass(frozen=True, slots=True)
class ProportionComparison:
    """Two-sample comparison of error rates, ``treatment`` (e.g. fault) vs ``control`` (baseline).

    ``statistic`` is the pooled two-proportion z (or the odds ratio for Fisher), ``pvalue`` is for
    ``alternative`` ("greater": treatment rate higher), ``interval`` is the Newcombe (hybrid Wilson score)
    interval for the difference ``p_treatment - p_control`` at ``confidence`` (two-sided), ``effect`` the
    difference of the observed rates and ``ratio`` their ratio (inf if the control rate is 0).
    """

    method: str
    alternative: str
    statistic: float
    pvalue: float
    interval: ConfidenceInterval
    effect: float
    ratio: float
    control: tuple[int, int]
    treatment: tuple[int, int]
    confidence: float


def _newcombe_diff(x1: int, n1: int, x2: int, n2: int, confidence: float) -> ConfidenceInterval:
    """Newcombe's method 10 interval for p2 - p1 (two Wilson intervals combined)."""
    if n1 == 0 or n2 == 0:
        return ConfidenceInterval(-1.0, 1.0)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = _wilson(x1, n1, confidence)
    l2, u2 = _wilson(x2, n2, confidence)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return ConfidenceInterval(max(-1.0, low), min(1.0, high))


def _wilson(x: int, n: int, confidence: float) -> tuple[float, float]:
    ci = proportion_ci(x, n, confidence, "wilson")
    return ci.low, ci.high


def compare_proportions(
    control_events: int,
    control_trials: int,
    treatment_events: int,
    treatment_trials: int,
    *,
    alternative: str = "greater",
    method: str = "auto",
    confidence: float = 0.95,
) -> ProportionComparison:
    """Is the treatment event rate (errors in the fault phase) different from the control (baseline)?

    ``method``: ``"z"`` (pooled two-proportion z-test), ``"fisher"`` (exact conditional test) or ``"auto"``
    (Fisher when any expected cell count is below 10, else z). ``alternative``: ``"greater"`` (default,
    treatment worse), ``"less"`` or ``"two-sided"``. Zero trials on either side raise :class:`InvalidInput`.
    """
    x1, n1 = check_counts(control_events, control_trials)
    x2, n2 = check_counts(treatment_events, treatment_trials)
    conf = check_confidence(confidence)
    if n1 == 0 or n2 == 0:
        raise InvalidInput("compare_proportions needs at least one trial in each group")
    check_alternative(alternative)
    if method not in ("auto", "z", "fisher"):
        raise InvalidInput(f"method must be 'auto', 'z' or 'fisher', got {method!r}")
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    if method == "auto":
        expected_min = min(pooled * n1, pooled * n2, (1 - pooled) * n1, (1 - pooled) * n2)
        method = "fisher" if expected_min < 10 else "z"
    if method == "z":
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if se == 0.0:
            z, p = 0.0, 1.0  # both rates 0 or both 1: no evidence of a difference
        else:
            z = (p2 - p1) / se
            if alternative == "greater":
                p = float(special.ndtr(-z))
            elif alternative == "less":
                p = float(special.ndtr(z))
            else:
                p = float(2 * special.ndtr(-abs(z)))
        stat = float(z)
    else:
        table = np.array([[x2, n2 - x2], [x1, n1 - x1]])
        res = stats.fisher_exact(table, alternative=alternative)
        stat, p = float(res.statistic), float(res.pvalue)
    ratio = (p2 / p1) if p1 > 0 else (math.inf if p2 > 0 else math.nan)
    return ProportionComparison(
        method, alternative, stat, min(1.0, p), _newcombe_diff(x1, n1, x2, n2, conf), p2 - p1, ratio,
        (x1, n1), (x2, n2), conf,
    )


def required_trials_two_proportions(
    p_control: float, p_treatment: float, *, alpha: float = 0.05, power: float = 0.9, alternative: str = "greater"
) -> int:
    """Trials per group for the pooled z-test to reach ``power`` (classical normal-approximation formula).

    n = (z_a * sqrt(2 pbar (1-pbar)) + z_b * sqrt(p1(1-p1) + p2(1-p2)))**2 / (p2 - p1)**2, with
    z_a = z_{1-alpha} one-sided (z_{1-alpha/2} two-sided). For 0.1 % -> 0.2 %, alpha 0.05 one-sided, power
    0.9 this gives about 25 700 requests per phase.
    """
    for v, name in ((p_control, "p_control"), (p_treatment, "p_treatment")):
        if not (0.0 < float(v) < 1.0):
            raise InvalidInput(f"{name} must be in (0, 1), got {v!r}")
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise InvalidInput("alpha and power must be in (0, 1)")
    if p_control == p_treatment:
        raise InvalidInput("p_control and p_treatment must differ")
    za = special.ndtri(1 - (alpha / 2 if alternative == "two-sided" else alpha))
    zb = special.ndtri(power)
    pbar = (p_control + p_treatment) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(
        p_control * (1 - p_control) + p_treatment * (1 - p_treatment)
    )
    return int(math.ceil(num * num / (p_treatment - p_control) ** 2))
