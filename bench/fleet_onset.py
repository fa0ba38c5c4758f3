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

--phases: where the onset goes, from the controller's trace (CHAOS_INJECT_FLEET_TRACE: each Ansible round's
start and end and Ansible's events, wall clock) and the fault module's ``took_s`` (the target's chaos-inject):
  start-up   command -> the first round begins (the controller's Python, inventory, plan, ledger)
  rounds     how many Ansible rounds the onset took (2: a check round then an apply round; 1: both in one play)
  rN.runner  round N begins -> ansible-playbook's first event (ansible-runner's set-up, ansible-playbook's
             imports, inventory, collection)
  X.wait     the previous event -> the task's first host starts (play set-up, or the gap between two tasks)
  X.task     the task's first host starts -> its slowest host's result (connection, module transfer, the module,
             the target's chaos-inject)
  X.target   of which the target's chaos-inject (slowest host)
  rN.tail    the last host's result -> the round returns (stats, ansible-playbook's exit, ansible-runner)
X is the gate (pre: a raw reachability check; the module's check mode before 2026-12-06) or the apply (apply);
"seen" is the last round's end -> the bench saw every
status file say running (negative: the status files said so before the round returned). Medians over the trials.

Usage: sudo .venv/bin/python bench/fleet_onset.py [--sizes 1,4,16] [--trials 3] [--phases]
Network rule: namespaces of its own (cf-*-<hex>, cf: $FLEETKIT_NS_PREFIX) on 10.231.0.0/24, no route out; all
removed on every exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
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


def phases(trace: Path, t0: float, seen: float) -> dict[str, float]:
    """The onset's phases (wall-clock seconds) from one controller's trace (see the docstring)."""
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    rounds, current = [], None
    for e in events:
        if e["what"] == "round_start":
            current = {"start": e["t"], "check": e.get("check"), "events": []}
        elif e["what"] == "round_end" and current is not None:
            current["end"] = e["t"]
            rounds.append(current)
            current = None
        elif current is not None:
            current["events"].append(e)
    out: dict[str, float] = {}
    if not rounds:
        return out
    out["start-up"] = rounds[0]["start"] - t0
    starting = rounds[:1] if len({e.get("task") for e in rounds[0]["events"] if e.get("host")}) > 1 else rounds[:2]
    out["rounds"] = float(len(starting))
    for n, r in enumerate(starting):
        evs = r["events"]
        first = evs[0]["t"] if evs else r["end"]
        out[f"r{n}.runner"] = first - r["start"]
        tasks = list(dict.fromkeys(e.get("task") for e in evs if e.get("host")))
        last_result = first
        for task in tasks:
            tag = "pre" if r["check"] or str(task).endswith(("(check)", "(gate)")) else "apply"
            mine = [e for e in evs if e.get("task") == task]
            starts = [e["t"] for e in mine if e["what"] == "runner_on_start"]
            oks = [e for e in mine if e["what"] in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable")]
            if not oks:
                continue
            begin = min(starts) if starts else last_result
            out[f"{tag}.wait"] = begin - last_result            # the play's set-up, or the gap between tasks
            out[f"{tag}.task"] = max(e["t"] for e in oks) - begin
            out[f"{tag}.target"] = max((e.get("remote_s") or 0.0) for e in oks)
            last_result = max(e["t"] for e in oks)
        out[f"r{n}.tail"] = r["end"] - last_result
    out["seen"] = seen - starting[-1]["end"]
    return out


def trial(fleet, inventory: Path, hosts: list[str], work: Path, trace: Path | None = None
          ) -> tuple[float, float, dict[str, float]]:
    log = work / f"ctl-{time.monotonic_ns()}.log"
    if trace is not None:
        os.environ["CHAOS_INJECT_FLEET_TRACE"] = str(trace)     # spawn_controller passes our environment on
    active = C.Stopwatch()
    wall0 = time.time()
    ctl = fleet.spawn_controller("--inventory", str(inventory), "--flow", "src->dst", "--partition",
                                 "--duration", "300s", "--heartbeat-timeout", "60s", "-q", log=log)
    try:
        while not running_everywhere(fleet, hosts):
            if ctl.poll() is not None:
                raise RuntimeError(f"controller exited {ctl.returncode}: {log.read_text()[-800:]}")
            if active.s > 300:
                raise RuntimeError("not active within 300 s")
            time.sleep(0.01)
        onset = active.s
        seen_wall = time.time()
        removing = C.Stopwatch()
        ctl.send_signal(signal.SIGINT)
        while not removed_everywhere(fleet, hosts):
            if removing.s > 120:
                raise RuntimeError("not removed within 120 s")
            time.sleep(0.01)
        removal = removing.s
        ctl.wait(120)
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait(10)
        os.environ.pop("CHAOS_INJECT_FLEET_TRACE", None)
    return onset, removal, (phases(trace, wall0, seen_wall) if trace is not None else {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--phases", action="store_true", help="also print where the onset goes (medians)")
    args = parser.parse_args()
    C.begin("fleet_onset", why="namespaces, sshd hosts, faults")
    sizes = [int(s) for s in args.sizes.split(",")]
    with contextlib.ExitStack() as stack:
        with C.Stopwatch() as sw:
            fleet = stack.enter_context(fleetkit.temporary_fleet("fleet-onset-", count=max(sizes) + 1))
        work = fleet.work
        print(f"{max(sizes) + 1} sshd hosts up in {sw.s:.1f}s")
        names = sorted(fleet.hosts, key=lambda h: int(h[1:]))
        dst = names[-1]
        print(f"{'hosts':>5}  {'active on all: median (min-max) s':>34}  {'removed from all: median (min-max) s':>37}")
        for size in sizes:
            hosts = names[:size]
            inventory = fleet.inventory({"src": hosts, "dst": [dst]}, name=f"hosts-{size}.yml")
            onsets, removals, parts = [], [], []
            for i in range(args.trials):
                trace = work / f"trace-{size}-{i}.jsonl" if args.phases else None
                onset, removal, part = trial(fleet, inventory, hosts, work, trace)
                onsets.append(onset)
                removals.append(removal)
                parts.append(part)
            print(f"{size:>5}  {C.fmt(onsets, digits=2, width=10)}{'':>12}  {C.fmt(removals, digits=2, width=12)}",
                  flush=True)
            if args.phases:
                keys = [k for k in parts[0] if all(k in p for p in parts)]
                print("       phases (median s): " + "  ".join(f"{k} {C.median(p[k] for p in parts):.2f}"
                                                          for k in keys), flush=True)
        print(f"load average at end {C.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
