"""Mann-Whitney / Hodges-Lehmann, p99 difference intervals and the quantile exceedance test."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import special, stats

from chaosinject.analysis import (
    InvalidInput,
    compare_latency,
    hodges_lehmann,
    quantile_difference_ci,
    quantile_shift_test,
    tail_rank_test,
)
from analysis_synth import DISTRIBUTIONS


def _exact_hl(x, y):
    return float(np.median(np.subtract.outer(np.asarray(y, float), np.asarray(x, float)).ravel()))


@settings(max_examples=120, deadline=None)
@given(
    x=st.lists(st.integers(0, 30), min_size=1, max_size=60),
    y=st.lists(st.integers(0, 30), min_size=1, max_size=60),
    scale=st.sampled_from([1.0, 1e-3, 1e6]),
)
def test_hodges_lehmann_and_u_exact_on_small_tied_samples(x, y, scale):
    x = np.asarray(x, float) * scale
    y = np.asarray(y, float) * scale
    hl = hodges_lehmann(x, y)
    assert abs(hl.shift - _exact_hl(x, y)) <= hl.error + 1e-12 * scale
    r = compare_latency(x, y)
    ref = stats.mannwhitneyu(y, x, alternative="two-sided")
    assert r.statistic == ref.statistic
    assert 0.0 <= r.pvalue <= 1.0
    if np.ptp(np.concatenate((x, y))) == 0:
        assert r.classification == "inconclusive"


@pytest.mark.parametrize("groups", [1, 7, 64])
def test_grouped_bracket_contains_the_exact_estimate(groups):
    rng = np.random.default_rng(groups)
    x = rng.lognormal(size=1500)
    y = rng.lognormal(size=1200) * 1.2
    hl = hodges_lehmann(x, y, groups=groups)
    shift, err = hl.shift, hl.error
    exact = _exact_hl(x, y)
    assert shift - err <= exact <= shift + err


def test_bracket_narrows_as_groups_grow():
    rng = np.random.default_rng(4)
    x, y = rng.lognormal(size=4000), rng.lognormal(size=4000) * 1.2
    errs = [hodges_lehmann(x, y, groups=g).error for g in (16, 256, 4000)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-6  # one sample per group: exact up to the bisection tolerance


@pytest.mark.parametrize("n", [50, 3000])
def test_pvalue_matches_scipy(n):
    rng = np.random.default_rng(n)
    x = np.round(rng.lognormal(size=n), 1)  # ties on purpose
    y = np.round(rng.lognormal(size=n + 7) * 1.1, 1)
    for alt in ("two-sided", "greater", "less"):
        r = compare_latency(x, y, alternative=alt, ordered=False)   # scipy's law: independent samples
        ref = stats.mannwhitneyu(y, x, alternative=alt, method="asymptotic")
        assert r.statistic == ref.statistic
        assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


def test_moses_interval_equals_order_statistics_of_all_differences():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=40), rng.normal(size=35) + 0.5
    r = compare_latency(x, y, confidence=0.95)
    d = np.sort(np.subtract.outer(y, x).ravel())
    N = d.size
    sd = math.sqrt(x.size * y.size * (x.size + y.size + 1) / 12)
    c = math.floor(N / 2 - special.ndtri(0.975) * sd)
    assert r.interval.low == pytest.approx(d[c - 1], abs=1e-8)
    assert r.interval.high == pytest.approx(d[N - c], abs=1e-8)


def test_hodges_lehmann_on_ten_million_is_precise():
    """Brute force would need 1e14 differences; its time is a benchmark's (bench/verdict_speed.py --hl)."""
    rng = np.random.default_rng(11)
    x = rng.lognormal(np.log(20e6), 0.5, size=10_000_000)
    y = rng.lognormal(np.log(20e6), 0.5, size=10_000_000) + 1e6
    hl = hodges_lehmann(x, y)
    shift, err = hl.shift, hl.error
    assert err < 1e-3 * 1e6  # bracket narrower than 0.1 % of the shift
    assert abs(shift - 1e6) < 0.05e6  # and the estimate is where it should be (SE ~ 0.01e6)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_mann_whitney_aa_false_positive_rate_at_most_nominal(name):
    gen = DISTRIBUTIONS[name]
    rng = np.random.default_rng(21)
    reps, n, alpha = 800, 200, 0.02  # Kayenta's 98 %
    data = gen(rng, (reps, 2, n))
    rejections = sum(compare_latency(a, b).pvalue < alpha for a, b in data)
    # observed count must not be significantly above alpha * reps (one-sided, 0.1 % level)
    assert rejections <= stats.binom.ppf(0.999, reps, alpha)


