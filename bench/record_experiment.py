#!/usr/bin/env python3
"""An experiment's record block end to end: the shift it measures per source against the delay requested.

Per repetition: a fresh pair of namespaces (api, db) and an inventory naming them; an echo server on db:9000
and a client in api opening a TCP connection every ~30 ms (4 exchanges each); the experiment delays db's
replies by --delay-ms (userspace engine, ingress at api, --fault-s) and records one-way db->api at the
socket placement and RTT of api's connections (``record`` block, baseline 2 s, recovery 1 s). Printed: the
shift the run's summary states per source (fault median - baseline median) and its samples, median (min-max)
over --reps.

    sudo .venv/bin/python bench/record_experiment.py [--reps 3] [--delay-ms 20] [--fault-s 4]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import begin  # noqa: E402
from injector.kernel.netns import Topology, socket_in, unique_name  # noqa: E402


def traffic(client_ns: str, server_ns: str, server_ip: str, done: threading.Event) -> list[threading.Thread]:
    listener = socket_in(server_ns, socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_ip, 9000))
    listener.listen(64)
    listener.settimeout(0.2)

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def serve() -> None:
        with listener:
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def client() -> None:
        while not done.is_set():
            try:
                with socket_in(client_ns, socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.settimeout(5)
                    s.connect((server_ip, 9000))
                    for _ in range(4):
                        s.sendall(b"x" * 64)
                        got = 0
                        while got < 64:
                            got += len(s.recv(64 - got) or b"")
            except OSError:
                pass
            time.sleep(0.03)
    threads = [threading.Thread(target=serve, daemon=True), threading.Thread(target=client, daemon=True)]
    for t in threads:
        t.start()
    return threads


def one(delay_ms: int, fault_s: float, tmp: Path) -> dict[str, tuple[float, int]]:
    from injector.experiment.runner import RunOptions, run_experiment
    from injector.experiment.spec import parse_experiment

    topo = Topology()
    done = threading.Event()
    threads: list[threading.Thread] = []
    try:
        api = topo.add_namespace(unique_name("br-api"))
        db = topo.add_namespace(unique_name("br-db"))
        la, lb = topo.connect(api, db, "10.198.8.0/29", "fd00:198:8::/64")
        inventory = tmp / f"inventory-{api}.toml"
        inventory.write_text(f'[hosts.api]\naddresses = ["{la.ipv4.ip}"]\nnetns = "{api}"\ninterface = "{la.ifname}"\n'
                             f'[hosts.db]\naddresses = ["{lb.ipv4.ip}"]\nports = [9000]\nnetns = "{db}"\n'
                             f'interface = "{lb.ifname}"\n')
        os.environ["CHAOS_INJECT_INVENTORY"] = str(inventory)
        doc = {"title": "bench", "method": [{"type": "action", "name": "delay", "provider": {
            "type": "python", "module": "injector.experiment.actions", "func": "network_delay",
            "arguments": {"flow": "api->db/tcp", "delay": f"{delay_ms}ms", "duration": f"{fault_s}s",
                          "direction": "ingress", "engine": "userspace"}}}],
            "extensions": [{"name": "chaos-inject", "halt": {"enabled": False, "recovery": "1s"},
                            "record": {"oneway": ["db->api"], "rtt": ["api->db"], "placement": "socket",
                                       "baseline": "2s"}}]}
        threads = traffic(api, db, str(lb.ipv4.ip), done)
        time.sleep(0.2)
        outcome = run_experiment(parse_experiment(doc), RunOptions(run_dir=tmp / f"run-{api}", handle_signals=False))
        summary = outcome.journal["chaos-inject"]["recorders"]["record"]
        return {s["source"]: (s["shift_ns"] / 1e6, s["fault_n"]) for s in summary["latency_shift"]}
    finally:
        done.set()
        for t in threads:
            t.join(10)
        topo.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--delay-ms", type=int, default=20)
    ap.add_argument("--fault-s", type=float, default=4.0)
    args = ap.parse_args()
    begin("record_experiment")
    print(f"requested +{args.delay_ms} ms on db's replies (userspace, ingress at api) for {args.fault_s:g} s; "
          f"{args.reps} repetitions")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CHAOS_INJECT_RUN_DIR", str(Path(tmp) / "state"))
        rows = [one(args.delay_ms, args.fault_s, Path(tmp)) for _ in range(args.reps)]
    for source in ("oneway", "rtt"):
        shifts = [r[source][0] for r in rows if source in r]
        counts = [r[source][1] for r in rows if source in r]
        if not shifts:
            print(f"{source:6s}: no shift measured")
            continue
        print(f"{source:6s}: shift +{statistics.median(shifts):.3f} ms ({min(shifts):+.3f} to {max(shifts):+.3f}), "
              f"fault-phase samples {statistics.median(counts):.0f} ({min(counts)}-{max(counts)})")


if __name__ == "__main__":
    main()
