"""The seed's PodChaos (pod-kill, mode one, selector app: api) against the netns lab: the api's processes are
killed, the lab inventory's restart command (`chaos-inject lab restart api`) brings the api back under the
lab's ownership (state.json records the new process, with its tag), /health answers 200 again, the lab is
healthy, and `lab down` leaves nothing: namespaces, host link, state directory, old or new process."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from chaosinject.experiment.foreign import load_any
from chaosinject.experiment.runner import RunOptions, run_experiment
from chaosinject.httpclient import get as http_get
from chaosinject.lab import LabSpec, lab_down, lab_restart, lab_status, lab_up
from chaosinject.lab.netlab import lab_leftovers
from chaosinject.procfs import process_alive

from .labkit import free_subnet, needs_lab

SEED = Path(__file__).resolve().parents[2] / "injector/experiment/examples/seed-chaos-mesh.yaml"
CLI = [sys.executable, "-m", "chaosinject.cli"]

pytestmark = needs_lab


def _free_subnet() -> str:
    return free_subnet("10.214")


def _health(info) -> int | None:
    return http_get(f"{info.api_url}/health", timeout_s=1).status


def _api_entries(spec: LabSpec) -> list[dict]:
    state = json.loads((spec.state_dir / "state.json").read_text())
    return [e for e in state["made"] if e["kind"] == "process" and e["role"] == "api"]


@pytest.fixture(scope="module")
def lab():
    spec = LabSpec(prefix="cirs" + secrets.token_hex(2), subnet=_free_subnet(),
                   state_dir=Path("/run/chaos-inject") / f"lab-restart-test-{secrets.token_hex(3)}")
    pids: set[int] = set()
    try:
        info = lab_up(spec)
        pids.update(info.processes.values())
        yield spec, info, pids
        status = lab_status(spec)
        pids.update(status.info.processes.values() if status.info else ())
    finally:
        lab_down(spec)
    time.sleep(0.2)
    left = lab_leftovers(spec, pids)
    assert not left, f"left behind: {left}"


def test_seed_pod_kill_restarts_the_api_under_the_lab(lab, tmp_path, monkeypatch):
    spec, info, pids = lab
    monkeypatch.setenv("CHAOS_INJECT_INVENTORY", info.inventory_path)     # as `chaos-inject run --inventory`
    old = info.processes["api"]
    (old_entry,) = _api_entries(spec)
    inventory = tomllib.loads(Path(info.inventory_path).read_text())
    assert "lab restart api" in inventory["hosts"]["api"]["restart"]
    docs = list(yaml.safe_load_all(SEED.read_text()))
    (pod,) = [d for d in docs if d["kind"] == "PodChaos"]     # as published: pod-kill, mode one, app: api
    manifest = tmp_path / "pod-kill.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    exp, kind, _ = load_any(manifest, inventory=info.inventory_path, seed=1)
    assert kind == "chaos-mesh"
    lines: list[str] = []
    out = run_experiment(exp, RunOptions(run_dir=tmp_path / "run", progress=lines.append, handle_signals=False))
    log = "\n".join(lines)
    assert out.state == "completed" and out.exit_code == 0, log
    (action,) = out.journal["run"]
    assert action["status"] == "succeeded", action
    (host,) = action["output"]["hosts"]
    assert host["host"] == "api" and old in host["killed_pids"] and host["restarted"] is True, host
    assert not process_alive(old, None)

    # kill_hosts returned once the new api accepted on its port (not after a fixed 1 s watch of the command)
    with socket.create_connection((info.addresses["api"], info.ports["api"][0]), timeout=2):
        pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _health(info) != 200:
        time.sleep(0.1)
    assert _health(info) == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not lab_status(spec).up:  # state.json saved after the service serves
        time.sleep(0.1)
    status = lab_status(spec)
    assert status.up, status.problems
    new = status.info.processes["api"]
    pids.add(new)
    (entry,) = _api_entries(spec)                      # the old entry went with its process
    assert new != old and entry["pid"] == new and entry["tag"] != old_entry["tag"] and process_alive(new, None)
    environ = Path(f"/proc/{new}/environ").read_bytes().split(b"\0")
    assert f"CHAOS_INJECT_LAB_TAG={entry['tag']}".encode() in environ   # tagged as the lab tags its processes
    assert os.stat(f"/proc/{new}/ns/net").st_ino == os.stat(f"/run/netns/{spec.netns('api')}").st_ino


def test_restart_of_a_running_service_and_refusals(lab):
    spec, info, pids = lab
    old = info.processes["api"]
    t = time.monotonic()
    again = lab_restart("api", spec)               # running: stopped first, then started
    restart_s = time.monotonic() - t
    pids.add(again.processes["api"])
    assert again.processes["api"] != old and not process_alive(old, None) and _health(info) == 200
    assert lab_status(spec).up and len(_api_entries(spec)) == 1
    print(f"\nlab restart api (running api): {restart_s:.2f} s")
    from chaosinject.errors import InvalidSpec

    with pytest.raises(InvalidSpec, match="lab role"):
        lab_restart("web", spec)
    bad = subprocess.run([*CLI, "lab", "restart", "--prefix", spec.prefix, "--subnet", spec.subnet,
                          "--state-dir", str(spec.state_dir)], capture_output=True, text=True)
    assert bad.returncode == 2 and "ROLE" in bad.stderr, bad.stderr
    assert lab_status(spec).info.processes["api"] == again.processes["api"]     # nothing changed
