"""The halt guard's latency baseline under CPU load: why its bound got inflated, and what importing the
statistics package before the load starts changes.

Each trial is a fresh interpreter (the import happens once per process) that does what `chaos-inject run`
does: an in-process HttpLoad (100 requests/s) against a small HTTP server on 127.0.0.1, the HaltGuard
collecting its baseline until it has enough samples for the p95's confidence bound, then arming. Two orders:
- ``late``: the guard (and with it ``analysis``: numpy/scipy, ~0.5 s holding the GIL) is set up while the
  load already runs, as the runner did when ``wait_for_baseline`` imported it;
- ``early``: the guard is built before the load starts (the runner's order; HaltGuard imports it then).
Optional ``--busy N`` busy-loop processes load the machine (ended by pid at the end).

Prints per trial and the medians of the baseline's p95, its max and the halt threshold (2x the p95 bound).
Usage: .venv/bin/python bench/guard_baseline.py [--trials 7] [--busy 4]      (no root; loopback only)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SERVER = f"""
import http.server, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from experiment_halt import OkHandler
http.server.ThreadingHTTPServer.daemon_threads = True
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OkHandler)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def trial(order: str, url: str) -> dict:
    from chaosinject.experiment.guard import HaltGuard
    from chaosinject.experiment.http_load import HttpLoad
    from chaosinject.experiment.spec import GuardSpec

    spec = GuardSpec(latency_max_ratio=2.0, latency_quantile=0.95, baseline_max_s=8.0)
    load = HttpLoad(url, 100)
    guard = HaltGuard(spec, [load], lambda reason: None) if order == "early" else None
    load.start()
    try:
        if guard is None:
            guard = HaltGuard(spec, [load], lambda reason: None)   # imports analysis while the load runs
        guard.start()
        guard.wait_for_baseline(threading.Event())
        guard.arm()
        armed = guard.armed_at_ns
    finally:
        guard.stop()
        load.stop()
    b = load.all()
    lat = b["latency_ns"][(b["t_ns"] < armed) & b["ok"]] / 1e6
    return {"order": order, "n": int(lat.size), "p95_ms": float(C.percentile(lat.tolist(), 95)),
            "max_ms": float(lat.max()), "threshold_ms": guard.summary()["latency_threshold_ns"] / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=7, help="trials per order (default 7)")
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes loading the machine (default 0)")
    ap.add_argument("--trial", choices=("late", "early"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial, args.url)))
        return
    C.begin("guard_baseline", root=False, paths=("injector", "analysis"))
    print(f"trials={args.trials} busy={args.busy}")
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    busy: list[subprocess.Popen] = []
    results: dict[str, list[dict]] = {"late": [], "early": []}
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/"
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        for i in range(args.trials):
            for order in ("late", "early"):       # alternated: both orders see the same machine
                out = subprocess.run([sys.executable, __file__, "--trial", order, "--url", url], capture_output=True,
                                     text=True, timeout=120)
                if out.returncode:
                    sys.exit(f"trial failed: {out.stderr}")
                r = json.loads(out.stdout)
                results[order].append(r)
                print(f"trial {i} {order:5s}: n={r['n']:3d} p95 {r['p95_ms']:7.2f} ms  max {r['max_ms']:7.2f} ms  "
                      f"threshold {r['threshold_ms']:7.2f} ms  (load {C.load_average().split()[0]})", flush=True)
    finally:
        for p in (*busy, server):
            p.terminate()
        for p in (*busy, server):
            p.wait()
    for order, rs in results.items():
        med = {k: C.median(r[k] for r in rs) for k in ("p95_ms", "max_ms", "threshold_ms")}
        print(f"median {order:5s}: baseline p95 {med['p95_ms']:.2f} ms, max {med['max_ms']:.2f} ms, halt threshold "
              f"{med['threshold_ms']:.2f} ms (max of trials {max(r['threshold_ms'] for r in rs):.2f} ms)")


if __name__ == "__main__":
    main()
