"""Verdicts: held / violated / inconclusive per phase and metric; never a false held on bad data."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from chaosinject.analysis import InvalidInput, Outcome, PhaseData, SteadyStateSpec, evaluate

MS = 1e6


def _phases(rng, n=20_000, fault_scale=1.0, fault_err=0.0002, base_err=0.0002, rec_scale=1.0):
    def lat(scale):
        return rng.lognormal(np.log(20 * MS), 0.5, size=n) * scale
    return {
        "baseline": PhaseData(lat(1.0), int(rng.binomial(n, base_err)), n),
        "fault": PhaseData(lat(fault_scale), int(rng.binomial(n, fault_err)), n),
        "recovery": PhaseData(lat(rec_scale), int(rng.binomial(n, base_err)), n),
    }


def _get(v, phase, metric, kind):
    (c,) = [c for c in v.checks if (c.phase, c.metric, c.kind) == (phase, metric, kind)]
    return c


def test_everything_held_with_enough_clean_data():
    rng = np.random.default_rng(1)
    v = evaluate(_phases(rng, n=100_000, fault_err=0.0, base_err=0.0))
    assert v.outcome is Outcome.HELD, v.summary()
    assert len(v.checks) == 2 + 4 + 4


def test_fault_doubling_latency_and_errors_is_violated():
    rng = np.random.default_rng(2)
    v = evaluate(_phases(rng, fault_scale=3.0, fault_err=0.01))
    assert v.outcome is Outcome.VIOLATED
    assert _get(v, "fault", "latency", "relative").outcome is Outcome.VIOLATED
    assert _get(v, "fault", "error_rate", "relative").outcome is Outcome.VIOLATED
    assert _get(v, "fault", "error_rate", "absolute").outcome is Outcome.VIOLATED
    assert _get(v, "fault", "latency", "absolute").outcome is Outcome.HELD  # 3 x 20 ms x 2.2 < 200 ms
    assert _get(v, "recovery", "latency", "relative").outcome is Outcome.HELD
    assert "beyond the allowed 2x" in _get(v, "fault", "latency", "relative").reason


def test_absolute_latency_violation():
    rng = np.random.default_rng(3)
    v = evaluate(_phases(rng, fault_scale=6.0), SteadyStateSpec(latency_max_ratio=None))
    c = _get(v, "fault", "latency", "absolute")
    assert c.outcome is Outcome.VIOLATED and c.interval.low >= 200 * MS


def test_few_requests_are_inconclusive_not_held():
    rng = np.random.default_rng(4)
    ph = _phases(rng, n=300, fault_err=0.0, base_err=0.0)
    v = evaluate(ph)
    assert _get(v, "fault", "latency", "absolute").outcome is Outcome.INCONCLUSIVE  # n < 368
    assert _get(v, "fault", "error_rate", "absolute").outcome is Outcome.INCONCLUSIVE  # 0/300 cannot show < 0.1 %
    assert _get(v, "fault", "error_rate", "relative").outcome is Outcome.INCONCLUSIVE  # no power
    assert v.outcome is Outcome.INCONCLUSIVE


def test_relative_checks_need_a_baseline():
    rng = np.random.default_rng(5)
    ph = _phases(rng)
    del ph["baseline"]
    v = evaluate(ph)
    assert _get(v, "fault", "latency", "relative").outcome is Outcome.INCONCLUSIVE
    assert "baseline" in _get(v, "fault", "latency", "relative").reason


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan] * 500), np.array([np.inf] * 1000), np.array([])])
def test_nan_inf_or_empty_latencies_are_inconclusive(bad):
    rng = np.random.default_rng(6)
    ph = _phases(rng)
    ph["fault"] = PhaseData(bad, 0, 100_000)
    v = evaluate(ph)
    fault = v.phase("fault")
    assert fault and all(c.outcome is not Outcome.HELD for c in fault if c.metric == "latency")
    assert v.outcome is not Outcome.HELD


def test_errors_exceeding_requests_is_inconclusive_with_reason():
    ph = {"baseline": PhaseData(np.ones(1000), 5, 3)}
    v = evaluate(ph)
    assert all(c.outcome is Outcome.INCONCLUSIVE for c in v.checks)
    assert "exceed" in v.checks[0].reason


@pytest.mark.parametrize("kw", [dict(quantile=1.0), dict(confidence=1.5), dict(latency_max_ns=-1.0),
                                dict(max_error_rate=0.0), dict(alpha=0.0), dict(latency_max_ratio=float("nan"))])
def test_spec_validation(kw):
    with pytest.raises(InvalidInput):
        SteadyStateSpec(**kw)


def test_to_records_and_summary():
    rng = np.random.default_rng(7)
    v = evaluate(_phases(rng))
    recs = v.to_records()
    assert len(recs) == len(v.checks) and {"phase", "metric", "outcome", "reason"} <= set(recs[0])
    assert v.summary().splitlines()[0].startswith("steady state:")
    assert set(v.quantiles) == {"baseline", "fault", "recovery"}


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 600),
    value=st.one_of(st.floats(0, 1e9, allow_nan=False), st.just(float("nan")), st.just(float("inf"))),
    spread=st.booleans(),
    errors=st.integers(0, 5),
)
def test_property_small_constant_or_bad_data_never_falsely_held(n, value, spread, errors):
    lat = np.full(n, value)
    if spread and n:
        lat = lat + np.arange(n)
    requests = max(n, errors)
    ph = {"baseline": PhaseData(lat, errors, requests), "fault": PhaseData(lat.copy(), errors, requests)}
    v = evaluate(ph)
    for c in v.checks:
        if c.outcome is Outcome.HELD:
            # a held latency check needs n >= 368 finite samples whose p99 upper bound is under the limit
            if c.metric == "latency" and c.kind == "absolute":
                assert n >= 368 and np.isfinite(value) and c.interval.high < 200e6
            if c.metric == "error_rate" and c.kind == "absolute":
                assert requests >= 3000  # 0 errors need ~3 689 requests to bound the rate below 0.1 %
            if c.metric == "error_rate" and c.kind == "relative":
                assert c.interval.high <= 0.001
    assert not (n < 368 and v.outcome is Outcome.HELD)


def test_error_rate_margin_separates_significant_from_material():
    n = 10_000_000
    lat = np.random.default_rng(9).lognormal(np.log(20 * MS), 0.5, size=50_000)
    ph = {"baseline": PhaseData(lat, 4900, n), "recovery": PhaseData(lat, 6100, n)}
    strict = _get(evaluate(ph), "recovery", "error_rate", "relative")
    assert strict.outcome is Outcome.VIOLATED  # +0.012 pp is significant at 1e7 requests
    lenient = _get(evaluate(ph, SteadyStateSpec(error_rate_margin=0.0005)), "recovery", "error_rate", "relative")
    assert lenient.outcome is Outcome.HELD  # but below a 0.05 pp margin, and bounded below the tolerance
    big = {"baseline": PhaseData(lat, 4900, n), "recovery": PhaseData(lat, 30_000, n)}
    assert _get(evaluate(big, SteadyStateSpec(error_rate_margin=0.0005)), "recovery", "error_rate",
                "relative").outcome is Outcome.VIOLATED


# -- expected deviation: the fault phase is meant to move the metric ------------------------------------
def _req_phases(rng, n, errs, scales=(1.0, 1.0, 1.0)):
    return {name: PhaseData(rng.lognormal(np.log(5 * MS), 0.3, size=n) * s, e, n)
            for name, e, s in zip(("baseline", "fault", "recovery"), errs, scales)}


ERR_ONLY = SteadyStateSpec(latency_max_ns=None, max_error_rate=0.01, latency_max_ratio=None)


def test_expected_deviation_that_shows_is_not_a_violation():
    rng = np.random.default_rng(11)
    v = evaluate(_req_phases(rng, 1000, (0, 860, 0)), ERR_ONLY, expect={"fault": "deviation"})
    assert v.outcome is Outcome.HELD, v.summary()
    assert v.phase_outcome("fault") is Outcome.DEVIATED
    (c,) = v.phase("fault")
    assert (c.kind, c.expect, c.metric) == ("change", "deviation", "error_rate")
    lines = v.summary().splitlines()
    assert lines[2].startswith("  fault: deviated as expected (error rate 86.0% vs 0.0%, +86.0%")
    assert lines[3].startswith("  recovery: steady state restored: HELD (error rate 0.00% (0/1000)")
    # the same data judged as steady everywhere (today's default) is violated in the fault phase
    assert evaluate(_req_phases(rng, 1000, (0, 860, 0)), ERR_ONLY).outcome is Outcome.VIOLATED
    assert {r["expect"] for r in v.to_records()} == {"steady", "deviation"}


def test_expected_deviation_that_does_not_show_is_inconclusive_not_held():
    rng = np.random.default_rng(12)
    v = evaluate(_req_phases(rng, 1000, (0, 0, 0)), ERR_ONLY, expect={"fault": "deviation"})
    assert v.phase_outcome("fault") is Outcome.NO_CHANGE
    assert v.outcome is Outcome.INCONCLUSIVE
    assert "fault: NO measurable change vs baseline" in v.summary()


def test_latency_deviation_either_way_and_bonferroni():
    rng = np.random.default_rng(13)
    spec = SteadyStateSpec(latency_max_ns=None, max_error_rate=None, latency_max_ratio=2.0,
                           error_rate_vs_baseline=True)
    v = evaluate(_req_phases(rng, 5000, (0, 0, 0), scales=(1.0, 0.5, 1.0)), spec, expect={"fault": "deviation"})
    lat = [c for c in v.phase("fault") if c.metric == "latency"][0]
    err = [c for c in v.phase("fault") if c.metric == "error_rate"][0]
    assert lat.outcome is Outcome.DEVIATED and "significantly lower" in lat.reason
    assert err.outcome is Outcome.NO_CHANGE and "alpha 0.025" in err.reason     # 2 metrics: alpha / 2
    assert v.phase_outcome("fault") is Outcome.DEVIATED


def test_deviated_false_positive_rate_is_below_alpha():
    # same distributions and error rate in both phases: "deviated" must come up in <= alpha of the runs
    rng = np.random.default_rng(14)
    spec = SteadyStateSpec(latency_max_ns=None, max_error_rate=0.05, latency_max_ratio=2.0)
    runs, hits = 400, 0
    for _ in range(runs):
        ph = {p: PhaseData(rng.lognormal(0, 1, 1500), int(rng.binomial(1500, 0.02)), 1500)
              for p in ("baseline", "fault")}
        hits += evaluate(ph, spec, expect={"fault": "deviation"}).phase_outcome("fault") is Outcome.DEVIATED
    # alpha = 0.05; 400 runs: a true rate of 0.05 gives <= 0.075 with probability > 0.99
    assert hits / runs <= 0.075, hits


def test_expectations_are_validated_and_a_missing_deviation_phase_is_inconclusive():
    rng = np.random.default_rng(15)
    ph = _req_phases(rng, 500, (0, 0, 0))
    with pytest.raises(InvalidInput, match="baseline cannot be expected to deviate"):
        evaluate(ph, ERR_ONLY, expect={"baseline": "deviation"})
    with pytest.raises(InvalidInput, match="expect\\['fault'\\] must be one of steady, deviation"):
        evaluate(ph, ERR_ONLY, expect={"fault": "moved"})
    del ph["fault"]
    v = evaluate(ph, ERR_ONLY, expect={"fault": "deviation"})
    assert v.phase_outcome("fault") is Outcome.INCONCLUSIVE and v.outcome is Outcome.INCONCLUSIVE
    assert "no samples in this phase" in v.phase("fault")[0].reason
