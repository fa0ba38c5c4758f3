#!/usr/bin/env python3
"""Time from a command to the first packet it affects, measured on the wire; and where that time goes.

A probe sends one UDP datagram every 1 ms from namespace a to namespace b (port 9000; sequence number inside)
and b records which arrived. Each trial starts a partition of that flow through one path and takes the send
time of the first of 20 consecutive datagrams that never arrived (single losses before are the machine's, and
counted): that minus the command's start is the onset (1 ms resolution). Paths, each in a fresh Python process:

  cli       `chaos-inject --flow ... --partition --duration 3s` (foreground; waits for its exit, code 0)
  detach    `chaos-inject ... --detach --json`, then `chaos-inject stop RUN_ID`
  library   `python -c "from chaosinject import partition; with partition(flow=..., netns=...): ..."`
  action    `python -c` calling the Chaos Toolkit action start_network_fault(..., partition=True) (what `chaos run`
            calls), then stop_network_fault
  tick      `chaos-inject schedule '@every 1h' --immediately --count 1 -- --flow ... --partition --duration 3s`,
            from the tick (the start of the job's process, read from /proc) to the first packet: the tick's process
            (the schedule command's start-up and its one dry run of the job come before the first tick)

Each path in three states (--cache): cold = an empty compiled-program cache (CHAOS_INJECT_PROG_CACHE pointed at a
new empty directory each trial: the first run after an install, a kernel or a source change, so bcc compiles;
`scripts/setup-host.sh` and `chaos-inject doctor` fill the cache, so a user meets this only after a kernel
upgrade they have not run doctor on); boot = the cache filled but the page cache dropped before each trial (the
first run after a reboot: every file read from disk); warm = the cache filled by an earlier run, files cached.

Then the breakdown, in-process in fresh interpreters: interpreter start, the inject path's imports, the
capability probe, the bcc compile + load of the classifier. Medians (min-max) of --trials (default 10) per path.
"Warm" only: files in the page cache, the machine up (a cold first run after boot cannot be made here).

Usage: sudo .venv/bin/python bench/fault_onset.py [--trials N] [--only cli,detach,library,action,tick,breakdown]
       [--cache cold,warm] [--tree DIR]
(--tree: the breakdown also for another checkout, e.g. the main branch, interleaved)
Network rule: two namespaces of its own (ci-bench-a/b-<hex>) on 10.198.3.0/30; removed on every exit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _netkit as N  # noqa: E402

from chaosinject.kernel.netns import Topology, socket_in, unique_name  # noqa: E402

PORT = 9000
INTERVAL_S = 0.001
RUN_LOST = 20  # consecutive lost datagrams (20 ms) that mark a partition's onset
IN_FLIGHT_S = 0.2  # a datagram not received after this is lost (veth delivers in µs; a loaded host's threads lag)


class WireProbe:
    """Datagrams a -> b every INTERVAL_S; send times by sequence number, and the set that arrived."""

    def __init__(self, ns_a: str, ns_b: str, src: str, dst: str):
        self.tx = socket_in(ns_a, socket.AF_INET, socket.SOCK_DGRAM)
        self.rx = socket_in(ns_b, socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.rx.bind((dst, PORT))
        self.rx.settimeout(0.2)
        self.tx.bind((src, 0))
        self.dst = dst
        self.sent: list[float] = []
        self.got: set[int] = set()
        self.stray = 0  # datagrams lost before an onset (the machine's, not a fault's)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._recv, daemon=True)]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        next_t = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                seq = len(self.sent)
                self.sent.append(time.monotonic())
            self.tx.sendto(seq.to_bytes(8, "big"), (self.dst, PORT))
            next_t += INTERVAL_S
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()

    def _recv(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.rx.recv(64)
            except socket.timeout:
                continue
            with self.lock:
                self.got.add(int.from_bytes(data[:8], "big"))

    def mark(self) -> int:
        with self.lock:
            return len(self.sent)

    def onset(self, first_seq: int, t0: float, until_seq: int) -> float | None:
        """Send time of the first datagram of the first run of RUN_LOST consecutive lost ones in
        [first_seq, until_seq), minus t0; None if there is none yet. (A partition loses every datagram while it
        is active; a single datagram lost earlier was the machine's, counted in ``stray``.)"""
        with self.lock:
            run = 0
            for seq in range(first_seq, until_seq):
                run = run + 1 if seq not in self.got else 0
                if run == RUN_LOST:
                    start = seq - RUN_LOST + 1
                    self.stray += sum(1 for s in range(first_seq, start) if s not in self.got)
                    return self.sent[start] - t0
            return None

    def wait_flowing(self, timeout_s: float = 10.0) -> int:
        """After a fault's removal: the sequence from which datagrams arrive again."""
        deadline = time.monotonic() + timeout_s
        start = self.mark()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            with self.lock:
                if any(s in self.got for s in range(start, len(self.sent))):
                    return len(self.sent)
        raise RuntimeError("the flow did not pass again after the fault's removal")

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=2)
        self.tx.close()
        self.rx.close()


