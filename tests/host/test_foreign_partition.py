"""The seed's Chaos Mesh NetworkChaos partition (api -> postgres, direction to, 30 s as published) run through
`chaos-inject run` against two throwaway namespaces labelled app=api / app=postgres in an inventory: the api
host cannot reach the db while it lasts, can before and after, and nothing is left. The test ends the fault
once it has measured it (as a rollback would): no race between a short duration and a slow probe."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from chaosinject.experiment.foreign import load_any
from chaosinject.experiment.runner import RunOptions, run_experiment

SEED = Path(__file__).resolve().parents[2] / "injector/experiment/examples/seed-chaos-mesh.yaml"

# one TCP connect to a closed port: "reachable" (RST back) or "timeout" (the partition drops the SYN)
CONNECT = r'''
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[2]))
try:
    s.connect((sys.argv[1], 9)); print("open")
except ConnectionRefusedError:
    print("reachable")
except (TimeoutError, socket.timeout):
    print("timeout")
'''


def _connect(ns: str, ip: str, script: Path, timeout: float = 0.5) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(script), ip, str(timeout)],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_seed_network_chaos_partition(pair, tmp_path, monkeypatch):
    docs = list(yaml.safe_load_all(SEED.read_text()))
    (partition,) = [d for d in docs if d["kind"] == "NetworkChaos"]
    assert partition["spec"]["duration"] == "30s"          # unchanged: the probe ends it early (below)
    manifest = tmp_path / "partition.yaml"
    manifest.write_text(yaml.safe_dump(partition))
    inv = tmp_path / "inventory.toml"
    inv.write_text(f'[hosts.api]\naddresses = ["{pair.client.ipv4.ip}"]\nnetns = "{pair.client_ns}"\n'
                   'labels = {app = "api"}\n'
                   f'[hosts.db]\naddresses = ["{pair.server.ipv4.ip}"]\nnetns = "{pair.server_ns}"\n'
                   'labels = {app = "postgres"}\n')
    monkeypatch.setenv("CHAOS_INJECT_INVENTORY", str(inv))
    script = tmp_path / "connect.py"
    script.write_text(CONNECT)
    db = str(pair.server.ipv4.ip)
    assert _connect(pair.client_ns, db, script) == "reachable"

    exp, kind, notes = load_any(manifest, seed=1)
    assert kind == "chaos-mesh"
    seen: list[str] = []
    lines: list[str] = []

    def probe():
        from chaosinject.experiment.actions import active_sessions, stop_network_fault

        try:
            deadline = time.monotonic() + 20           # the eBPF engine compiles its program first (bcc)
            while time.monotonic() < deadline and not any(s.active for s in active_sessions()):
                time.sleep(0.02)
            # measured while the 30 s fault is surely on, however slow the machine is ...
            seen.append(_connect(pair.client_ns, db, script))
            seen.append("active" if any(s.active for s in active_sessions()) else "ended before the probe")
        finally:
            stop_network_fault()                       # ... then ended, as a rollback would

    t = threading.Thread(target=probe)
    t.start()
    out = run_experiment(exp, RunOptions(run_dir=tmp_path / "run", progress=lines.append, handle_signals=False))
    t.join()
    log = "\n".join(lines)
    assert out.state == "completed" and out.exit_code == 0, (log, seen, out.journal["run"][0].get("output"))
    assert seen == ["timeout", "active"], log
    (run,) = out.journal["run"]
    assert run["status"] == "succeeded" and run["output"]["flows"] == ["api->db"]
    assert run["output"]["direction"] == "egress" and run["output"]["duration_s"] == 30.0
    assert run["output"]["state"] == "stopped"
    assert any(c.get("matched_packets") for c in run["output"]["counters"].values())
    assert _connect(pair.client_ns, db, script) == "reachable"
    tables = subprocess.run(["ip", "netns", "exec", pair.client_ns, "nft", "list", "tables"], capture_output=True,
                            text=True).stdout
    assert not tables.strip()
    filters = subprocess.run(["tc", "-n", pair.client_ns, "filter", "show", "dev", pair.client.ifname, "egress"],
                             capture_output=True, text=True).stdout
    assert "bpf" not in filters
