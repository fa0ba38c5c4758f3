"""proportion_ci: agreement with scipy, exact coverage, edge cases, typed errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from chaosinject import analysis
from chaosinject.analysis import ConfidenceInterval, InvalidInput, proportion_ci


@pytest.mark.parametrize("method,scipy_method", [("clopper-pearson", "exact"), ("wilson", "wilson")])
@pytest.mark.parametrize("x,n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (1, 1000), (57, 12345), (999, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_matches_scipy_binomtest(method, scipy_method, x, n, confidence):
    ours = proportion_ci(x, n, confidence, method)
    ref = stats.binomtest(x, n).proportion_ci(confidence_level=confidence, method=scipy_method)
    assert isinstance(ours, ConfidenceInterval)
    assert ours.low == pytest.approx(ref.low, abs=1e-12)
    assert ours.high == pytest.approx(ref.high, abs=1e-12)


def test_default_is_clopper_pearson_95():
    assert proportion_ci(5, 100) == proportion_ci(5, 100, 0.95, "clopper-pearson")


def test_exported_and_frozen():
    ci = analysis.proportion_ci(2, 50)
    assert analysis.ConfidenceInterval is ConfidenceInterval
    with pytest.raises(Exception):
        ci.low = 0.5  # frozen


@pytest.mark.parametrize("p", [0.001, 0.01, 0.05, 0.3, 0.5])
@pytest.mark.parametrize("n", [50, 1000])
def test_clopper_pearson_exact_coverage_at_least_nominal(p, n):
    # Exact coverage: sum of binomial pmf over x whose interval contains p (no simulation noise).
    xs = np.arange(n + 1)
    covered = np.array([p in proportion_ci(int(x), n, 0.95) for x in xs])
    coverage = stats.binom.pmf(xs, n, p)[covered].sum()
    assert coverage >= 0.95 - 1e-12


def test_zero_trials_is_vacuous():
    assert proportion_ci(0, 0) == ConfidenceInterval(0.0, 1.0)
    assert proportion_ci(0, 0, method="wilson") == ConfidenceInterval(0.0, 1.0)


@pytest.mark.parametrize(
    "args",
    [(-1, 10), (11, 10), (1.5, 10), (1, 10.5), (True, 10), (float("nan"), 10), (1, 10, 1.0), (1, 10, 0.0),
     (1, 10, float("nan")), (1, 10, 0.95, "wald"), ("a", 10)],
)
def test_invalid_input_raises_typed_valueerror(args):
    with pytest.raises(InvalidInput) as info:
        proportion_ci(*args)
    assert isinstance(info.value, ValueError)


def test_numpy_integers_accepted():
    assert proportion_ci(np.int64(3), np.int32(40)) == proportion_ci(3, 40)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10**7), frac=st.floats(0, 1), conf=st.floats(0.5, 0.999),
       method=st.sampled_from(["clopper-pearson", "wilson"]))
def test_interval_properties(n, frac, conf, method):
    x = int(round(frac * n))
    ci = proportion_ci(x, n, conf, method)
    assert 0.0 <= ci.low <= x / n <= ci.high <= 1.0
    wider = proportion_ci(x, n, min(conf + 0.0009, 0.9999), method)
    assert wider.low <= ci.low + 1e-12 and wider.high >= ci.high - 1e-12
