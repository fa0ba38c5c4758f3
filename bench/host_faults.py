#!/usr/bin/env python3
"""Host faults and run control: what they achieve and how long they take (run as root).

  cpu_stress   1 worker at 25 / 50 / 75 % of one CPU: its CPU use from /proc/PID/stat (utime+stime) over 3 s,
               after 0.5 s to settle, and the share of them it waited for a CPU (/proc/PID/schedstat); --trials
               runs per load. 2 shared cores: other jobs steal from the worker (then it waited).
  kill_process a `sleep` we started, by pid: SIGTERM -> gone (ms); one that ignores SIGTERM: SIGKILL after a
               0.2 s grace -> gone.
  library      start_fault(partition) on a veth in throwaway namespaces: call -> fault active (includes the
               capability probe and the bcc compile), stop() -> everything removed.
  detach       `chaos-inject --flow ... --partition --detach`: invocation -> it returns with the fault active;
               `chaos-inject stop RUN_ID` -> returns with everything removed (both include Python start-up).

Prints median (min-max) per figure. Everything is removed on every exit path (namespaces by Topology.close, runs
by stop, then sweep for anything a failure left).

Usage: sudo .venv/bin/python bench/host_faults.py [--trials N] [--only cpu,kill,library,detach]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.hostfaults import CpuStress, ProcessKill, measure_cpu_share  # noqa: E402
from chaosinject.kernel.netns import Topology, unique_name  # noqa: E402


def bench_cpu(trials: int) -> None:
    print("cpu_stress, 1 worker, measured load (% of one CPU) over 3 s, and the time it waited for a CPU:")
    for load in (25, 50, 75):
        measured, waited = [], []
        for _ in range(trials):
            with CpuStress(1, load, 10) as stress:
                time.sleep(0.5)
                (share,) = measure_cpu_share(stress.pids, 3.0)
            measured.append(share.load)
            waited.append(share.waited if share.waited is not None else float("nan"))
        print(f"  requested {load:3d} %: measured {C.fmt(measured, ' %', 100, 1, n=True)}; "
              f"waited {C.fmt(waited, ' %', 100, 1, n=True)}")


def bench_kill(trials: int) -> None:
    term, forced = [], []
    for _ in range(trials):
        proc = subprocess.Popen(["sleep", "60"])
        term.append(C.timed(ProcessKill(pid=proc.pid, grace_s=2).inject))
        proc.wait()
        proc = subprocess.Popen(["bash", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
        time.sleep(0.2)
        forced.append(C.timed(ProcessKill(pid=proc.pid, grace_s=0.2).inject))
        proc.wait()
    print(f"kill_process by pid: SIGTERM -> gone {C.fmt(term, ' ms', 1e3, 1, n=True)}; ignores SIGTERM, 0.2 s "
          f"grace -> SIGKILL -> gone {C.fmt(forced, ' ms', 1e3, 1, n=True)}")


def pair(topo: Topology, k: int):
    a = topo.add_namespace(unique_name("ci-bench-a"))
    b = topo.add_namespace(unique_name("ci-bench-b"))
    client, server = topo.connect(a, b, f"10.198.{k}.0/30", f"fd00:198:{k}::/64")
    return a, client, server


def bench_library(trials: int, run_dir: str) -> None:
    from chaosinject import start_fault

    os.environ["CHAOS_INJECT_RUN_DIR"] = run_dir
    topo = Topology()
    try:
        ns, client, server = pair(topo, 1)
        flow = f"{client.ipv4.ip}->{server.ipv4.ip}:9000/udp"
        starts, stops = [], []
        for _ in range(trials):
            with C.Stopwatch() as sw:
                session = start_fault(flow, partition=True, netns=ns, duration="60s")
            starts.append(sw.s)
            stops.append(C.timed(session.stop))
        print(f"library start_fault(partition) -> active {C.fmt(starts, ' ms', 1e3, 0, n=True)}; stop() -> "
              f"removed {C.fmt(stops, ' ms', 1e3, 0, n=True)}")
    finally:
        topo.close()


def bench_detach(trials: int, run_dir: str) -> None:
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": run_dir}
    cli = [sys.executable, "-m", "chaosinject.cli"]
    topo = Topology()
    run_ids = []
    try:
        ns, client, server = pair(topo, 2)
        flow = f"{client.ipv4.ip}->{server.ipv4.ip}:9000/udp"
        actives, stops = [], []
        for _ in range(trials):
            with C.Stopwatch() as sw:
                out = subprocess.run([*cli, "--flow", flow, "--netns", ns, "--partition", "--duration", "60s",
                                      "--detach", "--json"], capture_output=True, text=True, env=env, check=True)
            actives.append(sw.s)
            run_id = json.loads(out.stdout)["run_id"]
            run_ids.append(run_id)
            stops.append(C.timed(lambda: subprocess.run([*cli, "stop", run_id], capture_output=True, text=True,
                                                        env=env, check=True)))
            run_ids.remove(run_id)
        print(f"--detach -> returns with the fault active {C.fmt(actives, ' ms', 1e3, 0, n=True)}; "
              f"`stop RUN_ID` -> returns with everything removed {C.fmt(stops, ' ms', 1e3, 0, n=True)}")
    finally:
        if run_ids:
            subprocess.run([*cli, "stop", *run_ids], env=env, capture_output=True)
        subprocess.run([*cli, "sweep"], env=env, capture_output=True)
        topo.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--only", default="cpu,kill,library,detach")
    args = parser.parse_args()
    C.begin("host_faults")
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="ci-bench-run-") as run_dir:
        if "cpu" in only:
            bench_cpu(args.trials)
        if "kill" in only:
            bench_kill(args.trials)
        if "library" in only:
            bench_library(args.trials, run_dir)
        if "detach" in only:
            bench_detach(args.trials, run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
