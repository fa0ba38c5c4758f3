"""The CLI as a user runs it: live status, summary, signals, kill -9 + lease expiry + sweep."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from chaosinject.analysis import proportion_ci
from chaosinject.lab.traffic import UdpReceiver, send_udp

from .conftest import our_filters, qdiscs

CLI = [sys.executable, "-m", "chaosinject.cli"]


def cli(run_dir, *args, **kw):
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120, **kw)


def start(run_dir, *args):
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_active(run_dir, proc, timeout=30.0) -> dict:
    """Until the run's status file exists (its filter is attached and the first renewal happened)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"injector exited early: {proc.returncode} {proc.stderr.read()}")
        status = list((run_dir / "runs").glob("*.status.json")) if (run_dir / "runs").exists() else []
        if status:
            return json.loads(status[0].read_text())
        time.sleep(0.1)
    raise AssertionError("injector did not become active")


def delivered(pair, port=9000, count=1000) -> int:
    dst = str(pair.server.ipv4.ip)
    rx = UdpReceiver(pair.server_ns, dst, port).start()
    send_udp(pair.client_ns, dst, port, count, 10_000.0)
    rx.stop()
    return rx.received


def test_cli_applies_reports_and_leaves_nothing(pair, run_dir):
    flow = f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp"
    proc = start(run_dir, "--flow", flow, "--netns", pair.client_ns, "--loss", "10%", "--duration", "120s",
                 "--lease", "1s", "--json")
    wait_active(run_dir, proc)
    delivered(pair, count=8000)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: roll back and still report
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert report["stop_reason"] == "SIGINT"
    (flow_report,) = report["flows"]
    (loss,) = flow_report["achieved"]
    assert flow_report["counters"]["matched_packets"] == 8000
    # the report's verdict is its own 95 % interval's: it must say exactly whether 10 % lies inside
    low, high = loss["ci95"]
    assert loss["consistent"] == (low <= 0.10 <= high), loss
    # the loss itself, judged at 99.9 % (a 95 % check would fail one honest run in twenty)
    dropped = flow_report["counters"]["dropped_packets"]
    wide = proportion_ci(dropped, 8000, confidence=0.999)
    assert wide.low <= 0.10 <= wide.high and loss["ratio"] == dropped / 8000, (dropped, wide)
    assert report["plan"]["rules"][0]["interface"] == pair.client.ifname  # found by route lookup in the netns
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)


def test_cli_runs_to_its_duration_and_a_fault_without_effect_is_a_failure(pair, run_dir):
    flow = f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp"
    result = cli(run_dir, "--flow", flow, "--netns", pair.client_ns, "--loss", "10%", "--duration", "2s")
    assert result.returncode == 4, result.stderr
    assert "completed after 2.0s" in result.stdout
    assert "no packet matched the flow: the fault had no effect" in result.stderr
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)


def test_cli_sigterm_rolls_back(pair, run_dir):
    flow = f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp"
    proc = start(run_dir, "--flow", flow, "--netns", pair.client_ns, "--partition", "--duration", "60s")
    wait_active(run_dir, proc)
    assert delivered(pair, count=300) == 0
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in out and "has been removed" in out
    assert delivered(pair, count=300) == 300
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)


def test_kill_9_fault_expires_within_the_lease_and_sweep_removes_everything(pair, run_dir):
    lease_s = 1.0
    flow = f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp"
    proc = start(run_dir, "--flow", flow, "--netns", pair.client_ns, "--partition", "--duration", "120s",
                 "--lease", "1s", "--quiet")
    wait_active(run_dir, proc)
    status = json.loads(cli(run_dir, "status", "--json").stdout)
    assert status[0]["alive"] and status[0]["status"]["flows"] == [flow]
    assert delivered(pair, count=300) == 0
    filters = our_filters(pair.client_iface)
    prog_ids = re.findall(r" id (\d+) ", " ".join(filters))
    assert filters and prog_ids

    proc.kill()
    proc.wait()
    killed_at = time.monotonic()
    time.sleep(lease_s + 0.2)
    # no process renews the lease: the program, still attached, lets the flow through
    assert our_filters(pair.client_iface), "the filter is still attached: only the lease ended the fault"
    assert delivered(pair, count=300) == 300
    assert time.monotonic() - killed_at < lease_s + 2.0

    text = cli(run_dir, "status").stdout
    assert "DEAD" in text
    swept = cli(run_dir, "sweep")
    assert swept.returncode == 0, swept.stderr
    assert "swept 1 dead run" in swept.stdout
    assert not our_filters(pair.client_iface)
    assert "clsact" not in qdiscs(pair.client_iface)
    assert not list((run_dir / "runs").glob("*.json"))
    progs = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True).stdout
    for prog_id in prog_ids:
        assert not re.search(rf"^{prog_id}: ", progs, re.M), f"BPF program {prog_id} still loaded"


def test_cli_refuses_a_missing_interface_and_changes_nothing(pair, run_dir):
    result = cli(run_dir, "--flow", "10.201.0.1->10.201.0.2", "--loss", "1%", "--duration", "2s",
                 "--netns", pair.client_ns, "--interface", "nosuch0")
    assert result.returncode == 3
    assert "interface 'nosuch0' does not exist" in result.stderr
    assert "clsact" not in qdiscs(pair.client_iface)


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["sweep"]])
def test_status_and_sweep_with_nothing_running(run_dir, args):
    result = cli(run_dir, *args)
    assert result.returncode == 0
    assert result.stdout.strip() in ("no active faults", "[]", "swept 0 dead run(s); 0 live run(s) left alone")


def test_a_missing_namespace_is_an_error_and_is_not_created(run_dir):
    from chaosinject.kernel.netns import existing_namespaces

    result = cli(run_dir, "--flow", "10.201.0.1->10.201.0.2", "--loss", "1%", "--duration", "2s",
                 "--netns", "ci-h-nonexistent")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "ci-h-nonexistent" not in existing_namespaces()
