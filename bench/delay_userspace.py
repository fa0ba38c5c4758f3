"""Requested vs achieved added delay of the userspace (NFQUEUE) engine: 1 ms, 10 ms, 100 ms.

Two throwaway namespaces joined by a veth pair; UDP from the client to the server at a few thousand packets/s,
each datagram stamped with CLOCK_MONOTONIC at send (one clock: both ends are on this host). First a baseline
without any fault (the path's own one-way latency), then, per requested delay, the engine runs in a child
process (as the CLI would: its own process and GIL) while the same traffic is measured. The added delay of a
packet is its one-way latency minus the baseline median; error = added delay - requested.

    sudo .venv/bin/python bench/delay_userspace.py [--rate 3000] [--count 6000] [--delays 1ms,10ms,100ms]

Prints, per delay: median and p99 of the error (and p1, to show early releases), and the engine's own view
(hold time p50/p99 from its counters). Namespaces, the engine process and its nft table are removed on every
exit path (SIGTERM/SIGHUP become SystemExit).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STAMP = struct.Struct("!IQ")  # sequence, send time (CLOCK_MONOTONIC ns)
PORT = 9000


# -- the engine, in a child process --------------------------------------------------------------------------
def child(spec: dict) -> int:
    """Apply the userspace engine for one flow; print 'ready', run until stdin closes or SIGTERM; print the
    counters as JSON. Everything is undone by the owner on the way out."""
    from injector.engines.userspace import UserspaceEngine
    from injector.errors import Interrupted
    from injector.kernel.owner import KernelOwner
    from injector.plan import Interface, build_plan
    from injector.spec import FaultSpec, parse_flow

    fault = FaultSpec(delay_ns=spec["delay_ns"], jitter_ns=spec.get("jitter_ns", 0),
                      distribution=spec.get("distribution"))
    plan = build_plan([(parse_flow(spec["flow"]), Interface(spec["ifname"], spec["netns"]))], fault,
                      direction=spec.get("direction", "egress"), duration_ns=3600 * 10**9, seed=spec.get("seed"))
    engine = UserspaceEngine()
    counters = {}
    try:
        with KernelOwner(plan.run_id, meta=plan.to_dict()) as owner:
            engine.apply(plan, owner, time.monotonic_ns() + plan.duration_ns)
            print("ready", flush=True)
            try:
                sys.stdin.read()  # until the parent closes our stdin
            finally:
                counters = engine.counters()
    except Interrupted:
        pass
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters = {str(k): v for k, v in counters.items()}
    counters["cpu_s"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(counters), flush=True)
    return 0


class EngineProcess:
    def __init__(self, spec: dict, run_dir: str):
        env = {**os.environ, "CHAOS_INJECT_RUN_DIR": run_dir}
        self.proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=str(REPO))
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"engine did not start: {line!r} {self.proc.stderr.read()}")

    def stop(self) -> dict:
        out, err = self.proc.communicate(input="", timeout=30)
        if self.proc.returncode != 0:
            raise RuntimeError(f"engine exited {self.proc.returncode}: {err}")
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- traffic -------------------------------------------------------------------------------------------------
def measure(client_ns: str, server_ns: str, dst: str, count: int, rate_pps: float) -> list[int]:
    """One-way latencies (ns) of ``count`` datagrams sent at ``rate_pps``."""
    from injector.kernel.netns import socket_in

    rx = socket_in(server_ns, socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
    rx.bind((dst, PORT))
    rx.settimeout(0.2)
    tx = socket_in(client_ns, socket.AF_INET, socket.SOCK_DGRAM)
    latencies: list[int] = []
    done = threading.Event()

    def receive() -> None:
        realtime()
        while True:
            try:
                data = rx.recv(2048)
            except (TimeoutError, socket.timeout):
                if done.is_set():
                    return
                continue
            now = time.monotonic_ns()
            latencies.append(now - STAMP.unpack_from(data)[1])

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        realtime()
        interval = 1.0 / rate_pps
        start = time.monotonic()
        pad = b"\0" * 36
        for seq in range(count):
            ahead = start + seq * interval - time.monotonic()
            if ahead > 0.0005:
                time.sleep(ahead)
            tx.sendto(STAMP.pack(seq, time.monotonic_ns()) + pad, (dst, PORT))
        time.sleep(0.5)
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        done.set()
        thread.join(timeout=5)
        rx.close()
        tx.close()
    return latencies


def realtime() -> None:
    """This thread SCHED_FIFO (as the engine's I/O thread): the measurement's own wake-up latency on a busy
    host would otherwise dominate the p99."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        pass


def quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def parse_delays(text: str) -> list[int]:
    from injector.spec.units import parse_duration_ns

    return [parse_duration_ns(item) for item in text.split(",") if item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=3000.0, help="packets per second (default 3000)")
    parser.add_argument("--count", type=int, default=6000, help="packets per measurement (default 6000)")
    parser.add_argument("--delays", default="1ms,10ms,100ms")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if os.geteuid() != 0:
        sys.exit("this benchmark needs root (network namespaces, nftables, NFQUEUE): run it with sudo")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    sys.setswitchinterval(0.0002)
    import gc

    gc.freeze()  # the measuring threads must not pause for a full collection either

    from injector.kernel.netns import Topology, unique_name
    from injector.kernel.sweep import sweep

    delays = parse_delays(args.delays)
    run_dir = tempfile.mkdtemp(prefix="chaos-bench-")
    topo = Topology()
    engine: EngineProcess | None = None
    try:
        client_ns = topo.add_namespace(unique_name("ci-b-client"))
        server_ns = topo.add_namespace(unique_name("ci-b-server"))
        client, server = topo.connect(client_ns, server_ns, "10.198.7.0/29", "fd00:198:7::/64")
        dst = str(server.ipv4.ip)
        flow = f"{client.ipv4.ip}->{dst}:{PORT}/udp"
        measure(client_ns, server_ns, dst, 200, args.rate)  # warm-up (ARP/ND, caches)
        base = measure(client_ns, server_ns, dst, args.count, args.rate)
        base_med = statistics.median(base)
        print(f"userspace (NFQUEUE) delay engine, UDP one-way, {args.rate:.0f} packets/s, {args.count} packets "
              f"per row; kernel {os.uname().release}, {os.cpu_count()} CPUs")
        print(f"baseline one-way latency: median {base_med / 1e3:.1f} us, p99 {quantile(base, 0.99) / 1e3:.1f} us "
              f"({len(base)}/{args.count} received)")
        print(f"{'requested':>10s} {'received':>9s} {'err median':>11s} {'err p99':>9s} {'err p1':>9s} "
              f"{'hold p50':>10s} {'hold p99':>10s} {'cpu us/pkt':>10s}")
        print("errors in us: achieved added delay - requested; hold: the engine's own release - receive time; cpu: "
              "engine process CPU time per packet (start-up included)")
        for delay_ns in delays:
            engine = EngineProcess({"flow": flow, "netns": client_ns, "ifname": client.ifname,
                                    "delay_ns": delay_ns}, run_dir)
            lat = measure(client_ns, server_ns, dst, args.count, args.rate)
            report = engine.stop()
            counters = report["0"]
            engine = None
            cpu_us = report["cpu_s"] * 1e6 / max(1, counters.get("delayed_packets", 1))
            errors = [x - base_med - delay_ns for x in lat]
            print(f"{delay_ns / 1e6:>8.0f}ms {len(lat):>9d} {statistics.median(errors) / 1e3:>+11.1f} "
                  f"{quantile(errors, 0.99) / 1e3:>+9.1f} {quantile(errors, 0.01) / 1e3:>+9.1f} "
                  f"{counters.get('delay_p50_ns', 0) / 1e6:>8.3f}ms {counters.get('delay_p99_ns', 0) / 1e6:>8.3f}ms "
                  f"{cpu_us:>8.1f}")
        return 0
    finally:
        if engine is not None:
            engine.kill()
            os.environ["CHAOS_INJECT_RUN_DIR"] = run_dir
            sweep()  # what a killed engine left: its nft table
        topo.close()
        for leftover in Path(run_dir).rglob("*"):
            if leftover.is_file():
                leftover.unlink()
        for directory in sorted(Path(run_dir).rglob("*"), reverse=True):
            directory.rmdir()
        os.rmdir(run_dir)


if __name__ == "__main__":
    sys.exit(main())
