"""The experiment journal's room (injector/experiment/journal.py): what a journal holds before the run, how
values become JSON, and how an experiment's declared verdict decides a completed run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chaosinject.experiment.journal import declared_verdict_failed, jsonable, new_journal, write_json
from chaosinject.experiment.spec import parse_experiment


def test_jsonable_turns_numpy_and_nan_into_json_values():
    value = {1: np.arange(3), "t": (np.float64(0.5), np.int64(7)), "nan": float("nan"), "p": Path("/x")}
    assert jsonable(value) == {"1": [0, 1, 2], "t": [0.5, 7], "nan": None, "p": "/x"}
    # the run directory's meta.json goes through the same conversion (files.jsonable): NaN in arrays and numpy
    # scalars too, numpy booleans as booleans
    got = jsonable({"a": np.array([1.0, np.nan]), "s": np.float32("nan"), "b": np.bool_(True)})
    assert got == {"a": [1.0, None], "s": None, "b": True} and type(got["b"]) is bool


def test_write_json_keeps_the_order_keys_were_set(tmp_path):
    path = tmp_path / "run" / "journal.json"
    write_json(path, {"status": "completed", "deviated": False, "duration": np.float32(1.5)})
    assert list(json.loads(path.read_text())) == ["status", "deviated", "duration"]
    assert json.loads(path.read_text())["duration"] == 1.5
    assert [p.name for p in path.parent.iterdir()] == ["journal.json"]


def test_a_new_journal_has_chaoslib_fields_and_nothing_run():
    exp = parse_experiment({"title": "t", "description": "d", "method": [
        {"type": "action", "name": "a", "provider": {"type": "python", "module": "os", "func": "getpid"}}]})
    j = new_journal(exp)
    assert j["experiment"]["title"] == "t" and j["status"] is None and j["deviated"] is False
    assert j["run"] == [] and j["rollbacks"] == []
    assert j["steady_states"] == {"before": None, "after": None, "during": []}


def _journal(verdict, **ci):
    return {"deviated": False, "chaos-inject": {"verdict": verdict, "verdict_phases": {"fault": verdict}, **ci}}


def test_declared_verdict_held_passes_and_says_nothing():
    why: list[str] = []
    j = _journal("held")
    assert declared_verdict_failed(j, why.append) is False
    assert why == [] and j["deviated"] is False


def test_declared_verdict_violated_deviates_and_the_rest_fail_without_deviating():
    why: list[str] = []
    j = _journal("violated")
    assert declared_verdict_failed(j, why.append) is True and j["deviated"] is True
    assert "violate" in why[0] and "fault violated" in why[0]
    j = _journal("inconclusive")
    assert declared_verdict_failed(j, why.append) is True and j["deviated"] is False
    assert "INCONCLUSIVE" in why[1]
    j = _journal(None, report_error="OSError: disk full")
    assert declared_verdict_failed(j, why.append) is True and "disk full" in why[2]
    assert "no samples were recorded" in (declared_verdict_failed(_journal(None), why.append) and why[3])
