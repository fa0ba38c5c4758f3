"""How long `chaos-inject demo` (what `sudo make demo` runs) takes, and what its runs measured.

    sudo .venv/bin/python bench/demo_time.py [--runs 3]
    bash scripts/vm/run.sh 6.1 -- .venv/bin/python bench/demo_time.py --runs 1     # the same in the 6.1 VM (TCG)

Each run is the real CLI on a lab of its own (unique prefix, free subnet, own state directory: a lab that may
already be up is not touched), brought up and taken down by the demo. Per run: wall time, exit code, verdict,
lab up time, the phases' lengths from meta.json, the 503 share in the fault phase, the api's 503 latency (its
database deadline), the delay engine's measured hold, the requests per phase with the 95 % upper bound of the
error rate they allow, the gap between the method's start and the fault's activation (in no phase) and the
recorded samples' verdict (verdict.json, per phase). Prints medians. Checks nothing is left.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.kernel.netns import existing_namespaces  # noqa: E402
from chaosinject.lab.preflight import free_subnet  # noqa: E402

REPO = C.REPO


def one_run(tmp: Path, i: int, timeout_s: float = 300) -> dict:
    prefix = "cidb" + secrets.token_hex(2)
    state = Path("/run/chaos-inject") / f"lab-bench-demo-{secrets.token_hex(3)}"
    record = tmp / f"run{i}"
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(tmp / "run-root")}
    with C.Stopwatch() as sw:
        out = subprocess.run([sys.executable, "-m", "chaosinject.cli", "demo", "-q", "--record", str(record),
                              "--lab-prefix", prefix, "--lab-subnet", free_subnet("10.214"), "--lab-state-dir",
                              str(state)], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout_s)
    wall = sw.s
    left = [ns for ns in existing_namespaces() if ns.startswith(prefix + "-")] + ([str(state)] if state.exists() else [])
    if left:
        raise SystemExit(f"left behind: {left}")
    lab_up = re.search(r"lab up in ([\d.]+) s", out.stdout)
    verdict = re.search(r"verdict: (\w+)", out.stdout)
    row = {"wall_s": wall, "exit": out.returncode, "verdict": verdict.group(1) if verdict else "?",
           "lab_up_s": float(lab_up.group(1)) if lab_up else float("nan")}
    capacity = re.search(r"api capacity measured at lab up:? ([\d.]+)/s", out.stdout)
    rate = re.search(r"load ([\d.]+) requests/s", out.stdout)
    row["capacity_per_s"] = float(capacity.group(1)) if capacity else float("nan")
    row["load_per_s"] = float(rate.group(1)) if rate else float("nan")
    meta = json.loads((record / "meta.json").read_text())
    for name, w in meta["phases"].items():
        row[f"{name}_s"] = (w["end_ns"] - w["start_ns"]) / 1e9
    from chaosinject.analysis import load_run

    df = load_run(record).samples
    fault = df[df["phase"].astype(str) == "fault"]
    row["fault_503_share"] = float((fault["status"] == 503).mean())
    row["fault_500"] = int((fault["status"] == 500).sum())
    lat_503 = fault.loc[fault["status"] == 503, "latency_ns"].astype(float).tolist()
    row["api_503_latency_ms"] = C.median(lat_503) / 1e6 if lat_503 else float("nan")
    counters = json.loads((record / "counters.json").read_text())
    holds = [c["delay_p50_ns"] for c in counters.values() if "delay_p50_ns" in c]
    row["engine_hold_p50_ms"] = holds[0] / 1e6 if holds else float("nan")
    row["hold_clock"] = ("kernel" if any(c.get("delay_kernel_measured") for c in counters.values())
                         else "userspace" if holds else "none")
    faults = json.loads((record / "journal.json").read_text())["chaos-inject"].get("faults") or [{}]
    row["engine"] = faults[0].get("engine", "?")
    from chaosinject.analysis import proportion_ci

    for name in ("baseline", "recovery"):
        part = df[(df["phase"].astype(str) == name) & (df["source"].astype(str) == "request")]
        row[f"{name}_requests"] = float(len(part))
        errors = int((~part["ok"]).sum())
        row[f"{name}_err_upper_pct"] = 100 * proportion_ci(errors, len(part), 0.95, "clopper-pearson").high
    onset = json.loads((record / "journal.json").read_text())["chaos-inject"].get("fault_onset") or {}
    row["onset_s"] = float(onset.get("seconds", float("nan")))
    v = json.loads((record / "verdict.json").read_text())
    row["samples_verdict"] = v["outcome"] + " (" + ", ".join(f"{p} {x['outcome']}" for p, x in v["phases"].items()) + ")"
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900.0, help="per run, s (a TCG VM needs minutes)")
    args = ap.parse_args()
    C.begin("demo_time", why="the demo builds the netns lab")
    rows = []
    with tempfile.TemporaryDirectory(prefix="chaos-demo-bench-") as tmp:
        for i in range(args.runs):
            row = one_run(Path(tmp), i, args.timeout)
            rows.append(row)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in row.items()), flush=True)
    where = f"kernel {os.uname().release}" + (" in the QEMU VM (TCG)" if os.environ.get("CHAOS_INJECT_VM") else "")
    print(f"\nmedians over {len(rows)} runs ({where}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}):")
    for key in rows[0]:
        if isinstance(rows[0][key], float):
            print(f"  {key:<22} {C.median(r[key] for r in rows):.3f}")
    print(f"  exit codes {[r['exit'] for r in rows]}, verdicts {[r['verdict'] for r in rows]}, engines "
          f"{[r['engine'] for r in rows]}, hold measured in {[r['hold_clock'] for r in rows]}")
    print(f"  recorded samples: {[r['samples_verdict'] for r in rows]}")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
