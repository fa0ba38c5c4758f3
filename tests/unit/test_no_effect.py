"""Principle 1 in the runner: a fault that took no effect fails the experiment (Chaos Toolkit would call a
non-zero process action a success and the run completed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chaosinject.experiment import parse_experiment
from chaosinject.experiment.effects import no_effect as _no_effect
from chaosinject.experiment.runner import RunOptions, run_experiment


pytestmark = pytest.mark.usefixtures("run_root")   # tests/unit/conftest.py


def _sh(cmd: str, name: str, kind: str = "action") -> dict:
    return {"type": kind, "name": name, "provider": {"type": "process", "path": "sh", "arguments": ["-c", cmd]}}


def _run(tmp_path, method, rollbacks=()):
    exp = parse_experiment({"title": "t", "description": "d", "method": list(method), "rollbacks": list(rollbacks)})
    return run_experiment(exp, RunOptions(run_dir=tmp_path / "out", handle_signals=False))


def test_process_action_exiting_non_zero_fails_the_run_and_rolls_back(tmp_path):
    undone = tmp_path / "undone"
    out = _run(tmp_path, [_sh("echo no netem >&2; exit 2", "inject")], [_sh(f"touch {undone}", "undo")])
    j = out.journal
    assert (out.state, out.exit_code, j["status"], j["deviated"]) == ("failed", 1, "failed", False)
    assert j["run"][0]["status"] == "succeeded"          # the activity itself keeps chaoslib's verdict
    assert j["chaos-inject"]["no_effect"] == ["action 'inject' exited with status 2"]
    assert "the fault did not take effect: action 'inject' exited with status 2" in j["chaos-inject"]["reason"]
    assert undone.exists()
    report = (tmp_path / "out" / "report.md").read_text()
    failed = report.split("## What failed")[1].split("##")[0]
    assert "the fault did not take effect: action 'inject' exited with status 2" in failed


def test_failed_action_fails_the_run(tmp_path):
    bad = {"type": "action", "name": "inject", "provider": {"type": "python", "module": "json", "func": "loads",
                                                            "arguments": {"s": "not json"}}}
    out = _run(tmp_path, [bad])
    assert (out.state, out.exit_code) == ("failed", 1)
    assert out.journal["chaos-inject"]["no_effect"] == ["action 'inject' failed"]


def test_probes_and_succeeding_actions_are_not_judged(tmp_path):
    out = _run(tmp_path, [_sh("exit 0", "inject"), _sh("exit 1", "look", kind="probe")])
    assert (out.state, out.exit_code, out.journal["chaos-inject"]["no_effect"]) == ("completed", 0, [])


def _session(run_id, span, counters):
    return SimpleNamespace(run_id=run_id, active_span_ns=span, counters=lambda: counters,
                           plan=SimpleNamespace(faults=[SimpleNamespace(describe=lambda: "delay 5s")]))


def test_fault_that_matched_no_packet_is_no_effect():
    journal = {"run": []}
    sessions = [                                                        # this run's (the runner picks them)
        _session("a", (100, 200), {1: {"matched_packets": 0, "delayed_packets": 0}}),   # ours, matched nothing
        _session("b", (100, 200), {1: {"matched_packets": 0}, 2: {"matched_packets": 7}}),  # one rule matched
        _session("d", None, {}),                                       # never active
        _session("e", (100, None), {1: {"other": 1}}),                 # no counters to judge by
    ]
    assert _no_effect(journal, sessions) == ["fault a (delay 5s) matched no packet"]


def test_a_run_reports_only_the_faults_it_started(tmp_path, monkeypatch):
    """Faults of an earlier run in the same process (a schedule, a notebook, a test suite) are not this run's:
    neither listed in its journal nor judged by its no-effect rule."""
    import chaosinject.experiment.actions as actions

    import time

    # still active (no end): were it taken for this run's, it would keep the recovery from starting at its removal
    earlier = _session("earlier-run", (time.monotonic_ns(), None), {"0": {"matched_packets": 0}})
    monkeypatch.setattr(actions, "_STARTED", [earlier])
    out = _run(tmp_path, [_sh("exit 0", "inject")])
    ci = out.journal["chaos-inject"]
    assert (out.state, out.exit_code, ci["faults"], ci["no_effect"]) == ("completed", 0, [], [])
    assert ci["fault_onset"] is None
    assert actions.started_sessions() == [earlier] and actions.started_sessions(actions.session_mark()) == []