def fmt(values: list[float]) -> str:
    """Seconds as "median ms (min-max, n=N)"."""
    return C.fmt(values, " ms", 1e3, 0, n=True)


def trial(probe: WireProbe, start, finish, timeout_s: float = 120.0, started_at=None, before=None) -> float:
    """start() begins the command (it may return before the fault is active); the onset is read off the wire
    from datagrams older than IN_FLIGHT_S; then finish(handle) ends the run. ``started_at(handle)``, if given,
    is the monotonic time the onset counts from (a tick) instead of the command's start; ``before()``, if
    given, runs first, outside the timing."""
    if before is not None:
        before()
    first = probe.mark()
    t0 = time.monotonic()
    handle = start()
    try:
        while True:
            with probe.lock:
                now = time.monotonic()
                until = len(probe.sent)
                while until > first and probe.sent[until - 1] > now - IN_FLIGHT_S:
                    until -= 1
            onset = probe.onset(first, t0, until)
            if onset is not None:
                break
            if now - t0 > timeout_s:
                raise RuntimeError(f"no datagram lost within {timeout_s:.0f}s: the fault never became active")
            time.sleep(0.01)
        if started_at is not None:
            onset -= started_at(handle) - t0
    finally:
        finish(handle)
    probe.wait_flowing()
    return onset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--only", default="cli,detach,library,action,tick,breakdown")
    parser.add_argument("--cache", default="cold,boot,warm",
                        help="comma-separated: cold (empty program cache), boot (cache filled, page cache dropped: "
                             "the first run after a reboot), warm")
    parser.add_argument("--tree", action="append", default=[], help="breakdown: also measure this checkout")
    args = parser.parse_args()
    C.begin("fault_onset")
    only = set(args.only.split(","))
    py = sys.executable
    topo = Topology()
    probe = None
    run_ids: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ci-bench-run-") as run_dir:
        env = {**os.environ, "CHAOS_INJECT_RUN_DIR": run_dir}
        try:
            a = topo.add_namespace(unique_name("ci-bench-a"))
            b = topo.add_namespace(unique_name("ci-bench-b"))
            client, server = topo.connect(a, b, "10.198.3.0/30", "fd00:198:3::/64")
            src, dst = str(client.ipv4.ip), str(server.ipv4.ip)
            flow = f"{src}->{dst}:{PORT}/udp"
            probe = WireProbe(a, b, src, dst)
            probe.wait_flowing()
            cli = [py, "-m", "chaosinject.cli", "--flow", flow, "--netns", a, "--partition"]
            results: dict[str, list[float]] = {}
            warm_cache = Path(run_dir) / "progcache-warm"
            # fill the warm cache (one run: compile once)
            subprocess.run([*cli, "--duration", "0.2s", "-q"], capture_output=True, timeout=300,
                           env={**env, "CHAOS_INJECT_PROG_CACHE": str(warm_cache)})
            for mode in args.cache.split(","):
                paths(args, only, py, a, flow, cli, {**env, "CHAOS_INJECT_PROG_CACHE": str(warm_cache)}, mode,
                      Path(run_dir), probe, results, run_ids)

            print(f"(datagrams lost before an onset, not counted as the fault's: {probe.stray})")
            for path, values in results.items():
                print(f"{path:14s} command -> first packet affected on the wire: {fmt(values)}")
            if "breakdown" in only:
                breakdown(args.trials, py, {**env, "CHAOS_INJECT_PROG_CACHE": str(warm_cache)},
                          [str(C.REPO), *args.tree], Path(run_dir))
        finally:
            if probe is not None:
                probe.close()
            if run_ids:
                subprocess.run([py, "-m", "chaosinject.cli", "stop", *run_ids], env=env, capture_output=True)
            subprocess.run([py, "-m", "chaosinject.cli", "sweep"], env=env, capture_output=True)
            topo.close()
    left = N.check_leftovers(topo.namespaces)
    if left:
        print(f"LEFT BEHIND: {left}")
        return 1
    return 0


