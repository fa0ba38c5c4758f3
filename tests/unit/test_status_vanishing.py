"""`chaos-inject status` while runs end under it: a ledger or history file listed, then removed by its run (or by
another run's history pruning) before status reads it, is skipped, not a crash (seen once in the fleet crash walk:
the sweep module's `status --json` on a host whose runs were ending)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from injector.cli import status as status_cli
from injector.kernel import ledger as ledger_mod


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path))
    return tmp_path


def make_ledger(run_id: str) -> ledger_mod.Ledger:
    led = ledger_mod.Ledger(run_id=run_id, meta={"flows": ["10.0.0.1->10.0.0.2"], "engine": "ebpf"})
    led.save()
    return led


def test_a_ledger_deleted_between_listing_and_reading_is_skipped(run_dir, monkeypatch, capsys):
    keep, going = make_ledger("keep-1"), make_ledger("going-2")
    listed = ledger_mod.ledger_files

    def listing_then_the_run_ends():
        paths = listed()
        going.delete()                  # the run ends (Ledger.delete) after the listing, before the read
        return paths

    monkeypatch.setattr(ledger_mod, "ledger_files", listing_then_the_run_ends)
    assert status_cli.cmd_status(argparse.Namespace(json=True, recent=None)) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [keep.run_id]


def test_history_pruned_between_listing_and_stat_is_skipped(run_dir, monkeypatch, capsys):
    for i in range(3):
        ledger_mod.record_final({"run_id": f"old-{i}", "state": "completed", "updated": i})
    pruned = ledger_mod.history_dir() / "old-1.json"
    real_glob = Path.glob

    def glob_then_pruned(self, pattern):
        paths = list(real_glob(self, pattern))
        pruned.unlink(missing_ok=True)  # another run's record_final prunes it after the listing
        return iter(paths)

    monkeypatch.setattr(Path, "glob", glob_then_pruned)
    assert [f["run_id"] for f in ledger_mod.recent_finished(10)] == ["old-0", "old-2"]
    assert status_cli.cmd_status(argparse.Namespace(json=False, recent=5)) == 0
    assert "old-2" in capsys.readouterr().out
    ledger_mod.record_final({"run_id": "new-3", "state": "stopped"})     # its own pruning copes too
