"""Always-valid sequential tests: false alarms under continuous peeking, detection, stateful semantics."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from chaosinject.analysis import (
    ErrorRateMonitor,
    InvalidInput,
    QuantileExceedanceMonitor,
    SequentialProportionTest,
    mixture_log_evidence,
)
from analysis_synth import DISTRIBUTIONS


@pytest.mark.parametrize("p0", [0.001, 0.01, 0.05])
def test_false_alarm_under_continuous_peeking_at_most_one_percent(p0):
    # Worst case of H0 (true rate == p0), looking after every batch of 200 for 1000 batches (200 000 trials).
    rng = np.random.default_rng(int(p0 * 1e4))
    reps, batches, b = 1000, 1000, 200
    events = rng.binomial(b, p0, size=(reps, batches)).cumsum(axis=1)
    trials = np.arange(1, batches + 1) * b
    le = mixture_log_evidence(events, trials, p0)
    alarms = (le.max(axis=1) >= math.log(100)).sum()
    assert alarms / reps <= 0.01


def test_quantile_monitor_false_alarm_on_real_latencies_with_continuous_peeking():
    # Threshold = the true p99 of the distribution: exceedance probability exactly 1 %, the boundary of H0.
    rng = np.random.default_rng(5)
    reps, batches, b = 400, 250, 200
    alarms = 0
    for name, gen in DISTRIBUTIONS.items():
        true_p99 = np.quantile(gen(np.random.default_rng(123), 4_000_000), 0.99)
        lat = gen(rng, (reps, batches, b))
        exceed = (lat > true_p99).sum(axis=2).cumsum(axis=1)
        le = mixture_log_evidence(exceed, np.arange(1, batches + 1) * b, 0.01)
        alarms += int((le.max(axis=1) >= math.log(100)).sum())
        # the stateful object agrees with the vectorised evidence on one stream
        m = QuantileExceedanceMonitor(true_p99, 0.99, alpha=0.01)
        for batch in lat[0]:
            m.update_latencies(batch)
        assert m.log_evidence == pytest.approx(le[0, -1])
    assert alarms / (3 * reps) <= 0.01


def test_detects_a_tripled_error_rate_quickly():
    rng = np.random.default_rng(9)
    m = ErrorRateMonitor(0.001, alpha=0.01)
    while not m.breached and m.trials < 200_000:
        m.update(int(rng.binomial(500, 0.003)), 500)
    assert m.breached and m.breached_at_trials < 30_000
    assert "BREACHED" in m.reason()


def test_detects_p99_above_twice_baseline():
    rng = np.random.default_rng(10)
    base = rng.lognormal(np.log(20e6), 0.5, size=20_000)
    m = QuantileExceedanceMonitor.from_baseline(base, factor=2.0)
    assert m.latency_threshold > 2 * np.quantile(base, 0.99)
    for _ in range(200):
        if m.update_latencies(rng.lognormal(np.log(45e6), 0.5, size=500)):
            break
    assert m.breached


def test_breach_is_sticky_and_pvalue_always_valid():
    t = SequentialProportionTest(0.01, alpha=0.01)
    t.update(30, 100)
    assert t.breached and t.pvalue <= 0.01
    t.update(0, 100_000)  # evidence decays, the decision does not
    assert t.breached and t.log_evidence < t.threshold


def test_ok_array_feed_and_errors():
    m = ErrorRateMonitor(0.01)
    m.update_ok(np.array([True] * 99 + [False]))
    assert (m.events, m.trials) == (1, 100)
    with pytest.raises(InvalidInput):
        m.update_ok(np.array([1, 0]))
    with pytest.raises(InvalidInput):
        m.update(5, 3)
    with pytest.raises(InvalidInput):
        QuantileExceedanceMonitor(10.0).update_latencies([1.0, np.nan])
    with pytest.raises(InvalidInput):
        ErrorRateMonitor(0.0)
    with pytest.raises(InvalidInput):
        QuantileExceedanceMonitor.from_baseline(np.ones(50))  # too few baseline samples


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=30),
       p0=st.sampled_from([0.001, 0.01, 0.2]))
def test_counts_accumulate_and_zero_event_streams_never_breach(batches, p0):
    t = SequentialProportionTest(p0)
    z = SequentialProportionTest(p0)
    for a, b in batches:
        t.update(min(a, b), b)
        z.update(0, b)
    assert t.trials == sum(b for _, b in batches)
    assert not z.breached


def _log_mixture(x, n, p, a=0.5, b=0.5):
    from scipy.special import betaln, xlog1py, xlogy
    return betaln(x + a, n - x + b) - betaln(a, b) - xlogy(x, p) - xlog1py(n - x, -p)


@pytest.mark.parametrize("p", [0.001, 0.02])
def test_confidence_sequence_is_time_uniform(p):
    # Miss = the true rate leaves the sequence at ANY of 1000 looks; must happen in <= alpha of streams.
    rng = np.random.default_rng(int(p * 1e5))
    reps, looks, b, alpha = 1000, 500, 200, 0.05
    x = rng.binomial(b, p, size=(reps, looks)).cumsum(axis=1)
    n = np.arange(1, looks + 1) * b
    ever_out = (_log_mixture(x, n, p) >= math.log(1 / alpha)).any(axis=1).mean()
    assert ever_out <= alpha


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 10**6), frac=st.floats(0, 1), alpha=st.sampled_from([0.01, 0.05]))
def test_confidence_sequence_is_the_level_set(n, frac, alpha):
    from chaosinject.analysis import proportion_confidence_sequence, proportion_ci
    x = int(round(frac * n))
    cs = proportion_confidence_sequence(x, n, alpha)
    assert 0.0 <= cs.low <= x / n <= cs.high <= 1.0
    for p in np.linspace(0.0005, 0.9995, 41):
        inside = _log_mixture(x, n, p) < math.log(1 / alpha)
        if abs(p - cs.low) > 1e-6 and abs(p - cs.high) > 1e-6:
            assert inside == (cs.low <= p <= cs.high)
    fixed = proportion_ci(x, n, 1 - alpha)
    assert cs.low <= fixed.low + 1e-9 or cs.high >= fixed.high - 1e-9  # paying for uniformity: not narrower


def test_monitor_reports_its_confidence_sequence():
    m = ErrorRateMonitor(0.001)
    m.update(30, 10_000)
    cs = m.confidence_sequence()
    assert cs.low > 0.001 and m.breached  # the interval is above the limit once the test has breached
