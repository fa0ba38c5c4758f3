"""Halt guard timing of `chaos-inject run` experiments: how soon a breach is seen and the fault removed.

Two modes:
- synthetic (no root): a sample source turns bad at a known instant while the method waits; measures bad
  samples -> breach detected (error-rate and p99 guards), breach -> faults stopped -> rollbacks done.
- ``--netns`` (root): a real 100 ms userspace delay on a flow between two throwaway namespaces, under
  100 requests/s of HTTP load; measures fault active -> latency breach -> fault removed -> rollbacks done.

Prints per-run figures and medians. Usage: python bench/experiment_halt.py [--runs 5] [--netns]
"""

from __future__ import annotations

import argparse
import http.server
import os
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.experiment import parse_experiment  # noqa: E402
from chaosinject.experiment.runner import RunOptions, run_experiment  # noqa: E402
from chaosinject.experiment.spec import GuardSpec  # noqa: E402


class OkHandler(http.server.BaseHTTPRequestHandler):
    """200 "ok" on keep-alive, no logging: the service the load generator measures (guard_baseline.py too)."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class TurnsBad:
    def __init__(self, kind: str):
        self.kind = kind
        self.bad_from: float | None = None
        self.rng = np.random.default_rng(7)

    def read_new(self):
        n = 20     # 100 requests/s polled every 0.2 s
        bad = self.bad_from is not None and time.monotonic() >= self.bad_from
        lat = self.rng.lognormal(np.log(2e6), 0.3, n)
        ok = np.ones(n, bool)
        if bad and self.kind == "errors":
            ok = self.rng.random(n) > 0.5
        if bad and self.kind == "latency":
            lat = lat * 5
        return {"latency_ns": lat, "ok": ok}


def synthetic(kind: str, tmp: Path) -> tuple[float, float, float]:
    src = TurnsBad(kind)
    exp = parse_experiment({"title": "bench", "method": [
        {"type": "action", "name": "wait", "provider": {"type": "process", "path": "true"}, "pauses": {"after": 30}}],
        "rollbacks": [{"type": "action", "name": "undo", "provider": {"type": "process", "path": "true"}}]})

    def arm_watch():
        while True:   # turn bad once the method started (the guard is armed)
            if (tmp / "st").exists():
                break
            time.sleep(0.01)

    out = {}

    def go():
        out["o"] = run_experiment(exp, RunOptions(run_dir=tmp / f"run-{kind}-{time.monotonic_ns()}",
                                                  handle_signals=False, sample_sources=[src],
                                                  guard=GuardSpec(recovery_s=0, baseline_max_s=6),
                                                  progress=lambda line: _mark(line, tmp)))

    th = threading.Thread(target=go)
    th.start()
    arm_watch()
    time.sleep(0.3)
    src.bad_from = time.monotonic()
    th.join()
    (tmp / "st").unlink(missing_ok=True)
    ci = out["o"].journal["chaos-inject"]
    assert out["o"].state == "halted", ci
    det = ci["halt_detected_ns"] / 1e9 - src.bad_from
    return det, (ci["halt_faults_stopped_ns"] - ci["halt_detected_ns"]) / 1e6, \
        (ci["rollbacks_done_ns"] - ci["halt_detected_ns"]) / 1e6


def _mark(line: str, tmp: Path) -> None:
    if "action wait" in line:
        (tmp / "st").write_text("1")


def netns_run(tmp: Path) -> tuple[float, float, float]:
    import socket

    from chaosinject.kernel.netns import Topology, socket_in, unique_name

    topo = Topology()
    srv = None
    try:
        c = topo.add_namespace(unique_name("ci-eb-c"))
        s = topo.add_namespace(unique_name("ci-eb-s"))
        a, b = topo.connect(c, s, "10.208.0.0/29", "fd00:208::/64")
        sock = socket_in(s, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(b.ipv4.ip), 8080))
        sock.listen(64)
        srv = http.server.ThreadingHTTPServer((str(b.ipv4.ip), 8080), OkHandler, bind_and_activate=False)
        srv.socket.close()
        srv.socket = sock
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = f"http://{b.ipv4.ip}:8080/"
        flow = f"{a.ipv4.ip}->{b.ipv4.ip}:8080/tcp"
        exp = parse_experiment({"title": "bench", "method": [
            {"type": "action", "name": "delay", "provider": {
                "type": "python", "module": "chaosinject.experiment.actions", "func": "start_network_fault",
                "arguments": {"flow": flow, "delay": "100ms", "duration": "60s", "netns": c}}},
            {"type": "action", "name": "wait", "provider": {"type": "process", "path": "true"},
             "pauses": {"after": 30}}],
            "rollbacks": [{"type": "action", "name": "undo", "provider": {
                "type": "python", "module": "chaosinject.experiment.actions", "func": "stop_network_fault"}}],
            "extensions": [{"name": "chaos-inject", "load": {"url": url, "rate": 100, "netns": c},
                            "recovery": 0, "halt": {"latency_quantile": 0.95, "baseline": "5s"}}]})
        o = run_experiment(exp, RunOptions(run_dir=tmp / f"run-netns-{time.monotonic_ns()}", handle_signals=False))
        ci = o.journal["chaos-inject"]
        assert o.state == "halted", (o.state, ci.get("reason"), ci.get("halt"))
        # the delay action's end (wall clock) is when the fault became active
        active_wall = datetime.fromisoformat(o.journal["run"][0]["end"]).timestamp()
        offset = time.time() - time.monotonic()
        det = ci["halt_detected_ns"] / 1e9 + offset - active_wall
        return det, (ci["halt_faults_stopped_ns"] - ci["halt_detected_ns"]) / 1e6, \
            (ci["rollbacks_done_ns"] - ci["halt_detected_ns"]) / 1e6
    finally:
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        topo.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--netns", action="store_true", help="real delay fault between namespaces (root)")
    args = ap.parse_args()
    C.begin("experiment_halt", root=args.netns, why="--netns: namespaces, a delay fault")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["CHAOS_INJECT_RUN_DIR"] = str(tmp / "run-root")
        kinds = ["netns"] if args.netns else ["errors", "latency"]
        for kind in kinds:
            rows = [netns_run(tmp) if kind == "netns" else synthetic(kind, tmp) for _ in range(args.runs)]
            for det, stop, rb in rows:
                print(f"{kind:8} detect {det * 1e3:8.1f} ms   breach->faults stopped {stop:7.1f} ms   "
                      f"breach->rollbacks done {rb:7.1f} ms")
            med = [C.median(c) for c in zip(*rows)]
            start = "fault active" if kind == "netns" else "bad samples"
            print(f"{kind:8} MEDIAN over {len(rows)}: {start} -> breach {med[0] * 1e3:.0f} ms; breach -> faults "
                  f"stopped {med[1]:.1f} ms; breach -> rollbacks done {med[2]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
