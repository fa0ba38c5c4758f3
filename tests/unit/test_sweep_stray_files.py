"""Files no live run owns: a kill inside Ledger.delete() leaves a run's status file or stop request without its
ledger, a kill between write_json_atomic's write and rename leaves a temporary file. `sweep` removes them,
`status` and `sweep --dry-run` list them; a run being made or running keeps its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaosinject.fleet.ledger import FleetLedger
from chaosinject.kernel.ledger import Ledger, ledger_dir
from chaosinject.kernel.owner import KernelOwner
from chaosinject.kernel.sweep import orphaned_run_files, stray_files, sweep


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def unlinks_in_order(monkeypatch, then=None) -> list[str]:
    """Record the names Path.unlink removes; ``then(name)`` runs right after each (a concurrent process)."""
    seen: list[str] = []
    real = Path.unlink

    def unlink(self, missing_ok=False):
        real(self, missing_ok=missing_ok)
        seen.append(self.name)
        if then:
            then(self.name)
    monkeypatch.setattr(Path, "unlink", unlink)
    return seen


@pytest.mark.parametrize("make", ["kernel", "fleet"])
def test_delete_unlinks_the_ledger_before_its_side_files(monkeypatch, tmp_path, make):
    if make == "kernel":
        ledger = Ledger(run_id="r-1")
        ledger.save()
        ledger.write_status({"state": "running"})
    else:
        ledger = FleetLedger("r-1", str(tmp_path / "hosts.yml"))
        ledger.plan(["w1"])
    ledger.stop_path.write_text("stopped")
    seen = unlinks_in_order(monkeypatch)
    ledger.delete()
    assert seen[0] == "r-1.json" and "r-1.stop" in seen, seen
    assert not os.listdir(ledger_dir())


def test_a_stop_request_that_lands_inside_delete_is_not_left_behind(monkeypatch):
    """CI3's fleet walk: `stop` found the ledger, wrote its request while the owner was deleting. Whichever
    side's unlink comes last, nothing is left."""
    ledger = Ledger(run_id="r-2")
    ledger.save()
    stopper = Ledger.load(ledger.path)   # what `chaos-inject stop` read before the owner began delete()
    requested = []

    def stop_meanwhile(name):
        if not requested:   # the request arrives right after the first unlink of delete()
            requested.append(name)
            stopper.request_stop()
    unlinks_in_order(monkeypatch, then=stop_meanwhile)
    ledger.delete()
    assert requested == ["r-2.json"]
    assert not os.listdir(ledger_dir()), os.listdir(ledger_dir())


def test_a_kill_inside_delete_leaves_side_files_that_sweep_removes_and_dry_run_lists():
    ledger = Ledger(run_id="r-3", pid=dead_pid())
    ledger.save()
    ledger.write_status({"state": "running"})
    ledger.stop_path.write_text("stopped")
    ledger.path.unlink()                 # delete()'s first step, then SIGKILL
    strays = stray_files()
    assert [(s["kind"], Path(s["path"]).name) for s in strays] == [("run-file", "r-3.status.json"),
                                                                    ("run-file", "r-3.stop")]
    report = sweep()
    assert {"kind": "run-file", "path": str(ledger.stop_path)} in report.removed
    assert {"kind": "run-file", "path": str(ledger.status_path)} in report.removed
    assert not os.listdir(ledger_dir()) and not stray_files()


def test_the_files_of_a_run_being_made_or_running_are_kept():
    """The write order that makes the sweep safe: the ledger is saved before any status; so at no point of a
    live run's life is its status or stop request without its ledger."""
    with KernelOwner("r-4", meta={"kind": "test"}, handle_signals=False) as owner:
        assert owner.ledger.path.exists()          # saved on entry, before the run writes anything else
        owner.ledger.write_status({"state": "running"})
        owner.ledger.request_stop()
        assert orphaned_run_files() == [] and stray_files() == []
        sweep()
        assert owner.ledger.status_path.exists() and owner.ledger.stop_path.exists()
    assert not os.listdir(ledger_dir())


def test_a_dead_runs_side_files_wait_for_its_ledger_to_be_swept():
    ledger = Ledger(run_id="r-5", pid=dead_pid())
    ledger.save()
    ledger.write_status({"state": "running"})
    assert orphaned_run_files() == []            # its ledger is there: the run's sweep deletes them with it
    sweep()
    assert not os.listdir(ledger_dir())


def test_status_and_sweep_dry_run_list_stray_files_and_change_nothing(run_dir):
    runs = run_dir / "runs"
    runs.mkdir(parents=True)
    stop = runs / "r-6.stop"
    temp = runs / f"r-7.json.tmp{dead_pid()}-140693654085696"
    for p in (stop, temp):
        p.write_text("x")
    env = {"CHAOS_INJECT_RUN_DIR": str(run_dir), "PATH": "/usr/bin:/bin"}

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "chaosinject.cli", *args], capture_output=True, text=True,
                             env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    status = cli("status")
    assert f"stray file {stop} (its run's ledger is gone)" in status, status
    assert f"stray file {temp} (half-written" in status, status
    as_json = [r for r in json.loads(cli("status", "--json")) if r.get("stray_file")]
    assert {r["path"] for r in as_json} == {str(stop), str(temp)}
    dry = cli("sweep", "--dry-run")
    assert f"sweep would remove {stop}" in dry and f"sweep would remove {temp}" in dry
    assert "0 dead run(s), 2 stray file(s); nothing changed (dry run)" in dry, dry
    assert {s["path"] for s in json.loads(cli("sweep", "--dry-run", "--json"))["stray_files"]} == {str(stop),
                                                                                                  str(temp)}
    assert stop.exists() and temp.exists()
    swept = cli("sweep")
    assert f"removed {stop}" in swept and f"removed {temp}" in swept, swept
    assert not os.listdir(runs)


def test_a_dead_experiment_runners_status_file_is_swept_a_live_ones_kept(run_dir):
    """`run` killed before it deleted its status file (experiments/<run id>.json) left it for good; `sweep` now
    removes it when its pid is dead. A live runner's, an unreadable file and a run directory are kept."""
    experiments = run_dir / "experiments"
    (experiments / "exp-live").mkdir(parents=True)          # a run directory under it (network.controls)
    (experiments / "exp-dead.json").write_text(json.dumps({"run_id": "exp-dead", "pid": dead_pid()}))
    (experiments / "exp-live.json").write_text(json.dumps({"run_id": "exp-live", "pid": os.getpid()}))
    (experiments / "exp-odd.json").write_text("not json")
    assert [s["path"] for s in stray_files()] == [str(experiments / "exp-dead.json")]
    report = sweep()
    assert {"kind": "experiment-status", "path": str(experiments / "exp-dead.json")} in report.removed
    assert sorted(p.name for p in experiments.iterdir()) == ["exp-live", "exp-live.json", "exp-odd.json"]
    assert stray_files() == []
