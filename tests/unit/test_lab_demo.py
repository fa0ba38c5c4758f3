"""The lab demo's experiment file and the runner hooks it relies on (no root: json probes, fake sessions)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from chaosinject.cli.experiment import describe_plan
from chaosinject.experiment import load_experiment, parse_experiment
from chaosinject.experiment import effects
from chaosinject.experiment.loader import resolve_configuration
from chaosinject.experiment.runner import RunOptions, run_experiment
from chaosinject.lab import db_timeout_demo
from chaosinject.lab.db_timeout_demo import experiment_path, phase_summary
from chaosinject.record.store import Phases

SEED = Path(__file__).resolve().parents[2] / "injector/experiment/examples/seed-experiment.json"


pytestmark = pytest.mark.usefixtures("run_root")   # tests/unit/conftest.py


def _py(value, name, kind="probe", tolerance=None):
    act = {"type": kind, "name": name,
           "provider": {"type": "python", "module": "json", "func": "loads", "arguments": {"s": json.dumps(value)}}}
    if tolerance is not None:
        act["tolerance"] = tolerance
    return act


def _run(method, tmp_path):
    exp = parse_experiment({"title": "t", "steady-state-hypothesis": {"title": "h", "probes": [
        _py(200, "health", tolerance=200)]}, "method": method, "rollbacks": [_py(1, "undo", kind="action")]})
    return run_experiment(exp, RunOptions(run_dir=tmp_path / "out", handle_signals=False))


def test_the_lab_experiment_is_the_seed_with_our_method():
    exp = load_experiment(experiment_path())
    seed = json.loads(SEED.read_text())
    assert (exp.title, exp.description) == (seed["title"], seed["description"])
    probes = {p.name: p for p in exp.hypothesis.probes}
    seed_probes = {p["name"]: p for p in seed["steady-state-hypothesis"]["probes"]}
    assert set(probes) == set(seed_probes)
    assert list(probes["error-rate-is-low"].tolerance.raw["range"]) == [0, 1]
    # the seed's query with a window the demo can wait out instead of [1m]
    conf = resolve_configuration(exp, {"api_url": "http://a:1", "prometheus_url": "http://p:2"})
    plan = describe_plan(exp, conf, exp.guard, [])
    assert seed_probes["error-rate-is-low"]["provider"]["query"].replace("1m", "10s") in plan
    assert "http://a:1/health" in plan and "instant query" in plan
    # method: our fault action on api->db past the api's 1 s deadline, judged probes, the fault removed
    kinds = [(a.type, a.name) for a in exp.method]
    assert kinds[0] == ("action", "add-network-delay-to-database")
    assert exp.method[0].provider.func == "start_network_fault"
    assert "FAULT: would apply flow=api->db/tcp, delay=2s" in plan
    assert [a.name for a in exp.method if a.type == "probe" and a.tolerance] == \
        ["no-500-during-the-fault", "503-during-the-fault"]
    assert exp.method[-1].provider.func == "stop_network_fault"
    assert [a.provider.func for a in exp.rollbacks] == ["stop_network_fault"]
    # the guard: runbook checks off (503s are expected), Prometheus halts on any 500
    g = exp.guard
    assert g.enabled and g.max_error_rate is None and g.latency_max_ratio is None
    assert "status='500'" in g.prometheus_query and g.prometheus_max == 0
    # the wait after removing the fault covers the rate window
    assert conf["recovery_wait_s"] > int(conf["rate_window"].rstrip("s"))


def test_a_method_probe_with_a_tolerance_is_judged(tmp_path):
    out = _run([_py(1, "act", kind="action"), _py(0, "took-effect", tolerance={"type": "range", "range": [1, 9]}),
                _py(0, "informational")], tmp_path)
    assert (out.state, out.exit_code, out.journal["deviated"]) == ("completed", 1, True)
    assert "'took-effect'" in out.journal["chaos-inject"]["reason"]
    runs = {r["activity"]["name"]: r for r in out.journal["run"]}
    assert runs["took-effect"]["tolerance_met"] is False and "tolerance_met" not in runs["informational"]
    assert out.journal["rollbacks"][0]["status"] == "succeeded"


def test_method_probes_that_meet_their_tolerance_hold(tmp_path):
    out = _run([_py(5, "took-effect", tolerance={"type": "range", "range": [1, 9]})], tmp_path)
    assert (out.state, out.exit_code, out.journal["deviated"]) == ("completed", 0, False)


class _Session:
    def __init__(self, span, removal_started=None):
        self.active_span_ns = span
        self.removal_started_ns = removal_started


def test_recovery_starts_when_this_runs_faults_ended_and_the_removal_is_in_no_phase():
    phases = Phases()
    phases.mark("baseline")
    t_fault = phases.mark("fault")
    now = time.monotonic_ns()
    ours = [_Session((t_fault + 1, t_fault + 100), t_fault + 90), _Session((t_fault + 2, t_fault + 200), t_fault + 150),
            _Session(None)]
    assert effects.faults_removal_ns(phases, ours) == (t_fault + 150, t_fault + 200)
    ours.append(_Session((t_fault + 3, None)))                     # still running: recovery starts now
    assert effects.faults_removal_ns(phases, ours) is None
    assert effects.faults_removal_ns(phases, [_Session(None)]) is None and now > 0
    # the runner closes the fault when the removal began and starts the recovery when it ended: a gap
    phases.close(t_fault + 150)
    phases.mark("recovery", t_fault + 200)
    assert list(phases.label([t_fault + 149, t_fault + 160, t_fault + 200])) == ["fault", "", "recovery"]


def test_phase_summary_counts_statuses_per_phase():
    import pandas as pd

    df = pd.DataFrame({"phase": pd.Categorical(["baseline", "fault", "fault", "fault", "recovery"],
                                               categories=["baseline", "fault", "recovery"]),
                       "source": pd.Categorical(["request"] * 5),
                       "status": [200, 503, 503, 200, 200], "latency_ns": [2e6, 1e9, 1e9, 3e6, 2e6]})
    rows = {r["phase"]: r for r in phase_summary(df)}
    assert rows["fault"]["requests"] == 3 and rows["fault"]["statuses"] == {503: 2, 200: 1}
    assert rows["baseline"]["median_ms"] == pytest.approx(2.0) and rows["recovery"]["statuses"] == {200: 1}


def test_the_lab_experiments_verdict_answers_its_question():
    import math

    from chaosinject.experiment.report import verdict_spec
    from chaosinject.lab.definition import load_definition

    exp = load_experiment(experiment_path())
    spec, expect, origin = verdict_spec(exp.verdict, exp.guard)
    # the seed's own limit: error rate in [0, 1] percent; the 503s of the fault phase are the expected deviation
    seed_range = list(probe_range(exp, "error-rate-is-low"))
    assert spec.max_error_rate == seed_range[1] / 100 and spec.error_rate_vs_baseline
    assert spec.latency_max_ns is None and spec.latency_max_ratio is None
    assert expect == {"baseline": "steady", "fault": "deviation", "recovery": "steady"}
    assert exp.verdict.source == "request" and "`verdict` block" in origin
    # the api's 1 s database deadline plus a reconnect: the recovery is judged from 2 s after the fault's removal
    assert exp.verdict.recovery_settle_ns == 2_000_000_000
    assert "recovery_settle" in exp.document["extensions"][1]["why"]
    # the baseline pause alone gives enough requests for a 0-error 95 % bound below the limit
    conf = resolve_configuration(exp, {"api_url": "http://a:1", "prometheus_url": "http://p:2"})
    rate = load_definition()["load"]["rate_per_s"]
    needed = math.ceil(-math.log((1 - spec.confidence) / 2) / spec.max_error_rate)
    assert float(conf["baseline_s"]) * rate >= needed == 369


def probe_range(exp, name):
    (p,) = [p for p in exp.hypothesis.probes if p.name == name]
    return p.tolerance.raw["range"]


def test_demo_verdict_needs_the_recorded_samples_to_hold_too():
    from types import SimpleNamespace

    from chaosinject.lab.db_timeout_demo import verdict_of

    def outcome(state="completed", deviated=False, samples="held", metastable=None):
        ci = {"verdict": samples, **({"recovery": {"metastable": metastable}} if metastable is not None else {})}
        return SimpleNamespace(state=state, journal={"deviated": deviated, "chaos-inject": ci})

    assert verdict_of(outcome()) == "held"
    assert verdict_of(outcome(samples="violated")) == "deviated"
    assert verdict_of(outcome(samples="inconclusive")) == verdict_of(outcome(samples=None)) == "inconclusive"
    assert verdict_of(outcome(deviated=True)) == "deviated"
    assert verdict_of(outcome(state="halted")) == "halted"
    # the fault removed, the lab still failing at the end: said as such, not as a deviation by the fault
    assert verdict_of(outcome(deviated=True, samples="violated", metastable=True)) == "metastable"
    assert verdict_of(outcome(deviated=True, samples="violated", metastable=False)) == "deviated"


def test_a_lab_whose_load_was_lowered_gets_a_baseline_with_as_many_requests():
    from chaosinject.lab.db_timeout_demo import MAX_BASELINE_S, baseline_for_rate

    assert baseline_for_rate(12, 50) == (12, "")
    assert baseline_for_rate(12, 80) == (12, "")
    seconds, why = baseline_for_rate(12, 14)
    assert seconds == 43 and why.startswith("600 requests at 14/s")
    assert baseline_for_rate(12, 2)[0] == MAX_BASELINE_S
    seconds, why = baseline_for_rate(12, 2, max_s=420)        # the VM lab's cap: 600 requests at 2/s fit
    assert seconds == 300 and "capped" not in why
    seconds, why = baseline_for_rate(12, 1, max_s=420)
    assert seconds == 420 and why.endswith("capped at 420 s")


def test_the_load_rate_is_the_definitions_unless_the_measured_capacity_says_lower():
    from chaosinject.lab.capacity import MIN_RATE_PER_S, load_rate

    rate, note = load_rate(600.0, 50.0)
    assert rate == 50 and note == "api capacity measured at lab up: 600/s, the load 8% of it"
    rate, note = load_rate(36.6, 50.0)
    assert rate == 14 and note.startswith("lowered from 50/s: api capacity measured at lab up 36.6/s")
    assert load_rate(0.0, 50.0)[0] == MIN_RATE_PER_S


def test_demo_prints_the_time_to_recover_and_what_the_settle_window_left_out(tmp_path):
    from chaosinject.cli.demo import verdict_lines

    assert verdict_lines(tmp_path) == ["recorded samples: no verdict (no samples were recorded)"]
    rec = {"settle_text": "first 2 s after the fault's removal not judged: 100 requests, 8 errors",
           "recover_text": "time to recover: 0.825 s (the last failed request of the recovery started 0.825 s after "
                           "the fault's removal; 8 of 1205 requests failed)"}
    (tmp_path / "verdict.json").write_text(json.dumps({
        "outcome": "held", "spec_text": "error rate < 1.00%", "recovery": rec,
        "phases": {"recovery": {"summary": "recovery: steady state restored: HELD (...); " + rec["settle_text"]}}}))
    lines = verdict_lines(tmp_path)
    assert lines[0] == "recorded samples: steady state HELD (error rate < 1.00%)"
    assert lines[1].endswith("; first 2 s after the fault's removal not judged: 100 requests, 8 errors")
    assert lines[2] == "  recovery: " + rec["recover_text"]
    # a verdict.json from before the recovery record: no time-to-recover line
    (tmp_path / "verdict.json").write_text(json.dumps({"outcome": "held", "phases": {}}))
    assert len(verdict_lines(tmp_path)) == 1


def test_capacity_is_one_window_when_enough_else_the_median_of_three(monkeypatch):
    """A fake api answering in 4 ms: one window (>= min_s) when it already allows the load, else three."""
    from chaosinject.lab import capacity

    class Reply:
        status = 200

    def fake_get(url, timeout_s=5.0):
        time.sleep(0.004)
        return Reply()

    monkeypatch.setattr(capacity, "get", fake_get)
    start = time.monotonic()
    one = capacity.measure_capacity("http://x/items", 1, min_s=0.3, min_answers=5, enough_per_s=1.0)
    one_s = time.monotonic() - start
    start = time.monotonic()
    three = capacity.measure_capacity("http://x/items", 1, min_s=0.3, min_answers=5, enough_per_s=1e9)
    three_s = time.monotonic() - start
    assert 50 < one < 260 and 50 < three < 260, (one, three)     # ~1 / 4 ms, less the scheduler's slack
    assert one_s < 0.6 and three_s >= 0.9, (one_s, three_s)


def test_the_capacity_probe_is_waited_out_of_the_error_rate_window(monkeypatch):
    """One rule for `lab demo` and the VM lab (vagrant/provision/experiment.py): the probe's requests leave the
    window ``window + SCRAPE_LAG_S`` after the probe, so only what is left of that is waited."""
    slept: list[float] = []
    monkeypatch.setattr(db_timeout_demo.time, "sleep", slept.append)
    said: list[str] = []
    db_timeout_demo.age_out_capacity_probe("10s", 4.0, said.append)
    assert slept == [pytest.approx(10.0 + db_timeout_demo.SCRAPE_LAG_S - 4.0)] and "10s" in said[0]
    db_timeout_demo.age_out_capacity_probe("10s", 10.0 + db_timeout_demo.SCRAPE_LAG_S + 0.1, said.append)
    assert len(slept) == 1 and len(said) == 1     # already out of the window: no wait, nothing said
