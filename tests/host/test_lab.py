"""The netns lab on this kernel: real PostgreSQL, api, Prometheus and load generator in namespaces of their own.

One lab (a unique prefix, a free subnet, its own state directory) serves the module; its teardown checks that
nothing it made is left: namespaces, the host link, processes, the state directory.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chaosinject.httpclient import get as http_get
from chaosinject.kernel.netns import Topology, existing_namespaces
from chaosinject.lab import LabError, LabSpec, RequestLogRecorder, lab_down, lab_status, lab_up, prometheus_query
from chaosinject.lab.netlab import lab_leftovers
from chaosinject.plan import Interface
from chaosinject.procfs import process_alive
from chaosinject.record import Phases
from chaosinject.spec import FaultSpec, Inventory

from .conftest import injected
from .labkit import free_subnet, needs_lab

SEED_QUERY = ("sum(rate(http_requests_total{status=~'5..'}[1m])) / sum(rate(http_requests_total[1m])) * 100")
CLI = [sys.executable, "-m", "chaosinject.cli"]

pytestmark = needs_lab


def _free_subnet() -> str:
    return free_subnet("10.213")


def _metric(info, handler: str, status: int) -> float:
    text = http_get(f"{info.api_url}/metrics").body.decode()
    key = f'http_requests_total{{handler="{handler}",status="{status}"}} '
    return sum(float(line[len(key):]) for line in text.splitlines() if line.startswith(key))


@pytest.fixture(scope="module")
def lab():
    spec = LabSpec(prefix="cilt" + secrets.token_hex(2), subnet=_free_subnet(),
                   state_dir=Path("/run/chaos-inject") / f"lab-test-{secrets.token_hex(3)}")
    pids: dict[str, int] = {}
    up_s = float("nan")
    start = time.monotonic()
    try:
        info = lab_up(spec)
        up_s = time.monotonic() - start
        pids.update(info.processes)
        yield spec, info
        pids.update(lab_status(spec).info.processes if lab_status(spec).info else {})
    finally:
        start = time.monotonic()
        lab_down(spec)
        down_s = time.monotonic() - start
        print(f"\nlab timing: up {up_s:.2f} s, down {down_s:.2f} s")
    time.sleep(0.2)
    left = lab_leftovers(spec, pids.values())
    assert not left, f"left behind: {left}"


@pytest.fixture
def run_dir_env(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(path))
    return path


def test_lab_is_up_and_up_again_is_idempotent(lab):
    spec, info = lab
    status = lab_status(spec)
    assert status.up, status.problems
    start = time.monotonic()
    again = lab_up(spec)
    assert again.processes == info.processes and time.monotonic() - start < 1.0
    # namespaces have only their connected lab route: no default route, no way to the uplink
    for role, ns in info.netns.items():
        routes = subprocess.run(["ip", "-n", ns, "-4", "route"], capture_output=True, text=True, check=True).stdout
        assert "default" not in routes and routes.strip().startswith(spec.subnet), (role, routes)


def test_health_200_and_items_200(lab):
    _, info = lab
    health = http_get(f"{info.api_url}/health")
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"
    items = http_get(f"{info.api_url}/items")
    assert items.status == 200 and len(json.loads(items.body)["items"]) == 20


def test_inventory_resolves_api_to_db_with_the_lab_netns(lab, run_dir_env):
    spec, info = lab
    inv = Inventory.load(info.inventory_path)
    assert inv.get("db").ports == (5432,) and inv.get("api").netns == spec.netns("api")
    out = subprocess.run([*CLI, "--inventory", info.inventory_path, "--flow", "api->db", "--partition",
                          "--duration", "1s", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{info.addresses['api']} -> {info.addresses['db']}:5432" in out.stdout
    assert f"lab0 (netns {spec.netns('api')})" in out.stdout


def test_items_503_not_500_when_db_is_partitioned_and_recorder_sees_it(lab, run_dir_env, tmp_path):
    """ebpf partition on api->db through the Python API; the request recorder labels the load's requests."""
    spec, info = lab
    recorder = RequestLogRecorder(info.request_log)
    recorder.start()
    phases = Phases()
    phases.mark("baseline")
    time.sleep(2.0)
    before_500 = _metric(info, "/items", 500)
    iface = Interface("lab0", spec.netns("api"))
    flow = f"{info.addresses['api']}->{info.addresses['db']}:5432/tcp"
    with injected(flow, FaultSpec(partition=True), iface, duration_s=30):
        phases.mark("fault")
        time.sleep(0.2)
        items = http_get(f"{info.api_url}/items")
        assert items.status == 503, items
        assert info.db_timeout_s * 0.9 < items.elapsed_s < info.db_timeout_s + 1.0, items.elapsed_s
        assert http_get(f"{info.api_url}/health").status == 200  # liveness does not touch the database
        time.sleep(2.0)
        live = recorder.read_new()
    phases.mark("recovery")
    deadline = time.monotonic() + 10
    while http_get(f"{info.api_url}/items").status != 200:  # pooled connections that missed a deadline are replaced
        assert time.monotonic() < deadline, "api did not recover after the partition"
        time.sleep(0.2)
    time.sleep(1.5)
    phases.close()
    recorder.stop()
    assert len(live) > 50 and (live.status == 503).any()
    assert _metric(info, "/items", 500) == before_500 == 0

    run = tmp_path / "run"
    summary = recorder.write(run, phases)
    (run / "meta.json").write_text(json.dumps({
        "run_id": "lab-test", "created": "2026-11-27T00:00:00+00:00", "flow": "api->db",
        "fault": {"partition": True}, "engine": "ebpf", "kernel": os.uname().release, "seed": None,
        "phases": phases.windows()}))
    (run / "counters.json").write_text("{}")
    from chaosinject.analysis import load_run

    df = load_run(run).samples
    assert summary["samples"] == len(df) > 200
    assert set(df["source"].astype(str)) == {"request"} and set(df["flow"]) == {"load->api"}
    by_phase = df.groupby("phase", observed=True)
    baseline, fault = by_phase.get_group("baseline"), by_phase.get_group("fault")
    fault_start = phases.windows()["fault"]["start_ns"]
    done_before = baseline[baseline["t_ns"] + baseline["latency_ns"] < fault_start]  # finished before the fault
    assert len(done_before) > 50 and done_before["ok"].all() and (done_before["status"] == 200).all()
    assert (fault["status"] == 503).mean() > 0.5 and not (fault["status"] == 500).any()
    failed = fault[~fault["ok"]]
    assert (failed["latency_ns"] > 0.9e9 * info.db_timeout_s).all()  # the api's deadline, measured by the client


