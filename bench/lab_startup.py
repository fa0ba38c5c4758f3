"""How long `lab up` and `lab down` take (the netns lab's cost in CI), per stage, over a few cycles.

    sudo .venv/bin/python bench/lab_startup.py [--cycles 5]

Each cycle brings a lab up under a prefix, subnet and state directory of its own (nothing shared with a lab that
may already be up), checks /items answers 200, takes it down and checks nothing is left. Prints medians.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chaosinject.httpclient import get as http_get  # noqa: E402
from chaosinject.lab.netlab import lab_leftovers  # noqa: E402
from chaosinject.lab.preflight import free_subnet  # noqa: E402
from chaosinject.lab import LabSpec, lab_down, lab_up  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("lab_startup: needs root", file=sys.stderr)
        return 3
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"lab_startup: commit {commit}, kernel {os.uname().release}, {os.cpu_count()} cpus, {args.cycles} cycles")
    ups, downs, stages = [], [], {}
    for i in range(args.cycles):
        spec = LabSpec(prefix="cib" + secrets.token_hex(2), subnet=free_subnet("10.213"),
                       state_dir=Path("/run/chaos-inject") / f"lab-bench-{secrets.token_hex(3)}")
        start = time.monotonic()
        try:
            info = lab_up(spec)
            ups.append(time.monotonic() - start)
            for k, v in info.timings_s.items():
                stages.setdefault(k, []).append(v)
            assert http_get(f"{info.api_url}/items").status == 200
        finally:
            start = time.monotonic()
            lab_down(spec)
            downs.append(time.monotonic() - start)
        left = lab_leftovers(spec, info.processes.values())
        assert not left, f"left behind: {left}"
        print(f"  cycle {i + 1}: up {ups[-1]:.2f} s, down {downs[-1]:.2f} s")
    print(f"lab up   median {statistics.median(ups):.2f} s (min {min(ups):.2f}, max {max(ups):.2f})")
    print(f"lab down median {statistics.median(downs):.2f} s (min {min(downs):.2f}, max {max(downs):.2f})")
    print("up by stage (median s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
