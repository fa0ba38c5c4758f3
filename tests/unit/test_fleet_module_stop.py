"""The fault module's stop (collection module_utils/chaos.py): it writes the same stop request `chaos-inject stop`
does (kernel/ledger.py), without a chaos-inject process on the target, and waits for the run's final record."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from injector.kernel import ledger as ledger_mod

CHAOS_UTILS = (Path(__file__).resolve().parents[2] / "ansible" / "ansible_collections" / "chaosinject" / "fleet"
               / "plugins" / "module_utils" / "chaos.py")


def load_utils():
    spec = importlib.util.spec_from_file_location("fleet_module_chaos", CHAOS_UTILS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeModule:
    def __init__(self, state_dir):
        self.params = {"state_dir": str(state_dir)}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path))
    return tmp_path


def test_the_request_is_the_one_the_runs_owner_reads(run_dir):
    chaos = load_utils()
    led = ledger_mod.Ledger(run_id="r-1")
    led.save()
    chaos.request_stop(FakeModule(run_dir), "r-1")
    assert led.stop_requested() == "stopped"


def test_a_request_for_a_run_that_ended_meanwhile_is_removed(run_dir):
    chaos = load_utils()
    (run_dir / "runs").mkdir()
    chaos.request_stop(FakeModule(run_dir), "gone-2")
    assert os.listdir(run_dir / "runs") == []


def test_wait_final_returns_once_the_owner_rolled_back(run_dir):
    chaos = load_utils()
    led = ledger_mod.Ledger(run_id="r-3")               # owned by this (live) process
    led.save()
    led.write_status({"run_id": "r-3", "pid": os.getpid(), "state": "running"})

    def owner_ends_it():
        while not led.stop_requested():
            time.sleep(0.01)
        led.delete()
        ledger_mod.record_final({"run_id": "r-3", "state": "stopped"})

    thread = threading.Thread(target=owner_ends_it)
    thread.start()
    chaos.request_stop(FakeModule(run_dir), "r-3")
    final = chaos.wait_final(FakeModule(run_dir), "r-3", timeout_s=5)
    thread.join()
    assert final["state"] == "stopped" and chaos.live_status(FakeModule(run_dir), "r-3") is None
