"""The recorded-samples verdict configured by the extension's `verdict` block: validation with field paths,
the spec it resolves to, per-phase expectations in the report and verdict.json, and the fault phase starting
when the fault became active (no root: a fake request recorder, fake sessions)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from chaosinject.experiment import ExperimentInvalid, parse_experiment
from chaosinject.experiment import effects
from chaosinject.experiment.report import verdict_spec
from chaosinject.experiment.runner import RunOptions, run_experiment
from chaosinject.experiment.spec import GuardSpec
from chaosinject.record.store import Phases, write_samples


pytestmark = pytest.mark.usefixtures("run_root")   # tests/unit/conftest.py


def _doc(verdict=None, **ext):
    act = {"type": "action", "name": "act",
           "provider": {"type": "python", "module": "json", "func": "loads", "arguments": {"s": "1"}}}
    e = {"name": "chaos-inject", "recovery": 0, "halt": {"enabled": False}, **ext}
    if verdict is not None:
        e["verdict"] = verdict
    return {"title": "t", "method": [act], "extensions": [e]}


SEED_LIKE = {"max_error_rate": "1%", "error_rate_tolerance": "1%", "latency_max": None, "latency_max_ratio": None,
             "expect": {"fault": "deviation", "recovery": "steady"}}


def test_every_bad_field_is_reported_with_its_path_and_nothing_runs():
    bad = {"quantile": 1.5, "latency_max": "soon", "latency_max_ratio": 0.5, "max_error_rate": 1,
           "error_rate_vs_baseline": "yes", "confidence": 0, "source": "logs", "colour": "red",
           "expect": {"baseline": "deviation", "fault": "moved", "later": "steady"}}
    with pytest.raises(ExperimentInvalid) as exc:
        parse_experiment(_doc(bad))
    paths = {p for p, _ in exc.value.errors}
    assert paths == {f"extensions[0].verdict.{k}" for k in (
        "quantile", "latency_max", "latency_max_ratio", "max_error_rate", "error_rate_vs_baseline", "confidence",
        "source", "colour", "expect.baseline", "expect.fault", "expect.later")}
    msgs = dict(exc.value.errors)
    assert "deviation is measured against it" in msgs["extensions[0].verdict.expect.baseline"]
    assert "percentage" in msgs["extensions[0].verdict.max_error_rate"]     # 1 is not 1 %: say so
    with pytest.raises(ExperimentInvalid, match="every check is off"):
        parse_experiment(_doc({"latency_max": None, "latency_max_ratio": None, "max_error_rate": None,
                               "error_rate_vs_baseline": False}))
    with pytest.raises(ExperimentInvalid, match=r"extensions\[0\]\.verdict: must be a mapping"):
        parse_experiment(_doc("strict"))


def test_block_overrides_the_guard_derived_default():
    exp = parse_experiment(_doc(SEED_LIKE))
    spec, expect, origin = verdict_spec(exp.verdict, exp.guard)
    assert (spec.max_error_rate, spec.tolerance, spec.latency_max_ns, spec.latency_max_ratio) == (0.01, 0.01, None, None)
    assert expect == {"fault": "deviation", "recovery": "steady"} and "`verdict` block" in origin
    # absent: today's behaviour, every phase steady, the guard's limits
    spec, expect, origin = verdict_spec(None, GuardSpec())
    assert (spec.max_error_rate, spec.latency_max_ratio, spec.latency_max_ns, expect) == (0.05, 2.0, None, {})
    assert origin.startswith("default: derived from the halt guard")
    # fields the block leaves out come from the guard
    spec, _, _ = verdict_spec(parse_experiment(_doc({"quantile": 0.9})).verdict, GuardSpec(max_error_rate=0.02))
    assert (spec.quantile, spec.max_error_rate) == (0.9, 0.02)


class _Requests:
    """A request recorder whose samples follow the phase windows: per phase (requests, errors)."""

    source = "request"

    def __init__(self, plan):
        self.plan = plan

    def start(self):
        pass

    def stop(self):
        pass

    def write(self, run_dir, phases: Phases):
        w = phases.windows()
        t, ok = [], []
        for name, (n, errors) in self.plan.items():
            t.append(np.linspace(w[name]["start_ns"], w[name]["end_ns"] - 1, n).astype(np.int64))
            ok.append(np.arange(n) >= errors)
        t, ok = np.concatenate(t), np.concatenate(ok)
        lat = np.where(ok, 2_000_000, 1_000_000_000)
        n = write_samples(run_dir, "request-0", phases, t_ns=t, flow="load->api", source="request", latency_ns=lat,
                          ok=ok, status=np.where(ok, 200, 503))
        return {"samples": n, "lost": 0}


PLAN = {"baseline": (500, 0), "fault": (500, 430), "recovery": (600, 0)}


def _run(doc, tmp_path):
    out = run_experiment(parse_experiment(doc), RunOptions(run_dir=tmp_path / "out", recorders=[_Requests(PLAN)],
                                                           handle_signals=False))
    d = tmp_path / "out"
    return out, (d / "report.md").read_text(), json.loads((d / "verdict.json").read_text())


def test_expected_deviation_reads_as_the_experiment_means_it(tmp_path):
    out, report, verdict = _run(_doc(SEED_LIKE), tmp_path)
    assert verdict["outcome"] == "held" and out.journal["chaos-inject"]["verdict"] == "held"
    assert verdict["expect"] == {"baseline": "steady", "fault": "deviation", "recovery": "steady"}
    assert {p: v["outcome"] for p, v in verdict["phases"].items()} == \
        {"baseline": "held", "fault": "deviated", "recovery": "held"}
    assert "fault: deviated as expected (error rate 86.0% vs 0.0%, +86.0%" in report
    assert "recovery: steady state restored: HELD (error rate 0.00% (0/600)" in report
    assert "baseline: steady state before the fault: HELD" in report
    # the dependence found in time order, per phase and metric, in the report and verdict.json
    assert "dependence baseline p99 exceedances: n=" in report
    assert set(verdict["dependence"]) == {"baseline", "fault", "recovery"}
    assert verdict["dependence"]["fault"]["error_rate"]["n"] == 500
    assert all(c["n"] is not None and c["n_eff"] <= c["n"] for c in verdict["checks"])
    assert "from: the experiment's `verdict` block" in report and "spec: error rate < 1.00%" in report
    assert "recorded samples: steady state **HELD** (baseline held, fault deviated, recovery held" in report
    assert verdict["spec"]["max_error_rate"] == 0.01
    fault = [c for c in verdict["checks"] if c["phase"] == "fault"]
    assert [(c["kind"], c["expect"], c["outcome"]) for c in fault] == [("change", "deviation", "deviated")]


def test_without_a_block_the_default_is_used_and_named(tmp_path):
    out, report, verdict = _run(_doc(), tmp_path)
    assert verdict["outcome"] == "violated" and verdict["phases"]["fault"]["outcome"] == "violated"
    assert set(verdict["expect"].values()) == {"steady"}
    assert "from: default: derived from the halt guard (no `verdict` block)" in report


def test_a_fault_that_does_not_show_is_not_held(tmp_path, monkeypatch):
    monkeypatch.setattr(_Requests, "__init__", lambda self, plan: setattr(self, "plan", {
        "baseline": (500, 0), "fault": (500, 0), "recovery": (600, 0)}))
    out, report, verdict = _run(_doc(SEED_LIKE), tmp_path)
    assert verdict["outcome"] == "inconclusive" and verdict["phases"]["fault"]["outcome"] == "no change"
    assert "fault: NO measurable change vs baseline: the fault did not measurably take effect" in report


class _Session:
    def __init__(self, span):
        self.active_span_ns = span


def test_fault_phase_starts_when_the_fault_became_active():
    phases = Phases()
    t0 = phases.mark("baseline")
    t_method = phases.mark("fault", t0 + 1000)
    ours = [_Session((t_method + 300, t_method + 900)), _Session((t_method + 250, None)), _Session(None)]
    phases.mark("recovery", t_method + 1000)
    onset = effects.fault_starts_when_active(phases, ours)
    assert onset["start_ns"] == t_method and onset["end_ns"] == t_method + 250
    w = phases.windows()
    assert w["baseline"]["end_ns"] == t_method and w["fault"]["start_ns"] == t_method + 250
    # samples in between are in no phase, before and after are labelled as before
    labels = phases.label(np.array([t_method - 1, t_method, t_method + 249, t_method + 250, t_method + 1000]))
    assert list(labels) == ["baseline", "", "", "fault", "recovery"]
    # no fault of ours became active (host actions only): the fault phase starts with the method
    p2 = Phases()
    p2.mark("baseline")
    t = p2.mark("fault")
    assert effects.fault_starts_when_active(p2, [_Session(None)]) is None and p2.starts["fault"] == t
    assert time.monotonic_ns() > t


def test_dry_run_plan_names_the_verdict_spec():
    from chaosinject.cli.experiment import describe_plan

    exp = parse_experiment(_doc(SEED_LIKE))
    plan = describe_plan(exp, {}, exp.guard, [])
    assert "recorded-samples verdict: error rate < 1.00%" in plan
    assert "expected: baseline steady, fault deviation, recovery steady (the experiment's `verdict` block" in plan
    plan = describe_plan(parse_experiment(_doc()), {}, GuardSpec(), [])
    assert "expected: baseline steady, fault steady, recovery steady (default: derived from the halt guard" in plan


# -- a declared verdict decides the exit code (Chaos Toolkit: deviated -> 1) ------------------------------------
def _outcome(out):
    ci = out.journal["chaos-inject"]
    return out.state, out.journal["status"], out.journal["deviated"], out.exit_code, ci["exit_code"]


def test_a_declared_verdict_that_held_exits_0(tmp_path):
    out, report, verdict = _run(_doc(SEED_LIKE), tmp_path)
    assert verdict["outcome"] == "held"
    assert _outcome(out) == ("completed", "completed", False, 0, 0)
    assert out.journal["chaos-inject"]["reason"] == "" and out.journal["chaos-inject"]["verdict_declared"] is True
    held = report.split("## What held")[1].split("##")[0]
    assert "the experiment's verdict on the recorded samples: held" in held
    assert json.loads((tmp_path / "out" / "journal.json").read_text())["chaos-inject"]["exit_code"] == 0


def test_a_declared_verdict_that_is_violated_deviates_and_exits_1(tmp_path, monkeypatch):
    # the recovery keeps failing: 100 errors in 600 is far above the block's 1 %
    monkeypatch.setattr(_Requests, "__init__", lambda self, plan: setattr(self, "plan", {
        "baseline": (500, 0), "fault": (500, 430), "recovery": (600, 100)}))
    out, report, verdict = _run(_doc(SEED_LIKE), tmp_path)
    assert verdict["outcome"] == "violated" and verdict["phases"]["recovery"]["outcome"] == "violated"
    assert _outcome(out) == ("completed", "completed", True, 1, 1)
    reason = out.journal["chaos-inject"]["reason"]
    assert "the recorded samples violate the experiment's verdict (baseline held, fault deviated, recovery violated)" \
        in reason
    assert "exit code 1" in report and reason in report
    failed = report.split("## What failed")[1].split("##")[0]
    assert "the experiment's verdict on the recorded samples: violated" in failed
    assert json.loads((tmp_path / "out" / "journal.json").read_text())["deviated"] is True


def test_a_declared_verdict_that_is_inconclusive_exits_1_without_deviating(tmp_path, monkeypatch):
    monkeypatch.setattr(_Requests, "__init__", lambda self, plan: setattr(self, "plan", {
        "baseline": (500, 0), "fault": (500, 0), "recovery": (600, 0)}))     # the fault did not show
    out, report, verdict = _run(_doc(SEED_LIKE), tmp_path)
    assert verdict["outcome"] == "inconclusive"
    assert _outcome(out) == ("completed", "completed", False, 1, 1)
    assert "the experiment's verdict is INCONCLUSIVE (baseline held, fault no change, recovery held)" in \
        out.journal["chaos-inject"]["reason"]


def test_a_declared_verdict_with_no_samples_is_not_judged_and_exits_1(tmp_path):
    out = run_experiment(parse_experiment(_doc(SEED_LIKE)), RunOptions(run_dir=tmp_path / "out", handle_signals=False))
    assert not (tmp_path / "out" / "verdict.json").exists()
    assert _outcome(out) == ("completed", "completed", False, 1, 1)
    assert "the experiment's verdict was not judged: no samples were recorded" in out.journal["chaos-inject"]["reason"]


def test_without_a_verdict_block_the_samples_do_not_change_the_exit_code(tmp_path):
    out, _, verdict = _run(_doc(), tmp_path)       # the guard-derived default is violated (the fault's errors)
    assert verdict["outcome"] == "violated"
    assert _outcome(out) == ("completed", "completed", False, 0, 0)
    assert out.journal["chaos-inject"]["verdict_declared"] is False


# -- recovery_settle: the recovery's first moments measured (time to recover), judged only after it ------------
def test_recovery_settle_is_parsed_and_bad_values_are_refused_with_their_path():
    assert parse_experiment(_doc({"recovery_settle": "2s"})).verdict.recovery_settle_ns == 2_000_000_000
    for off in (0, "0s", None):
        assert parse_experiment(_doc({"recovery_settle": off})).verdict.recovery_settle_ns == 0
    assert parse_experiment(_doc({"quantile": 0.9})).verdict.recovery_settle_ns == 0     # absent: today's behaviour
    for bad, why in (("-1s", "must not be negative"), (-2, "must not be negative"), ("soon", "not a duration"),
                     (2, "not a duration"), (True, "not a duration"), ("", "not a duration")):
        with pytest.raises(ExperimentInvalid) as exc:
            parse_experiment(_doc({"recovery_settle": bad}))
        assert [p for p, _ in exc.value.errors] == ["extensions[0].verdict.recovery_settle"]
        assert why in exc.value.errors[0][1]


class _EarlyRecoveryErrors(_Requests):
    """Clean baseline, the fault's 503s, and 600 recovery requests 50 us apart from the recovery's start whose
    first 40 fail (the transient: the last failure starts 1.95 ms after the fault's removal)."""

    def write(self, run_dir, phases: Phases):
        w = phases.windows()
        t = [np.linspace(w[p]["start_ns"], w[p]["end_ns"] - 1, 500).astype(np.int64) for p in ("baseline", "fault")]
        t.append(w["recovery"]["start_ns"] + 50_000 * np.arange(600, dtype=np.int64))
        assert t[-1][-1] < w["recovery"]["end_ns"]
        ok = [np.ones(500, bool), np.arange(500) >= 430, np.arange(600) >= 40]
        t, ok = np.concatenate(t), np.concatenate(ok)
        n = write_samples(run_dir, "request-0", phases, t_ns=t, flow="load->api", source="request",
                          latency_ns=np.where(ok, 2_000_000, 1_000_000_000), ok=ok, status=np.where(ok, 200, 503))
        return {"samples": n, "lost": 0}


def _run_settle(tmp_path, settle):
    block = dict(SEED_LIKE, **({"recovery_settle": settle} if settle is not None else {}))
    out = run_experiment(parse_experiment(_doc(block, recovery="60ms")), RunOptions(
        run_dir=tmp_path / "out", recorders=[_EarlyRecoveryErrors(None)], handle_signals=False))
    d = tmp_path / "out"
    return out, (d / "report.md").read_text(), json.loads((d / "verdict.json").read_text())


def test_errors_only_in_the_settle_window_hold_with_the_time_to_recover_reported(tmp_path):
    out, report, verdict = _run_settle(tmp_path, "5ms")
    assert verdict["outcome"] == "held" and out.exit_code == 0
    rec = verdict["recovery"]
    assert rec["settle_ns"] == 5_000_000 and rec["excluded"] == {"samples": 100, "requests": 100, "errors": 40}
    assert rec["time_to_recover_s"] == pytest.approx(39 * 50e-6) and (rec["requests"], rec["errors"]) == (600, 40)
    assert out.journal["chaos-inject"]["recovery"] == rec
    assert "recovery: steady state restored: HELD (error rate 0.00% (0/500)" in report
    assert "first 0.005 s after the fault's removal not judged: 100 requests, 40 errors" in report
    assert "- time to recover: 0.002 s (the last failed request of the recovery started 0.002 s after the fault's " \
           "removal; 40 of 600 requests failed)" in report
    assert "recovery settle: 0.005 s (the `verdict` block's recovery_settle)" in report
    html = (tmp_path / "out" / "report.html").read_text()
    assert "time to recover: 0.002 s" in html and "not judged: 100 requests, 40 errors" in html


def test_without_a_settle_time_the_transient_is_judged(tmp_path):
    out, report, verdict = _run_settle(tmp_path, None)
    assert verdict["outcome"] == "violated" and verdict["phases"]["recovery"]["outcome"] == "violated"
    assert out.exit_code == 1 and verdict["recovery"]["settle_ns"] == 0
    assert verdict["recovery"]["time_to_recover_s"] == pytest.approx(39 * 50e-6)
    assert "not judged" not in verdict["phases"]["recovery"]["summary"] and "- time to recover: 0.002 s" in report