def drop_page_cache() -> None:
    """What a reboot does to the files a run reads (interpreter, packages, bcc's library, the program cache):
    written back, then dropped from the page cache (`echo 3 > /proc/sys/vm/drop_caches`; clean pages only, so
    nothing is lost; the whole machine re-reads from disk for a moment)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def paths(args, only, py, a, flow, cli, warm_env, mode, run_dir: Path, probe, results, run_ids) -> None:
    """The trials of every path in ``only`` for one cache mode; each trial a fresh process."""
    counter = iter(range(10**6))
    before = drop_page_cache if mode == "boot" else None

    def fresh_env() -> dict:
        if mode in ("warm", "boot"):
            return warm_env
        return {**warm_env, "CHAOS_INJECT_PROG_CACHE": str(run_dir / f"progcache-cold-{next(counter)}")}

    def python_trials(code: str, what: str) -> list[float]:
        """Trials of ``python -c code``, which holds its fault until a line arrives on stdin."""
        def start():
            return subprocess.Popen([py, "-c", code], env=fresh_env(), stdin=subprocess.PIPE, text=True)

        def finish(proc):
            proc.communicate("\n", timeout=60)
            if proc.returncode != 0:
                raise RuntimeError(f"{what} run exited {proc.returncode}")
        return [trial(probe, start, finish, before=before) for _ in range(args.trials)]

    if "cli" in only:
        def start_cli():
            return subprocess.Popen([*cli, "--duration", "3s", "-q"], env=fresh_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)

        def finish_cli(proc):
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise RuntimeError(f"chaos-inject exited {proc.returncode}: {err}")
        results[f"cli {mode}"] = [trial(probe, start_cli, finish_cli, before=before) for _ in range(args.trials)]
    if "detach" in only:
        def start_detach():
            out = subprocess.run([*cli, "--duration", "60s", "--detach", "--json"], env=fresh_env(), check=True,
                                 capture_output=True, text=True, timeout=120)
            run_ids.append(json.loads(out.stdout)["run_id"])
            return run_ids[-1]

        def finish_detach(run_id):
            subprocess.run([py, "-m", "chaosinject.cli", "stop", run_id], env=fresh_env(), check=True,
                           capture_output=True, timeout=60)
            run_ids.remove(run_id)
        results[f"detach {mode}"] = [trial(probe, start_detach, finish_detach, before=before) for _ in range(args.trials)]
    if "library" in only:
        code = ("import sys, time\nfrom injector import partition\n"
                f"with partition(flow={flow!r}, netns={a!r}, duration='60s'):\n"
                "    sys.stdin.readline()\n")
        results[f"library {mode}"] = python_trials(code, "library")
    if "action" in only:
        code = ("import sys\nfrom chaosinject.experiment.actions import start_network_fault, stop_network_fault\n"
                f"r = start_network_fault({flow!r}, duration='60s', partition=True, netns={a!r})\n"
                "sys.stdin.readline()\nstop_network_fault(r['run_id'])\n")
        results[f"action {mode}"] = python_trials(code, "action")
    if "tick" in only:
        def start_tick():
            job = ["--flow", flow, "--netns", a, "--partition", "--duration", "3s", "-q"]
            proc = subprocess.Popen([py, "-m", "chaosinject.cli", "schedule", "@every 1h", "--immediately",
                                     "--count", "1", "--", *job], env=fresh_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            proc.tick = None
            proc.err = []

            def read() -> None:
                for line in proc.stderr:
                    if proc.tick is None and "run 1 starts" in line:
                        proc.tick = time.monotonic()
                    proc.err.append(line)
            proc.reader = threading.Thread(target=read, daemon=True)
            proc.reader.start()
            return proc

        def tick_time(proc) -> float:
            """The tick = the start of the job's process (the schedule's child), from /proc: its start time
            (boot-time clock ticks) on the monotonic clock. (The "run 1 starts" line is read by a thread of
            this busy process and can arrive late; it is only the fallback.)"""
            hz = os.sysconf("SC_CLK_TCK")
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == proc.pid:  # ppid
                    offset = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
                    return int(fields[19]) / hz - offset
            deadline = time.monotonic() + 5
            while proc.tick is None and time.monotonic() < deadline:
                time.sleep(0.005)
            if proc.tick is None:
                raise RuntimeError("the schedule never said its run started")
            return proc.tick

        def finish_tick(proc):
            code = proc.wait(timeout=60)
            proc.reader.join(timeout=5)
            if code != 0:
                raise RuntimeError(f"schedule exited {code}: {''.join(proc.err)}")
        results[f"tick {mode}"] = [trial(probe, start_tick, finish_tick, started_at=tick_time, before=before)
                                   for _ in range(args.trials)]

BREAKDOWN = """
import json, sys, time
t = [time.perf_counter()]
from chaosinject import cli
from chaosinject.blast import parse_percent
from chaosinject.prepare import prepare
from chaosinject.engines.select import make_engine
from chaosinject.runner import run_plan
from chaosinject.summary import summarize
import chaosinject.engines.ebpf
t.append(time.perf_counter())
from chaosinject.kernel.probe import probe
probe()
t.append(time.perf_counter())
from chaosinject.kernel.bpf import ClassifierConfig, ClassifierProgram
ClassifierProgram(ClassifierConfig()).close()
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""