def test_items_503_when_db_is_delayed_past_the_timeout(lab, run_dir_env):
    """userspace (NFQUEUE) delay on api->db, through the real CLI and the lab's inventory."""
    spec, info = lab
    proc = subprocess.Popen([*CLI, "--inventory", info.inventory_path, "--flow", "api->db", "--delay", "1500ms",
                             "--engine", "userspace", "--duration", "6s", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not list(run_dir_env.glob("runs/*.status.json")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "injector did not become active"
            time.sleep(0.1)
        time.sleep(0.5)
        results = [http_get(f"{info.api_url}/items") for _ in range(3)]
        assert [r.status for r in results] == [503] * 3, results
        assert all(0.9 * info.db_timeout_s < r.elapsed_s < info.db_timeout_s + 1.0 for r in results)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "delayed" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while http_get(f"{info.api_url}/items").status != 200:
        assert time.monotonic() < deadline, "api did not recover after the delay"
        time.sleep(0.2)


def test_prometheus_scrapes_and_answers_the_seed_query(lab):
    _, info = lab
    up = prometheus_query(info.prometheus_url, 'up{job="api"}')
    assert up and up[0]["value"][1] == "1"
    deadline = time.monotonic() + 10
    while True:
        result = prometheus_query(info.prometheus_url, SEED_QUERY)
        if result:
            break
        assert time.monotonic() < deadline, "the seed's error-rate query stayed empty"
        time.sleep(0.5)
    value = float(result[0]["value"][1])
    assert math.isfinite(value) and 0.0 <= value <= 100.0
    # scraped counters agree with the api's own
    total = prometheus_query(info.prometheus_url, 'sum(http_requests_total{handler="/items"})')
    assert float(total[0]["value"][1]) > 0


def test_lab_up_refuses_objects_it_does_not_own(lab):
    spec, _ = lab
    other = LabSpec(prefix="cilx" + secrets.token_hex(2), subnet=_free_subnet(),
                    state_dir=Path("/run/chaos-inject") / f"lab-test-{secrets.token_hex(3)}")
    with Topology() as topo:
        topo.add_namespace(other.netns("db"))
        with pytest.raises(LabError, match=f"{other.netns('db')}.*not ours to remove"):
            lab_up(other)
        assert other.netns("db") in existing_namespaces()  # not removed: not ours
    assert not other.state_dir.exists()
    assert not [ns for ns in existing_namespaces() if ns.startswith(other.prefix)]
    # a subnet already routed here is refused too
    clash = LabSpec(prefix="cily" + secrets.token_hex(2), subnet=spec.subnet,
                    state_dir=Path("/run/chaos-inject") / f"lab-test-{secrets.token_hex(3)}")
    with pytest.raises(LabError, match="overlaps a route"):
        lab_up(clash)
    assert not clash.state_dir.exists()


def test_lab_up_repairs_a_broken_lab(lab):
    spec, info = lab
    os.kill(info.processes["load"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while lab_status(spec).up:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert any("load" in p for p in lab_status(spec).problems)
    start = time.monotonic()
    repaired = lab_up(spec)
    print(f"\nlab repair (down + up): {time.monotonic() - start:.2f} s")
    assert lab_status(spec).up and repaired.processes["load"] != info.processes["load"]
    assert http_get(f"{repaired.api_url}/items").status == 200
    assert not process_alive(info.processes["api"], None)  # the old api went with the old lab


def test_request_log_rows_are_numpy_arrays(lab):
    """read_log hands numpy arrays (for halt guards): one row per request, in completion order."""
    _, info = lab
    from chaosinject.lab import read_log

    rows, end = read_log(info.request_log)
    assert isinstance(rows.t_ns, np.ndarray) and rows.t_ns.dtype == np.int64 and end % 24 == 0


def _cli_lab(spec: LabSpec, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "lab", *args, "--prefix", spec.prefix, "--subnet", spec.subnet, "--state-dir",
                           str(spec.state_dir)], capture_output=True, text=True, timeout=120)


def test_cli_lab_status_and_up_json(lab):
    spec, _ = lab
    status = _cli_lab(spec, "status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["up"] and body["lab"]["inventory_path"].startswith(str(spec.state_dir))
    again = _cli_lab(spec, "up", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["processes"] == body["lab"]["processes"]  # idempotent: the same lab


def test_lab_up_killed_half_way_is_removed_by_lab_down():
    """kill -9 of `lab up` while it builds: what it recorded (namespaces, link, processes, dirs) all goes."""
    spec = LabSpec(prefix="cilk" + secrets.token_hex(2), subnet=_free_subnet(),
                   state_dir=Path("/run/chaos-inject") / f"lab-test-{secrets.token_hex(3)}")
    proc = subprocess.Popen([*CLI, "lab", "up", "--prefix", spec.prefix, "--subnet", spec.subnet, "--state-dir",
                             str(spec.state_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 30
        while True:  # until the database process is recorded (Prometheus, before it, is running by then)
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "lab up did not reach the database"
            try:
                made = json.loads((spec.state_dir / "state.json").read_text())["made"]
            except (FileNotFoundError, json.JSONDecodeError):
                made = []
            pids = {e["role"]: e["pid"] for e in made if e["kind"] == "process"}
            if "db" in pids:
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        status = lab_status(spec)
        assert not status.up and "lab up did not finish" in status.problems
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert lab_down(spec)
    time.sleep(0.2)
    left = lab_leftovers(spec, [pid for pid in pids.values() if pid is not None])  # None: recorded before its pid
    assert not left, left


def test_lab_up_with_other_settings_than_the_running_lab_is_refused(lab):
    spec, info = lab
    from dataclasses import replace

    with pytest.raises(LabError, match="already up with .*db_timeout_s"):
        lab_up(replace(spec, db_timeout_s=info.db_timeout_s * 2))
    assert lab_status(spec).up and lab_up(replace(spec, db_timeout_s=info.db_timeout_s)).processes == lab_up(spec).processes
