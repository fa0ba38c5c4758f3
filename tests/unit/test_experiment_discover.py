"""`chaos discover chaos-inject` (the real Chaos Toolkit CLI, from the dev extra) finds our discover():
chaoslib imports the distribution's top-level name, chaosinject, and calls its discover() (no root)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS = Path(sys.executable).parent / "chaos"


def _as_installed(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """Run in a directory of its own without PYTHONPATH: the installed package, as a user has it (from the
    checkout, its build's chaos_inject.egg-info would be found first)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(code, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_chaos_discover_finds_our_actions_and_probes(tmp_path):
    pytest.importorskip("chaoslib", reason="chaostoolkit is not installed (pip install -e .[dev])")
    if not CHAOS.exists():
        pytest.skip(f"the chaos CLI is not installed beside this interpreter ({CHAOS})")
    top = _as_installed(tmp_path, [sys.executable, "-c", "import importlib.metadata as m; "
                                   "print(m.distribution('chaos-inject').read_text('top_level.txt'))"])
    if top.stdout.split() != ["chaosinject"]:
        pytest.skip(f"the installed chaos-inject metadata predates the name chaosinject ({top.stdout.split()}): "
                    "reinstall (make setup)")
    name = _as_installed(tmp_path, [sys.executable, "-c", "from chaoslib.discovery.package import "
                                    "get_importname_from_package as f; print(f('chaos-inject'))"])
    assert name.stdout.strip() == "chaosinject", name.stderr   # what chaoslib imports
    out = tmp_path / "discovery.json"
    r = _as_installed(tmp_path, [str(CHAOS), "discover", "chaos-inject", "--no-install", "--no-system-info",
                                 "--discovery-path", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(out.read_text())
    assert d["extension"]["name"] == "chaos-inject"
    found = {(a["type"], a["mod"], a["name"]) for a in d["activities"]}
    assert {("action", "chaosinject.experiment.actions", "start_network_fault"),
            ("action", "chaosinject.experiment.actions", "stop_network_fault"),
            ("probe", "chaosinject.experiment.probes", "http_latency_samples")} <= found
    for kind, mod, name in found:   # each is callable the way an experiment file names it
        assert callable(getattr(importlib.import_module(mod), name)), (kind, mod, name)
    start = next(a for a in d["activities"] if a["name"] == "start_network_fault")
    assert {"flow", "duration", "delay"} <= {arg["name"] for arg in start["arguments"]}