def breakdown(trials: int, py: str, env: dict, trees: list[str], run_dir: Path) -> None:
    """Per tree (this checkout, then --tree ones, interleaved): `python -c` run from a tree imports its package.
    The classifier's load twice: from the warm program cache, and cold (an empty cache: bcc compiles)."""
    start: list[float] = []
    phases = {tree: ([], [], [], []) for tree in trees}
    for i in range(trials):
        start.append(C.timed(lambda: subprocess.run([py, "-c", "pass"], env=env, check=True)))
        for tree in trees:
            # each tree's own venv: the package is an editable install, so another tree's python would import
            # its own checkout whatever the working directory
            tree_py = str(Path(tree) / ".venv/bin/python") if (Path(tree) / ".venv/bin/python").exists() else py
            out = subprocess.run([tree_py, "-c", BREAKDOWN], env=env, cwd=tree, check=True, capture_output=True,
                                 text=True)
            imports, probe, warm = json.loads(out.stdout)
            cold_env = {**env, "CHAOS_INJECT_PROG_CACHE": str(run_dir / f"progcache-breakdown-{i}-{trees.index(tree)}")}
            out = subprocess.run([tree_py, "-c", BREAKDOWN], env=cold_env, cwd=tree, check=True,
                                 capture_output=True, text=True)
            cold = json.loads(out.stdout)[2]
            for values, value in zip(phases[tree], (imports, probe, warm, cold)):
                values.append(value)
    print("where the time goes (fresh interpreters):")
    print(f"  interpreter start (python -c pass)                 {fmt(start)}")
    for tree, (imports, probe, warm, cold) in phases.items():
        print(f"  {tree}:")
        print(f"    imports cmd_inject makes before the fault      {fmt(imports)}")
        print(f"    capability probe (a netns, qdisc tries)        {fmt(probe)}")
        print(f"    classifier load, warm program cache            {fmt(warm)}")
        print(f"    classifier load, cold (bcc compile + load)     {fmt(cold)}")


if __name__ == "__main__":
    sys.exit(main())
