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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.kernel.netns import Topology, unique_name  # noqa: E402
from tests.host.tcp_echo import TcpEchoTraffic  # noqa: E402  (a test helper)


def one(delay_ms: int, fault_s: float, tmp: Path) -> dict[str, tuple[float, int]]:
    from chaosinject.experiment.runner import RunOptions, run_experiment
    from chaosinject.experiment.spec import parse_experiment

    topo = Topology()
    traffic = None
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
            "type": "python", "module": "chaosinject.experiment.actions", "func": "network_delay",
            "arguments": {"flow": "api->db/tcp", "delay": f"{delay_ms}ms", "duration": f"{fault_s}s",
                          "direction": "ingress", "engine": "userspace"}}}],
            "extensions": [{"name": "chaos-inject", "halt": {"enabled": False, "recovery": "1s"},
                            "record": {"oneway": ["db->api"], "rtt": ["api->db"], "placement": "socket",
                                       "baseline": "2s"}}]}
        traffic = TcpEchoTraffic(api, db, str(lb.ipv4.ip), 9000)
        time.sleep(0.2)
        outcome = run_experiment(parse_experiment(doc), RunOptions(run_dir=tmp / f"run-{api}", handle_signals=False))
        summary = outcome.journal["chaos-inject"]["recorders"]["record"]
        return {s["source"]: (s["shift_ns"] / 1e6, s["fault_n"]) for s in summary["latency_shift"]}
    finally:
        if traffic is not None:
            traffic.close()
        topo.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--delay-ms", type=int, default=20)
    ap.add_argument("--fault-s", type=float, default=4.0)
    args = ap.parse_args()
    C.begin("record_experiment")
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
        print(f"{source:6s}: shift {C.fmt(shifts, ' ms', digits=3, sign=True)}, "
              f"fault-phase samples {C.fmt(counts, digits=0)}")


if __name__ == "__main__":
    main()
