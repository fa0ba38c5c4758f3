"""`sweep` records how a run whose owner died ended (history: failed, "owner died; swept"), so `status` shows it."""

from __future__ import annotations

import json
import subprocess

import pytest

from chaosinject.kernel import undo
from chaosinject.kernel.ledger import Ledger, history_dir, record_final, recent_finished
from chaosinject.kernel.sweep import SWEPT_ERROR, sweep


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setitem(undo.UNDO, "test", lambda entry: None)
    return tmp_path / "run"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def dead_ledger(run_id: str, status: dict | None = None, kind: str = "detached") -> Ledger:
    ledger = Ledger(run_id=run_id, pid=dead_pid(), meta={"kind": kind, "flows": ["a->b"], "engine": "ebpf"},
                    entries=[{"kind": "test", "name": "x"}])
    ledger.save()
    if status is not None:
        ledger.write_status(status)
    return ledger


def test_a_swept_active_run_is_recorded_as_failed_with_its_last_status():
    dead_ledger("r1", {"run_id": "r1", "state": "running", "kind": "detached", "fault": "loss 10%",
                       "counters": {"0": {"matched_packets": 7}}, "elapsed_s": 3.0})
    report = sweep()
    assert report.swept_runs == ["r1"]
    (final,) = recent_finished()
    assert final["state"] == "failed" and final["error"] == SWEPT_ERROR and final["stop_reason"] == "owner-died"
    assert final["last_state"] == "running" and final["counters"] == {"0": {"matched_packets": 7}}
    assert final["kind"] == "detached" and final["fault"] == "loss 10%" and final["swept"] > 0


def test_a_run_that_died_before_its_fault_was_active():
    dead_ledger("r2", None, kind="cli")
    sweep()
    (final,) = recent_finished()
    assert final["state"] == "failed" and final["last_state"] == "pending"
    assert final["error"].startswith(SWEPT_ERROR) and "before the fault was active" in final["error"]
    assert final["kind"] == "cli" and final["flows"] == ["a->b"]


def test_a_final_state_the_owner_recorded_is_kept():
    dead_ledger("r3", {"run_id": "r3", "state": "running"})
    record_final({"run_id": "r3", "state": "failed", "error": "CleanupFailed(...)"})
    sweep()
    assert json.loads((history_dir() / "r3.json").read_text())["error"] == "CleanupFailed(...)"


def test_recorder_ledgers_and_unswept_runs_are_not_recorded(monkeypatch):
    dead_ledger("record-ab", None, kind="recording")
    dead_ledger("r4", {"run_id": "r4", "state": "running"})
    busy = [True]

    def undo_test(entry):
        if busy[0]:
            raise OSError("busy")

    monkeypatch.setitem(undo.UNDO, "test", undo_test)
    report = sweep()
    assert report.failures and not recent_finished(), "nothing recorded while a run's objects remain"
    busy[0] = False
    report = sweep()
    assert sorted(report.swept_runs) == ["r4", "record-ab"]
    assert [f["run_id"] for f in recent_finished()] == ["r4"]  # a recorder's ledger is not a run


def test_live_runs_are_not_recorded():
    Ledger(run_id="live", entries=[{"kind": "test", "name": "l"}]).save()
    assert sweep().live_runs == ["live"] and not recent_finished()


def test_final_record_reads_one_run_by_its_id():
    record_final({"run_id": "r-a", "state": "completed"})
    record_final({"run_id": "r-b", "state": "stopped"})
    from chaosinject.kernel.ledger import final_record

    assert final_record("r-a") == {"run_id": "r-a", "state": "completed"}
    assert final_record("r-b")["state"] == "stopped"
    (history_dir() / "r-c.json").write_text("{half")                  # a foreign, broken file
    for missing in ("r-none", "r-c", "", "../r-a", ".hidden"):
        assert final_record(missing) is None, missing


def test_sweep_removes_half_written_state_files_of_dead_writers_only(run_dir):
    """A writer killed between write_json_atomic's write and its rename leaves <name>.tmp<pid>-<thread>
    (found by the kill -9 soak); sweep removes it when that pid is dead, and never a live writer's."""
    import os

    from chaosinject.files import orphaned_temp_files

    runs = run_dir / "runs"
    runs.mkdir(parents=True)
    dead = runs / f"probe-1-2.json.tmp{dead_pid()}-140693654085696"
    live = runs / f"x.json.tmp{os.getpid()}-1"
    other = runs / "notes.tmp"
    for p in (dead, live, other):
        p.write_text("{")
    assert orphaned_temp_files(runs) == [dead]
    report = sweep()
    assert {"kind": "temp-file", "path": str(dead)} in report.removed
    assert not dead.exists() and live.exists() and other.exists()
    assert not sweep().removed
