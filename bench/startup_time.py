#!/usr/bin/env python3
"""CLI start-up: `chaos-inject --help` and `chaos-inject status`, wall and CPU time per invocation.

Each figure is the median (min-max) of --trials fresh processes, interleaved with `python -c pass` (the
interpreter's own floor). CPU time (user + system, from getrusage of the child) is what the command itself
costs; wall time on a shared, loaded machine adds the time it waited for a CPU. `--tree DIR` measures another
checkout beside this one in the same run (`python -m chaosinject.cli` run from DIR imports DIR's package), e.g.
the main branch: `--tree /work/main`.

Usage: .venv/bin/python bench/startup_time.py [--trials 20] [--tree DIR ...]   (status lists this host's runs:
as root it reads /run/chaos-inject; no change is made)
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def wall_and_cpu(argv: list[str], cwd: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = C.timed(lambda: subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fmt(values: list[float]) -> str:
    """Seconds as "median ms (min-max)"."""
    return C.fmt(values, " ms", 1e3, 0, width=4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tree", action="append", default=[], help="another checkout to measure beside this one")
    args = parser.parse_args()
    C.begin("startup_time", root=False)
    trees = [str(C.REPO), *args.tree]
    cases = [("python -c pass", [sys.executable, "-c", "pass"], [str(C.REPO)])]
    for tree in trees:
        for what in ("--help", "status"):
            cases.append((f"{what:6s} {tree}", [sys.executable, "-m", "chaosinject.cli", what], [tree]))
    walls: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    cpus: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.trials):
        for name, argv, (cwd,) in cases:
            wall, cpu = wall_and_cpu(argv, cwd)
            walls[name].append(wall)
            cpus[name].append(cpu)
    print(f"{'':40s} {'wall, median (min-max)':26s} CPU (user+sys), median (min-max); n={args.trials} each")
    for name, _, _ in cases:
        print(f"{name:40s} {fmt(walls[name]):26s} {fmt(cpus[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
