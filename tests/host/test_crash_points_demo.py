"""Crash safety (issue #18) of `chaos-inject demo --quick`: two namespaces of its own, a veth between them (made in
the root namespace, then moved), an eBPF loss fault with traffic. Traced once, then SIGKILLed before every step
and after the last (CHAOS_INJECT_CRASH_WALK=full: both sides of every step); after `sweep`: no ledger, marker,
namespace, veth or pinned object of ours, and the root namespace's links as before. The demo runs with a short
fault (--duration 1s, its own option). The lab demo (`demo` without --quick) is lab up + an experiment + lab
down; those are walked by their own tests (test_crash_points_more.py's lab walk, the `run` walk).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from chaosinject.kernel.netns import existing_namespaces
from chaosinject.kernel.sweep import sweep

from .test_crash_points import FULL_WALK, run_cli, trace_steps

DEMO = ["demo", "--quick", "--duration", "1s", "--rate", "1000"]
VETH = re.compile(r"^ci[0-9a-f]{6}[ab]$")      # Topology.connect's names (the veth is made here, then moved)


def root_state() -> dict:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True).stdout or "[]")
    return {"demo namespaces": sorted(ns for ns in existing_namespaces() if ns.startswith("ci-demo-")),
            "veths": sorted(lk["ifname"] for lk in links if VETH.match(lk["ifname"]))}


def assert_as_before(run_dir: Path, before: dict, pid: int, where: str) -> None:
    runs = run_dir / "runs"
    left = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    assert not left, f"{where}: run files left: {left}"
    markers = run_dir / "clsact"
    left = sorted(p.name for p in markers.glob("*.json")) if markers.exists() else []  # .lock: kept
    assert not left, f"{where}: clsact markers left: {left}"
    pins = [p.name for p in Path("/sys/fs/bpf").glob("*") if "chaos" in p.name and str(pid) in p.name]
    assert not pins, f"{where}: pinned objects left: {pins}"
    now = root_state()
    if now["veths"] != before["veths"]:   # another job's Topology moves its veth out of here at once: look again
        time.sleep(1.0)
        now = root_state()
    new = {k: sorted(set(now[k]) - set(before[k])) for k in now}
    assert not any(new.values()), f"{where}: left behind: {new}"


def test_walk_demo_quick(run_dir, tmp_path):
    before = root_state()
    steps = trace_steps(run_dir, DEMO, tmp_path)
    assert_as_before(run_dir, before, -1, "demo --quick: traced run")
    assert "create netns" in steps and "create link" in steps and "create bpf-filter" in steps, steps
    t0 = time.monotonic()
    for n, label in enumerate(steps, start=1):
        for when in ("before", "after") if FULL_WALK or n == len(steps) else ("before",):
            where = f"demo --quick: step {n}/{len(steps)} {when} ({label})"
            done = run_cli(run_dir, DEMO, crash_at=f"{n}:{when}")
            assert done.returncode == -9, f"{where}: did not crash there (exit {done.returncode}): " \
                                          f"{done.stderr[-1500:]}"
            report = sweep()
            assert not report.failures, f"{where}: sweep failed: {report.failures}"
            assert not sweep().removed, f"{where}: a second sweep found more"
            assert_as_before(run_dir, before, done.pid, where)
    walked = 2 * len(steps) if FULL_WALK else len(steps) + 1
    print(f"\ncrash points: demo --quick: {len(steps)} steps, {walked} crash points walked in "
          f"{time.monotonic() - t0:.0f}s: " + ", ".join(steps))
