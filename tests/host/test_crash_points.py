"""Crash safety (issue #18): every state-changing step of a command is a crash point
(CHAOS_INJECT_CRASH_AT=N:before|after, injector/crashpoints.py). Each command is traced once to count its steps,
then killed (SIGKILL, by itself) right before and right after each step; after `sweep` nothing of ours may be
left and the test namespaces must be as before. The seeded kill -9 soak across the commands: test_crash_soak.py.

The number of crash points per command is printed (pytest -s, or in the report of a failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosinject.kernel import nftables
from chaosinject.kernel.netns import existing_namespaces
from chaosinject.kernel.sweep import sweep

CLI = [sys.executable, "-m", "chaosinject.cli"]
# "after step N" and "before step N+1" leave the same state behind (every kernel or filesystem change is a step;
# what happens between two steps is in-process only), so CI walks before every step and after the last: every
# distinct state once. CHAOS_INJECT_CRASH_WALK=full also walks after every step (twice the time).
FULL_WALK = os.environ.get("CHAOS_INJECT_CRASH_WALK") == "full"
SOAK_SEED = int(os.environ.get("CHAOS_INJECT_SOAK_SEED", "18"))


def run_cli(run_dir: Path, args: list[str], *, crash_at: str | None = None, trace: Path | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess:
    """The CLI in a process of its own; the result carries its pid (``.pid``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_INJECT_CRASH")}
    env["CHAOS_INJECT_RUN_DIR"] = str(run_dir)
    if crash_at:
        env["CHAOS_INJECT_CRASH_AT"] = crash_at
    if trace:
        env["CHAOS_INJECT_CRASH_TRACE"] = str(trace)
    with subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as proc:
        out, err = proc.communicate(timeout=timeout)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    done.pid = proc.pid
    return done


def _tc(netns: str, what: str, dev: str, *extra: str) -> str:
    return subprocess.run(["tc", "-n", netns, what, "show", "dev", dev, *extra], capture_output=True, text=True,
                          check=True).stdout


def snapshot(pair) -> dict:
    """What a command may change, in the test's own namespaces (other jobs share the root namespace)."""
    out = {}
    for ns, link in ((pair.client_ns, pair.client), (pair.server_ns, pair.server)):
        out[ns] = {
            "qdisc": _tc(ns, "qdisc", link.ifname),
            "filters": _tc(ns, "filter", link.ifname, "ingress") + _tc(ns, "filter", link.ifname, "egress"),
            "links": [lk["ifname"] for lk in json.loads(subprocess.run(
                ["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=True).stdout or "[]")],
            "nft": subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"], capture_output=True,
                                  text=True).stdout if nftables.nft_binary() else "",
        }
    return out


def assert_nothing_left(run_dir: Path, pair, before: dict, pid: int, label: str) -> None:
    probes = [ns for ns in existing_namespaces() if ns.startswith(f"ci-probe-{pid}-")]
    assert not probes, f"{label}: probe namespace left: {probes}"
    self_test = [ns for ns in existing_namespaces() if ns.startswith(f"ci-dr-{pid}-")]   # doctor's self-test pair
    assert not self_test, f"{label}: doctor's self-test namespaces left: {self_test}"
    runs = run_dir / "runs"
    left = [p.name for p in runs.iterdir()] if runs.exists() else []
    assert not left, f"{label}: run files left: {left}"
    markers = run_dir / "clsact"
    left = [p.name for p in markers.glob("*.json")] if markers.exists() else []
    assert not left, f"{label}: clsact markers left: {left}"
    experiments = run_dir / "experiments"       # `run`'s status files (and their temporary copies)
    left = [p.name for p in experiments.glob("*.json*")] if experiments.exists() else []
    assert not left, f"{label}: experiment status files left: {left}"
    pins = [p.name for p in Path("/sys/fs/bpf").glob("*") if "chaos" in p.name and str(pid) in p.name]
    assert not pins, f"{label}: pinned objects left: {pins}"
    assert snapshot(pair) == before, f"{label}: the test namespaces changed"


def trace_steps(run_dir: Path, args: list[str], tmp_path: Path) -> list[str]:
    trace = tmp_path / f"trace-{args[0]}-{time.monotonic_ns()}"
    done = run_cli(run_dir, args, trace=trace)
    assert done.returncode in (0, 1, 4), f"traced run failed: {done.returncode} {done.stderr[-2000:]}"
    lines = trace.read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in lines] == list(range(1, len(lines) + 1))
    return [line.split("\t", 1)[1] for line in lines]


def walk(run_dir: Path, pair, args: list[str], tmp_path: Path, name: str) -> int:
    before = snapshot(pair)
    steps = trace_steps(run_dir, args, tmp_path)
    assert_nothing_left(run_dir, pair, before, -1, f"{name}: traced run")
    assert steps, f"{name}: no state-changing step traced"
    for n, label in enumerate(steps, start=1):
        for when in ("before", "after") if FULL_WALK or n == len(steps) else ("before",):
            where = f"{name}: step {n}/{len(steps)} {when} ({label})"
            done = run_cli(run_dir, args, crash_at=f"{n}:{when}")
            assert done.returncode == -9, f"{where}: did not crash there (exit {done.returncode}): " \
                                          f"{done.stderr[-1500:]}"
            report = sweep()
            assert not report.failures, f"{where}: sweep failed: {report.failures}"
            assert_nothing_left(run_dir, pair, before, done.pid, where)
    walked = 2 * len(steps) if FULL_WALK else len(steps) + 1
    print(f"\ncrash points: {name}: {len(steps)} steps, {walked} crash points walked: " + ", ".join(steps))
    return len(steps)


def inject_args(pair, *fault: str) -> list[str]:
    flow = f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp"
    return ["--flow", flow, "--netns", pair.client_ns, *fault, "--duration", "300ms", "--lease", "1s", "--quiet"]


def test_walk_doctor_capability_probe(pair, run_dir, tmp_path):
    assert walk(run_dir, pair, ["doctor"], tmp_path, "doctor (capability probe)") >= 4


def test_walk_inject_ebpf(pair, run_dir, tmp_path):
    steps = walk(run_dir, pair, inject_args(pair, "--loss", "50%", "--engine", "ebpf"), tmp_path, "inject ebpf")
    assert steps >= 10


@pytest.mark.skipif(nftables.nft_binary() is None, reason="nft missing (Debian package nftables)")
def test_walk_inject_userspace(pair, run_dir, tmp_path):
    walk(run_dir, pair, inject_args(pair, "--delay", "5ms", "--engine", "userspace"), tmp_path, "inject userspace")


def test_sweep_dry_run_and_status_show_what_a_dead_run_left(pair, run_dir):
    before = snapshot(pair)
    args = inject_args(pair, "--loss", "50%", "--engine", "ebpf")
    trace = run_dir.parent / "dry-trace"
    run_cli(run_dir, args, trace=trace)
    steps = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]
    n = steps.index("create bpf-filter") + 1
    crashed = run_cli(run_dir, args, crash_at=f"{n}:after")
    assert crashed.returncode == -9, crashed.stderr
    dry = run_cli(run_dir, ["sweep", "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert "sweep would" in dry.stdout and "remove egress filter" in dry.stdout and "release clsact" in dry.stdout
    assert "nothing changed" in dry.stdout
    status = run_cli(run_dir, ["status"])
    assert "DEAD" in status.stdout and "sweep would: remove egress filter" in status.stdout
    assert snapshot(pair) != before, "the dry run removed something"
    swept = run_cli(run_dir, ["sweep"])
    assert swept.returncode == 0 and "swept 1 dead run" in swept.stdout, swept.stdout + swept.stderr
    assert_nothing_left(run_dir, pair, before, crashed.pid, "after sweep")
