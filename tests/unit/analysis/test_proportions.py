"""Error-rate tests: two-proportion z / Fisher, Newcombe interval, power at the theoretical sample size."""
import math

import numpy as np
import pytest
from scipy import stats

from chaosinject.analysis import InvalidInput, compare_proportions, required_trials_two_proportions


def test_required_trials_for_01_to_02_percent_matches_the_textbook_formula():
    n = required_trials_two_proportions(0.001, 0.002, alpha=0.05, power=0.9)
    za, zb = stats.norm.ppf(0.95), stats.norm.ppf(0.9)
    p1, p2 = 0.001, 0.002
    pbar = (p1 + p2) / 2
    expected = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    assert n == math.ceil(expected)
    assert 25_000 < n < 26_500


def _power(n, p1, p2, reps, rng, alpha=0.05, method="z"):
    x1 = rng.binomial(n, p1, size=reps)
    x2 = rng.binomial(n, p2, size=reps)
    return np.mean([compare_proportions(a, n, b, n, method=method).pvalue < alpha for a, b in zip(x1, x2)])


def test_error_rate_test_detects_01_to_02_percent_at_the_predicted_sample_size():
    # 4000 replications: SE of the estimated power ~0.5 %.
    rng = np.random.default_rng(1)
    n = required_trials_two_proportions(0.001, 0.002)
    reps = 4000
    power = _power(n, 0.001, 0.002, reps, rng)
    assert abs(power - 0.9) < 0.025, power  # the normal approximation is within 2.5 points here
    quarter = _power(n // 4, 0.001, 0.002, reps, rng)
    assert quarter < 0.55  # and a quarter of the data is clearly not enough


@pytest.mark.parametrize("method", ["z", "fisher", "auto"])
@pytest.mark.parametrize("n,p", [(25_652, 0.001), (2000, 0.001), (500, 0.02)])
def test_aa_false_positive_rate_at_most_nominal(method, n, p):
    rng = np.random.default_rng(n)
    reps, alpha = 2000, 0.05
    x1 = rng.binomial(n, p, size=reps)
    x2 = rng.binomial(n, p, size=reps)
    rej = sum(compare_proportions(a, n, b, n, method=method).pvalue < alpha for a, b in zip(x1, x2))
    assert rej <= stats.binom.ppf(0.999, reps, alpha)


def test_matches_scipy_fisher_and_z():
    r = compare_proportions(3, 1000, 12, 1000, method="fisher", alternative="greater")
    ref = stats.fisher_exact([[12, 988], [3, 997]], alternative="greater")
    assert r.pvalue == pytest.approx(ref.pvalue)
    r = compare_proportions(30, 10_000, 55, 10_000, method="z", alternative="two-sided")
    p1, p2, pp = 0.003, 0.0055, 85 / 20_000
    z = (p2 - p1) / math.sqrt(pp * (1 - pp) * 2 / 10_000)
    assert r.statistic == pytest.approx(z)
    assert r.pvalue == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert r.interval.low < r.effect < r.interval.high


def test_newcombe_interval_coverage():
    rng = np.random.default_rng(3)
    n1, n2, p1, p2, reps = 3000, 3000, 0.004, 0.008, 3000
    x1, x2 = rng.binomial(n1, p1, reps), rng.binomial(n2, p2, reps)
    cov = np.mean([r.interval.low <= p2 - p1 <= r.interval.high
                   for r in (compare_proportions(a, n1, b, n2) for a, b in zip(x1, x2))])
    assert cov >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / reps)


@pytest.mark.parametrize("args", [(1, 0, 1, 10), (1, 10, 1, 0), (11, 10, 1, 10), (-1, 10, 1, 10), (1.5, 10, 1, 10)])
def test_invalid_counts(args):
    with pytest.raises(InvalidInput):
        compare_proportions(*args)


def test_no_errors_anywhere_is_not_significant():
    r = compare_proportions(0, 1000, 0, 1000)
    assert r.pvalue == 1.0 and r.effect == 0.0
