"""How long `lab up` and `lab down` take (the netns lab's cost in CI), per stage, over a few cycles.

    sudo .venv/bin/python bench/lab_startup.py [--cycles 5]

Each cycle brings a lab up under a prefix, subnet and state directory of its own (nothing shared with a lab that
may already be up), checks /items answers 200, takes it down and checks nothing is left. Prints medians.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.httpclient import get as http_get  # noqa: E402
from chaosinject.lab.netlab import lab_leftovers  # noqa: E402
from chaosinject.lab.preflight import free_subnet  # noqa: E402
from chaosinject.lab import LabSpec, lab_down, lab_up  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=5)
    args = ap.parse_args()
    C.begin("lab_startup", why="the netns lab")
    print(f"{args.cycles} cycles")
    ups, downs, stages = [], [], {}
    for i in range(args.cycles):
        spec = LabSpec(prefix="cib" + secrets.token_hex(2), subnet=free_subnet("10.213"),
                       state_dir=Path("/run/chaos-inject") / f"lab-bench-{secrets.token_hex(3)}")
        try:
            with C.Stopwatch() as up:
                info = lab_up(spec)
            ups.append(up.s)
            for k, v in info.timings_s.items():
                stages.setdefault(k, []).append(v)
            assert http_get(f"{info.api_url}/items").status == 200
        finally:
            downs.append(C.timed(lambda: lab_down(spec)))
        left = lab_leftovers(spec, info.processes.values())
        assert not left, f"left behind: {left}"
        print(f"  cycle {i + 1}: up {ups[-1]:.2f} s, down {downs[-1]:.2f} s")
    print(f"lab up   median (min-max) {C.fmt(ups, ' s')}")
    print(f"lab down median (min-max) {C.fmt(downs, ' s')}")
    print("up by stage (median s): " + ", ".join(f"{k} {C.median(v):.2f}" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
