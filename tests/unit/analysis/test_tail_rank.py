"""The upper-tail linear rank test (chaosinject.analysis.tail_rank_test): exactness, calibration and power."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from chaosinject.analysis import InvalidInput, TailRankTest, quantile_shift_test, tail_rank_test
from chaosinject.analysis.tail_rank import _tail_pvalue_exact, _tail_pvalue_mixture
from analysis_synth import DISTRIBUTIONS


def _brute(x, y, tail, alternative):
    """Permutation p-value by enumerating every relabelling of the pooled sample (mid-rank tail scores)."""
    pooled = np.concatenate((x, y))
    N, n = pooled.size, len(y)
    k = min(N, max(1, math.ceil((1 - tail) * N - 1e-9)))
    ranks = stats.rankdata(pooled)  # mid-ranks
    # average of max(0, position - (N - k)) over each tie group's positions
    order = np.sort(pooled)
    raw = np.maximum(np.arange(1, N + 1) - (N - k), 0).astype(float)
    score = np.array([raw[order == v].mean() for v in pooled])
    assert np.all(np.diff(score[np.argsort(ranks)]) >= 0)
    T = score[len(x):].sum()
    sums = np.array([score[list(c)].sum() for c in itertools.combinations(range(N), n)])
    ge, le = np.mean(sums >= T - 1e-9), np.mean(sums <= T + 1e-9)
    return T, {"greater": ge, "less": le, "two-sided": min(1.0, 2 * min(ge, le))}[alternative]


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    y=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    tail=st.sampled_from([0.5, 0.7, 0.9]),
    alternative=st.sampled_from(["greater", "less", "two-sided"]),
)
def test_exact_pvalue_equals_enumerated_permutation_law_with_ties(x, y, tail, alternative):
    x, y = np.asarray(x, float), np.asarray(y, float)
    r = tail_rank_test(x, y, tail=tail, alternative=alternative)
    T, p = _brute(x, y, tail, alternative)
    assert r.statistic == pytest.approx(T)
    if r.inconclusive:
        assert r.pvalue == 1.0 and "no rank information" in r.reason
    else:
        assert r.method == "exact"
        assert r.pvalue == pytest.approx(p, abs=1e-12)


def test_statistic_is_the_sum_of_exceedance_counts_over_tail_thresholds():
    rng = np.random.default_rng(3)
    x, y = rng.lognormal(size=3000), rng.lognormal(size=2500) * 1.02
    r = tail_rank_test(x, y, tail=0.97)
    pooled = np.sort(np.concatenate((x, y)))
    thresholds = pooled[pooled.size - r.k - 1: pooled.size - 1]  # order statistics N-k .. N-1
    assert r.statistic == sum(int(np.count_nonzero(y > t)) for t in thresholds)
    assert r.k == math.ceil(0.03 * 5500) and r.threshold == pooled[pooled.size - r.k]
    assert r.tail_baseline + r.tail_fault == r.k
    assert r.effect == pytest.approx(np.sort(y)[math.ceil(0.99 * 2500) - 1] / np.sort(x)[math.ceil(0.99 * 3000) - 1])


def _exact_law(a, N, n):
    ai = a.astype(np.int64)
    L, smax = a.size, min(a.size, n)
    top = int(np.sort(ai)[L - smax:].sum())
    counts = np.zeros((smax + 1, top + 1))
    counts[0, 0] = 1.0
    for c in ai:
        counts[1:, c:] += counts[:-1, : top + 1 - c].copy()
    s = np.arange(max(0, n - (N - L)), smax + 1)
    w = stats.hypergeom.pmf(s, N, L, n)
    return (w[:, None] * counts[s] / counts[s].sum(1)[:, None]).sum(0)


@pytest.mark.parametrize("m,n", [(7900, 100), (4000, 4000), (1000, 7000)])
def test_normal_mixture_size_against_the_exact_permutation_law(m, n):
    # 160 positive scores (beyond the exact limit): find the critical value of the approximate p-value
    # and compare its true size under the exact permutation law with the nominal level.
    N = m + n
    k = math.ceil(0.02 * N - 1e-9)
    a = np.arange(1, k + 1, dtype=float)
    law = _exact_law(a, N, n)
    assert _tail_pvalue_exact(float(np.argmax(law)), a, N, n, "greater") == pytest.approx(
        law[np.argmax(law):].sum())
    for alpha in (0.05, 0.01):
        lo, hi = 0, law.size - 1  # smallest t with p_mix(t) <= alpha (p_mix decreasing in t)
        while lo < hi:
            mid = (lo + hi) // 2
            if _tail_pvalue_mixture(float(mid), a, N, n, "greater", 0.5) <= alpha:
                hi = mid
            else:
                lo = mid + 1
        size = law[lo:].sum()
        assert size <= alpha * 1.01, (alpha, size)  # measured: at most 1.001 x nominal on these designs


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_tail_rank_test_aa_false_positive_rate(name):
    gen = DISTRIBUTIONS[name]
    rng = np.random.default_rng(51)
    reps, n, alpha = 1500, 5000, 0.05
    data = gen(rng, (reps, 2, n))  # vectorised draw; 200 positive scores per test (normal-mixture path)
    p = np.array([tail_rank_test(a, b).pvalue for a, b in data])
    assert np.all((0 <= p) & (p <= 1))
    # one-sided binomial bound at the 0.1 % level: rate <= ~6.5 % with 1500 replications
    assert np.count_nonzero(p < alpha) <= stats.binom.ppf(0.999, reps, alpha)
    assert np.count_nonzero(p < 0.01) <= stats.binom.ppf(0.999, reps, 0.01)


def test_unequal_sample_sizes_aa():
    rng = np.random.default_rng(52)
    reps, alpha = 1500, 0.05
    base = DISTRIBUTIONS["lognormal"](rng, (reps, 20_000))
    fault = DISTRIBUTIONS["lognormal"](rng, (reps, 500))  # ~10 fault values in the tail
    p = np.array([tail_rank_test(a, b).pvalue for a, b in zip(base, fault)])
    assert np.count_nonzero(p < alpha) <= stats.binom.ppf(0.999, reps, alpha)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_tail_rank_test_power_plus_5_percent_p99_at_1e5_per_phase(name):
    # Same design as test_power_to_detect_plus_5_percent_p99_at_1e5_per_phase (fault = baseline x 1.05),
    # where the single-threshold exceedance test reaches only ~0.9 on the Lomax tail.
    gen = DISTRIBUTIONS[name]
    rng = np.random.default_rng(41)
    reps, n = 120, 100_000
    results = [tail_rank_test(gen(rng, n), gen(rng, n) * 1.05) for _ in range(reps)]
    power = np.mean([r.pvalue < 0.05 for r in results])
    assert power >= 0.9  # measured: 1.0 lognormal, 1.0 bimodal, ~0.96 Lomax
    assert all(r.k == 4000 for r in results)
    # independent samples: the mixture law, except where the dependence test (alpha 5 % per sample) fires
    assert all(r.method == ("dependence-normal" if r.dependent else "hypergeometric-normal") for r in results)
    assert sum(r.dependent for r in results) <= stats.binom.ppf(0.999, reps, 0.0975)   # 1 - 0.95^2 per pair
    assert np.median([r.effect for r in results]) == pytest.approx(1.05, abs=0.02)


def test_lower_and_two_sided_alternatives():
    rng = np.random.default_rng(6)
    x = rng.lognormal(size=20_000)
    y = rng.lognormal(size=20_000) * 1.3
    assert tail_rank_test(x, y).pvalue < 1e-6
    assert tail_rank_test(y, x, alternative="less").pvalue < 1e-6
    assert tail_rank_test(x, y, alternative="less").pvalue > 0.5
    assert tail_rank_test(x, y, alternative="two-sided").pvalue < 1e-6


def test_body_shift_below_the_tail_is_not_a_tail_shift():
    # The fault is slower in its body (below the baseline p90) but has the same upper tail: the tail
    # statistic must stay centred (mean z over 12 replications near 0, sd of the mean ~0.3).
    zs = []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        x = rng.lognormal(np.log(20e6), 0.5, size=20_000)
        y = rng.lognormal(np.log(20e6), 0.5, size=20_000)
        cut = np.quantile(x, 0.9)
        y = np.where(y < cut, np.minimum(y * 1.5, cut), y)
        zs.append(tail_rank_test(x, y).zscore)
    assert abs(np.mean(zs)) < 1.0


@pytest.mark.parametrize("bad", [[], [np.nan, 1.0], [np.inf], [[1.0, 2.0], [3.0, 4.0]], ["a"]])
def test_tail_rank_rejects_empty_and_non_finite(bad):
    with pytest.raises(InvalidInput):
        tail_rank_test(bad, [1.0, 2.0])
    with pytest.raises(InvalidInput):
        tail_rank_test([1.0, 2.0], bad)


@pytest.mark.parametrize("kw", [{"tail": 1.0}, {"tail": 0.0}, {"tail": float("nan")}, {"q": 1.5},
                                {"alternative": "up"}])
def test_tail_rank_rejects_bad_parameters(kw):
    with pytest.raises(InvalidInput):
        tail_rank_test([1.0, 2.0, 3.0], [1.0, 2.0], **kw)


def test_constant_data_is_inconclusive_never_significant():
    r = tail_rank_test(np.full(5000, 7.0), np.full(5000, 7.0))
    assert isinstance(r, TailRankTest) and r.inconclusive and r.pvalue == 1.0
    assert "no rank information" in r.reason


def test_single_values_give_a_valid_pvalue():
    r = tail_rank_test([1.0], [2.0])
    assert r.method == "exact" and r.pvalue == 0.5 and r.k == 1


def test_more_powerful_than_the_single_threshold_test_on_the_lomax_tail():
    rng = np.random.default_rng(9)
    gen = DISTRIBUTIONS["pareto"]
    zt, zq = [], []
    for _ in range(20):
        x, y = gen(rng, 100_000), gen(rng, 100_000) * 1.05
        zt.append(tail_rank_test(x, y).zscore)
        zq.append(stats.norm.isf(quantile_shift_test(x, y).pvalue))
    assert np.mean(zt) > np.mean(zq) + 0.3  # measured ~3.6 against ~3.1
