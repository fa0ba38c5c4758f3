#!/usr/bin/env python3
"""What one fleet target's module run costs, part by part: wall time and CPU time (user + system) of each process
a host runs for the fleet's tasks, on a fake host of the fleet tier (tests/fleet/fleetkit.py: a namespace with its
own state directory; processes started with `ip netns exec`, as sshd's would be, without SSH).

  python -c pass             the target's interpreter starting (the module's; the venv's is chaos-inject's)
  ansible basic              python importing ansible.module_utils.basic (every module run: AnsibleModule)
  chaos-inject ...           the target's chaos-inject: --version (start-up and CLI imports), status --json,
                             inject --dry-run (the module's check mode), inject --detach --json (the apply: until
                             the fault is active; CPU of the parent only, the supervisor lives on), stop RUN_ID
  import pyroute2 (rtnl)     of which kernel/rtnl.py's import (pyroute2; the route lookup and every kernel object)

CPU is what 16 hosts sharing 2 CPUs pay 16 times: the sum over a round's hosts divided by 2 bounds its task from
below. Medians of --reps runs (after one warm-up).

Usage: sudo .venv/bin/python bench/fleet_target_cost.py [--reps 5]
Network rule: two namespaces of fleetkit (cf-*-<hex>, cf: $FLEETKIT_NS_PREFIX) with no route out; removed at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO / "tests" / "fleet"))
import fleetkit  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(ns: str, env: dict, cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of ``cmd`` run in namespace ``ns``."""
    cpu = children_cpu()
    with C.Stopwatch() as wall:
        run = subprocess.run(["ip", "netns", "exec", ns, *cmd], env=env, capture_output=True, text=True)
    cpu = children_cpu() - cpu
    if run.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {run.returncode}: {run.stderr.strip()[-300:]}")
    return wall.s, cpu, run.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    C.begin("fleet_target_cost", why="namespaces, faults")
    with fleetkit.temporary_fleet("fleet-cost-", count=2) as fleet:
        h1, h2 = fleet.hosts["h1"], fleet.hosts["h2"]
        env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(h1.state_dir)}
        chaos, venv_python = fleetkit.CHAOS, str(fleetkit.VENV_BIN / "python")
        inject = [chaos, "inject", "--flow", f"{h1.address}->{h2.address}", "--partition", "--duration", "30s"]
        parts = {
            "/usr/bin/python3 -c pass": ["/usr/bin/python3", "-c", "pass"],
            "venv python -c pass": [venv_python, "-c", "pass"],
            "ansible basic (venv python)": [venv_python, "-c", "import ansible.module_utils.basic"],
            "import pyroute2 (rtnl)": [venv_python, "-c", "import injector.kernel.rtnl"],
            "chaos-inject --version": [chaos, "--version"],
            "chaos-inject status --json": [chaos, "status", "--json"],
            "chaos-inject inject --dry-run": inject + ["--dry-run"],
        }
        rows: dict[str, tuple[list[float], list[float]]] = {}
        for name, cmd in parts.items():
            measure(h1.ns, env, cmd)
            got = [measure(h1.ns, env, cmd)[:2] for _ in range(args.reps)]
            rows[name] = ([g[0] for g in got], [g[1] for g in got])
        detach, stop = ([], []), ([], [])
        for _ in range(args.reps):
            wall, cpu, out = measure(h1.ns, env, inject + ["--detach", "--json"])
            detach[0].append(wall)
            detach[1].append(cpu)
            run_id = json.loads(out)["run_id"]
            wall, cpu, _ = measure(h1.ns, env, [chaos, "stop", run_id])
            stop[0].append(wall)
            stop[1].append(cpu)
        rows["chaos-inject inject --detach --json"] = detach
        rows["chaos-inject stop RUN_ID"] = stop
        print(f"{'part':<38} {'wall ms (median)':>16} {'CPU ms (median)':>16}")
        for name, (walls, cpus) in rows.items():
            print(f"{name:<38} {C.median(walls) * 1000:>16.0f} {C.median(cpus) * 1000:>16.0f}")
        print(f"load average at end {C.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