def test_kayenta_classification():
    rng = np.random.default_rng(2)
    base = rng.lognormal(np.log(20e6), 0.4, size=20_000)
    slow = rng.lognormal(np.log(20e6), 0.4, size=20_000) * 1.3
    tiny = rng.lognormal(np.log(20e6), 0.4, size=20_000) * 1.03
    assert compare_latency(base, slow).classification == "higher"
    r = compare_latency(base, tiny)
    assert r.pvalue < 0.02 and r.classification == "pass"  # significant, below the 10 % allowance
    assert compare_latency(base[:3], slow[:3]).classification == "inconclusive"


@pytest.mark.parametrize("bad", [[], [np.nan, 1.0], [np.inf]])
def test_compare_rejects_empty_and_non_finite(bad):
    with pytest.raises(InvalidInput):
        compare_latency(bad, [1.0, 2.0])
    with pytest.raises(InvalidInput):
        quantile_shift_test([1.0, 2.0], bad)


def test_p99_difference_interval_is_conservative_under_aa():
    rng = np.random.default_rng(8)
    reps, n = 600, 4000
    data = DISTRIBUTIONS["lognormal"](rng, (reps, 2, n))
    covered = sum(quantile_difference_ci(a, b).interval.low <= 0 <= quantile_difference_ci(a, b).interval.high
                  for a, b in data)
    # each quantile at sqrt(0.95): joint coverage >= 95 % by independence (in fact ~99 %)
    assert covered / reps >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / reps)


def test_p99_difference_inconclusive_with_few_samples():
    r = quantile_difference_ci(np.arange(100.0), np.arange(100.0))
    assert r.inconclusive and r.ratio_interval is None and "too few" in r.reason


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantile_shift_test_aa_false_positive_rate(name):
    gen = DISTRIBUTIONS[name]
    rng = np.random.default_rng(31)
    reps, n, alpha = 600, 5000, 0.05
    data = gen(rng, (reps, 2, n))
    rejections = sum(quantile_shift_test(a, b).pvalue < alpha for a, b in data)
    assert rejections <= stats.binom.ppf(0.999, reps, alpha)


def _lomax_predicted_power(n, factor=1.05, alpha=0.05):
    # X = 5 ms + 10 ms * Lomax(3): S(x) = ((x + 5e6) / 10e6) ** -3. Pooled threshold t: S(t) + S(t/f) = 0.02.
    S = lambda x: ((x + 5e6) / 10e6) ** -3.0  # noqa: E731
    from scipy.optimize import brentq
    t = brentq(lambda t: S(t) + S(t / factor) - 0.02, 10e6, 1e9)
    a, b = S(t), S(t / factor)
    sd0 = math.sqrt(2 * 0.01 * 0.99 / n)
    sd1 = math.sqrt((a * (1 - a) + b * (1 - b)) / n)
    return float(special.ndtr(((b - a) - special.ndtri(1 - alpha) * sd0) / sd1))


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_power_to_detect_plus_5_percent_p99_at_1e5_per_phase(name):
    # +5 % p99: the fault sample is the baseline distribution scaled by 1.05 (every quantile +5 %).
    gen = DISTRIBUTIONS[name]
    rng = np.random.default_rng(41)
    reps, n = 120, 100_000
    hits = tail_hits = 0
    for _ in range(reps):
        x, y = gen(rng, n), gen(rng, n) * 1.05
        hits += quantile_shift_test(x, y).pvalue < 0.05
        tail_hits += tail_rank_test(x, y).pvalue < 0.05
    power = hits / reps
    # Issue 5's requirement (power >= 0.9 on all three families) is met by the upper-tail rank test
    # (scores over the pooled p98..p100 region); measured 1.0 / 1.0 / ~0.96 (lognormal, bimodal, Lomax).
    assert tail_hits / reps >= 0.9
    if name == "pareto":
        # Heavy tail (local tail index 2.7 at p99): the p99-exceedance information limit at 1e5 is ~0.90.
        predicted = _lomax_predicted_power(n)
        assert abs(power - predicted) < 3.5 * math.sqrt(predicted * (1 - predicted) / reps) + 0.01
        assert power >= 0.8
    else:
        assert power >= 0.9
