"""Order-statistic quantile intervals: minimum n, exact coverage, calibration on real data, edge cases."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from chaosinject.analysis import InvalidInput, min_samples_for_quantile, order_statistic_ranks, quantile_ci, quantile_cis

from analysis_synth import DISTRIBUTIONS


def _brute_min_n(q, conf):
    n = 1
    while order_statistic_ranks(n, q, conf) is None:
        n += 1
    return n


def test_min_samples_for_two_sided_95_p99_is_368_not_367():
    # upper bound needs P(all n samples below the p99) = 0.99**n <= 2.5 %: 0.99**367 = 0.02501 > 0.025
    assert 0.99 ** 367 > 0.025 >= 0.99 ** 368
    assert min_samples_for_quantile(0.99, 0.95) == 368
    assert order_statistic_ranks(367, 0.99, 0.95) is None
    assert order_statistic_ranks(368, 0.99, 0.95) is not None


@pytest.mark.parametrize("q,conf", [(0.5, 0.95), (0.9, 0.95), (0.99, 0.95), (0.99, 0.99), (0.999, 0.95), (0.1, 0.9)])
def test_min_samples_matches_brute_force(q, conf):
    n = min_samples_for_quantile(q, conf)
    if n < 1000:
        assert n == _brute_min_n(q, conf)
    assert order_statistic_ranks(n, q, conf) is not None
    assert order_statistic_ranks(n - 1, q, conf) is None


@pytest.mark.parametrize("n", [368, 500, 1000, 5000, 10_000, 100_000, 10_000_000])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999])
def test_ranks_are_equal_tailed_and_cover_at_least_nominal(n, q):
    r = order_statistic_ranks(n, q, 0.95)
    if r is None:
        assert n < min_samples_for_quantile(q, 0.95)
        return
    lo, hi, cov = r
    b = stats.binom(n, q)
    assert b.cdf(lo - 1) <= 0.025 < b.cdf(lo)  # lower tail <= alpha/2, and l is the largest such rank
    assert b.sf(hi - 1) <= 0.025 < b.sf(hi - 2)  # upper tail <= alpha/2, u the smallest such rank
    assert cov == pytest.approx(b.cdf(hi - 1) - b.cdf(lo - 1))
    assert cov >= 0.95


# Coverage by simulation of uniform order statistics (distribution-free: X_(k) = F^-1(U_(k))).
# U_(l) ~ Beta(l, n+1-l); given U_(l), (U_(u) - U_(l)) / (1 - U_(l)) ~ Beta(u-l, n+1-u).
# R = 50 000 replications per n: Monte Carlo SE <= 0.1 %, so the 94-96 % band is checked with >= 4 SE to
# spare at the exact coverages of these n (95.1-95.6 %), and a true coverage of 94 % or 96 % would fail.
COVERAGE_REPS = 50_000


@pytest.mark.parametrize("n", [5_000, 10_000, 100_000, 1_000_000])
def test_p99_interval_coverage_between_94_and_96_percent(n):
    rng = np.random.default_rng(n)
    lo, hi, exact = order_statistic_ranks(n, 0.99, 0.95)
    u_lo = rng.beta(lo, n + 1 - lo, size=COVERAGE_REPS)
    u_hi = u_lo + (1 - u_lo) * rng.beta(hi - lo, n + 1 - hi, size=COVERAGE_REPS)
    covered = (u_lo <= 0.99) & (0.99 <= u_hi)
    cov = covered.mean()
    se = math.sqrt(exact * (1 - exact) / COVERAGE_REPS)
    assert 0.94 <= cov <= 0.96
    assert abs(cov - exact) < 4 * se  # simulation agrees with the exact binomial coverage


def test_small_n_interval_is_conservative_not_nominal():
    # Honest about discreteness: at n = 500 the equal-tailed interval covers ~98 %, never less than 95 %.
    lo, hi, cov = order_statistic_ranks(500, 0.99, 0.95)
    assert cov > 0.96


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_p99_coverage_on_real_data_through_the_public_function(name):
    # End to end on lognormal / Pareto-tail / bimodal data: R = 3000 runs of n = 5000 (SE 0.38 %).
    rng = np.random.default_rng(7)
    gen = DISTRIBUTIONS[name]
    true_p99 = np.quantile(gen(np.random.default_rng(99), 4_000_000), 0.99)  # reference value
    n, reps = 5000, 3000
    data = gen(rng, (reps, n))
    hits = 0
    for row in data:
        ci = quantile_ci(row, 0.99).interval
        hits += ci.low <= true_p99 <= ci.high
    cov = hits / reps
    exact = order_statistic_ranks(n, 0.99, 0.95)[2]
    se = math.sqrt(exact * (1 - exact) / reps)
    # tolerance also absorbs the reference p99's own error (relative ~0.3 % of the p99 density window)
    assert abs(cov - exact) < 4.5 * se, (cov, exact)


def test_quantile_cis_matches_direct_order_statistics():
    x = np.random.default_rng(3).lognormal(size=20_001)
    s = np.sort(x)
    res = quantile_cis(x)
    for q, est in res.items():
        lo, hi = est.ranks
        assert est.estimate == s[math.ceil(q * x.size) - 1]
        assert est.interval.low == s[lo - 1] and est.interval.high == s[hi - 1]
        assert est.interval.low <= est.estimate <= est.interval.high


def test_too_few_samples_is_inconclusive_not_an_exception():
    est = quantile_ci(np.arange(100.0), 0.99)
    assert est.inconclusive and est.interval is None
    assert "368" in est.reason
    assert est.estimate == 98.0  # type-1 sample quantile: X_(ceil(0.99 * 100)) = X_(99)
    empty = quantile_ci([], 0.99)
    assert empty.inconclusive and empty.n == 0


@pytest.mark.parametrize("bad", [[1.0, np.nan], [np.inf, 1.0, 2.0], ["a", "b"], [[1.0, 2.0], [3.0, 4.0]]])
def test_non_finite_or_malformed_data_raise_invalid_input(bad):
    with pytest.raises(InvalidInput):
        quantile_ci(bad, 0.99)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_quantile_raises(q):
    with pytest.raises(InvalidInput):
        quantile_ci([1.0, 2.0], q)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.floats(0, 1e9, allow_nan=False), min_size=0, max_size=3000),
    q=st.sampled_from([0.5, 0.9, 0.99, 0.999]),
    ties=st.booleans(),
)
def test_interval_properties(data, q, ties):
    x = np.round(np.asarray(data) / 1e8) if ties else np.asarray(data)  # heavy ties when requested
    est = quantile_ci(x, q)
    assert est.n == x.size
    if x.size < min_samples_for_quantile(q):
        assert est.inconclusive
    else:
        assert not est.inconclusive
        assert x.min() <= est.interval.low <= est.estimate <= est.interval.high <= x.max()


def test_constant_data_gives_a_degenerate_but_valid_interval():
    est = quantile_ci(np.full(1000, 5.0), 0.99)
    assert est.interval.low == est.interval.high == est.estimate == 5.0
