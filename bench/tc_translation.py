"""The seed's `tc qdisc add dev eth0 root netem delay D` / `tc qdisc del dev eth0 root` run through
`chaos-inject run` (translated into an owned fault) on a veth named eth0 in a throwaway namespace.

Per run: time the tc action took (parse -> fault active), the TCP connect time (SYN -> RST, one round trip)
before and during the fault, and the rollback's time. Prints per-run figures and medians.
Usage (root): python bench/tc_translation.py [--runs 5] [--delay 100ms]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.experiment import RunOptions, parse_experiment, run_experiment  # noqa: E402
from chaosinject.kernel.netns import Topology, unique_name  # noqa: E402

CONNECT_MS = r'''
import socket, statistics, sys, time
times = []
for _ in range(9):
    s = socket.socket(); s.settimeout(5)
    t = time.monotonic()
    try:
        s.connect((sys.argv[1], 9))
    except OSError:
        pass
    times.append((time.monotonic() - t) * 1000)
    s.close()
print(round(statistics.median(times), 3))
'''


def one(tmp: Path, delay: str) -> dict:
    topo = Topology()
    try:
        cli = topo.add_namespace(unique_name("ci-b-tc"))
        srv = topo.add_namespace(unique_name("ci-b-srv"))
        a, b = topo.connect(cli, srv, "10.198.7.0/29", "fd00:198:7::/64")
        for cmd in (["link", "set", "dev", a.ifname, "down"], ["link", "set", "dev", a.ifname, "name", "eth0"],
                    ["link", "set", "dev", "eth0", "up"]):
            subprocess.run(["ip", "-n", cli, *cmd], check=True)
        script = tmp / "connect.py"
        script.write_text(CONNECT_MS)
        measure = {"type": "probe", "name": "connect-ms", "provider": {
            "type": "process", "path": "ip", "arguments": ["netns", "exec", cli, sys.executable, str(script),
                                                          str(b.ipv4.ip)]}}
        exp = parse_experiment({
            "title": "bench", "configuration": {"chaos-inject": {"netns": cli, "tc_duration": "60s"}},
            "steady-state-hypothesis": {"title": "h", "probes": [
                {**measure, "name": "before", "tolerance": {"type": "regex", "pattern": ".", "target": "stdout"}}]},
            "method": [{"type": "action", "name": "add", "provider": {
                "type": "process", "path": "tc", "arguments": f"qdisc add dev eth0 root netem delay {delay}"}},
                {**measure, "name": "during"}],
            "rollbacks": [{"type": "action", "name": "del", "provider": {
                "type": "process", "path": "tc", "arguments": "qdisc del dev eth0 root"}}]})
        out = run_experiment(exp, RunOptions(run_dir=tmp / "run", handle_signals=False))
        j = out.journal
        if out.exit_code != 0:
            raise SystemExit(f"run failed: {j['chaos-inject']['reason']}")
        return {"engine": j["run"][0]["output"]["chaos-inject"]["engine"],
                "apply_ms": j["run"][0]["duration"] * 1000,
                "before_ms": float(j["steady_states"]["before"]["probes"][0]["output"]["stdout"]),
                "during_ms": float(j["run"][1]["output"]["stdout"]),
                "rollback_ms": j["rollbacks"][0]["duration"] * 1000}
    finally:
        topo.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--delay", default="100ms")
    args = ap.parse_args()
    C.begin("tc_translation")
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            r = one(Path(d), args.delay)
        rows.append(r)
        print(json.dumps({"run": i, **{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}}))
    med = {k: C.median(r[k] for r in rows) for k in ("apply_ms", "before_ms", "during_ms", "rollback_ms")}
    print(f"medians of {args.runs} (delay {args.delay}, engine {rows[0]['engine']}): tc action -> fault active "
          f"{med['apply_ms']:.1f} ms; connect RTT {med['before_ms']:.2f} ms before, {med['during_ms']:.1f} ms "
          f"during; rollback (tc qdisc del -> ours removed) {med['rollback_ms']:.1f} ms")


if __name__ == "__main__":
    main()
