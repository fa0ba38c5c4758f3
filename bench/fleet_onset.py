#!/usr/bin/env python3
"""Fleet onset: time from `chaos-inject --inventory hosts.yml ...` to the fault active on every host, and from the
controller's stop (SIGINT) to the fault removed from every host, for 1, 4 and 16 hosts.

The hosts are the fleet tier's (tests/fleet/fleetkit.py): network namespaces of this script, each with a real sshd
on its own address and its own state directory, joined by a bridge; the controller runs in a namespace of its own.
The fault is a partition of group src (N hosts) -> group dst (one more host), --heartbeat-timeout 60s (so no
renewal falls inside a measurement). "Active" is when every src host's status file says running (polled every
10 ms on the shared filesystem, not through SSH); "removed" is when no src host has a ledger left. A warm
controller: the trials of a size follow each other (page cache warm, SSH host keys known); each trial is a fresh
controller process (its own ansible-runner folder, new SSH connections).

Usage: sudo .venv/bin/python bench/fleet_onset.py [--sizes 1,4,16] [--trials 3]
Network rule: namespaces of its own (cf-*-<hex>) on 10.231.0.0/24, no route out; all removed on every exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO / "tests" / "fleet"))
import fleetkit  # noqa: E402


def running_everywhere(fleet, hosts) -> bool:
    for host in hosts:
        files = list((fleet.hosts[host].state_dir / "runs").glob("*.status.json"))
        try:
            if not any(json.loads(p.read_text()).get("state") == "running" for p in files):
                return False
        except (OSError, ValueError):
            return False
    return True


def removed_everywhere(fleet, hosts) -> bool:
    return not any(fleet.ledgers(h) for h in hosts)


def trial(fleet, inventory: Path, hosts: list[str], work: Path) -> tuple[float, float]:
    log = work / f"ctl-{time.monotonic_ns()}.log"
    t0 = time.monotonic()
    ctl = fleet.spawn_controller("--inventory", str(inventory), "--flow", "src->dst", "--partition",
                                 "--duration", "300s", "--heartbeat-timeout", "60s", "-q", log=log)
    try:
        while not running_everywhere(fleet, hosts):
            if ctl.poll() is not None:
                raise RuntimeError(f"controller exited {ctl.returncode}: {log.read_text()[-800:]}")
            if time.monotonic() - t0 > 300:
                raise RuntimeError("not active within 300 s")
            time.sleep(0.01)
        onset = time.monotonic() - t0
        t1 = time.monotonic()
        ctl.send_signal(signal.SIGINT)
        while not removed_everywhere(fleet, hosts):
            if time.monotonic() - t1 > 120:
                raise RuntimeError("not removed within 120 s")
            time.sleep(0.01)
        removal = time.monotonic() - t1
        ctl.wait(120)
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait(10)
    return onset, removal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    C.begin("fleet_onset", why="namespaces, sshd hosts, faults")
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="fleet-onset-"))
    fleet = None
    try:
        t = time.monotonic()
        fleet = fleetkit.make_fleet(work, count=max(sizes) + 1)
        print(f"{max(sizes) + 1} sshd hosts up in {time.monotonic() - t:.1f}s")
        names = sorted(fleet.hosts, key=lambda h: int(h[1:]))
        dst = names[-1]
        print(f"{'hosts':>5}  {'active on all: median (min-max) s':>34}  {'removed from all: median (min-max) s':>37}")
        for size in sizes:
            hosts = names[:size]
            inventory = fleet.inventory({"src": hosts, "dst": [dst]}, name=f"hosts-{size}.yml")
            onsets, removals = [], []
            for _ in range(args.trials):
                onset, removal = trial(fleet, inventory, hosts, work)
                onsets.append(onset)
                removals.append(removal)
            print(f"{size:>5}  {C.fmt(onsets, digits=2, width=10)}{'':>12}  {C.fmt(removals, digits=2, width=12)}",
                  flush=True)
        print(f"load average at end {C.load_average()}")
    finally:
        if fleet is not None:
            problems = fleet.close()
            if problems:
                print(f"left behind (cleaned): {problems}")
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
