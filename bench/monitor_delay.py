"""Benchmark: what the halt guard's dependence-aware prior costs in time to halt on a real breach (issue 14's last
open point). Needs nothing (no root).

    .venv/bin/python bench/monitor_delay.py [--reps 40] [--rate 1000]

For each generator of tests/unit/analysis/dependent_synth.py (Markov congestion episodes, AR(1) on log latency,
GC-like pauses, independent lognormal) a :class:`QuantileExceedanceMonitor` is built from a 20,000-sample
baseline of the same process (``from_baseline(factor=1.0, alpha=0.01)``: threshold = the baseline p99's upper
95 % bound) and then fed a fault stream whose latencies are the same process x (1 + X) (X = +50 %, +100 %), 100
samples per look, until it halts (at most 50,000 samples). Printed per generator and shift: the median (and
90th percentile) number of fault samples to the halt, and the same in seconds at ``--rate`` samples per second,
for the dependence-aware monitor (prior inflation from the baseline's exceedances in time order) and the plain
one (independence assumed, on the same baseline and stream); "not halted" counts the streams that never halted.
The plain monitor's speed on dependent series is partly its false alarms (bench/dependence_calibration.py:
0.2-0.6 of H0 streams): the comparison that states the price of honesty is dependence-aware on a dependent
baseline vs on the independent one. The error monitor likewise, for bursty (runs of ~20) and independent errors
at a 1 % baseline rate, limit 2 %, fault rate 4 %. Seeded; single-threaded.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO / "tests" / "unit" / "analysis"))
from chaosinject.analysis import ErrorRateMonitor, QuantileExceedanceMonitor  # noqa: E402
from dependent_synth import GENERATORS, bursty_errors, independent_errors  # noqa: E402

N_BASE, LOOK, CAP = 20_000, 100, 50_000


def latency_delay(name: str, shift: float, reps: int, dependence: bool, seed: int = 61) -> tuple[list[float], float]:
    """Samples to halt per stream (capped streams left out) and the mean prior inflation."""
    gen, _ = GENERATORS[name]
    rng = np.random.default_rng(seed)
    out, infl = [], []
    for _ in range(reps):
        m = QuantileExceedanceMonitor.from_baseline(gen(rng, N_BASE), factor=1.0, alpha=0.01, dependence=dependence)
        infl.append(m.inflation)
        stream = gen(rng, CAP) * (1.0 + shift)
        for j in range(0, CAP, LOOK):
            if m.update_latencies(stream[j:j + LOOK]):
                out.append(j + LOOK)
                break
    return out, float(np.mean(infl))


def error_delay(gen, reps: int, dependence: bool, seed: int = 67) -> tuple[list[float], float]:
    rng = np.random.default_rng(seed)
    out, infl = [], []
    for _ in range(reps):
        base_ok = ~gen(rng, N_BASE, 0.01)
        m = ErrorRateMonitor(0.02, 0.01, baseline_ok=base_ok if dependence else None)
        infl.append(m.inflation)
        fail = gen(rng, CAP, 0.04)
        for j in range(0, CAP, LOOK):
            if m.update_ok(~fail[j:j + LOOK]):
                out.append(j + LOOK)
                break
    return out, float(np.mean(infl))


def line(label: str, halts: list[float], reps: int, infl: float, rate: float) -> str:
    if not halts:
        return f"    {label:<16} never halted in {CAP} samples ({reps} streams), mean prior inflation {infl:.3g}"
    med, p90 = C.median(halts), C.percentile(halts, 90)
    return (f"    {label:<16} samples to halt (of the streams that halted) median {med:>7.0f} (p90 {p90:>7.0f}) = {med / rate:6.2f} s "
            f"(p90 {p90 / rate:6.2f} s) at {rate:g}/s; not halted {reps - len(halts)}/{reps}; "
            f"mean prior inflation {infl:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=40, help="streams per figure")
    ap.add_argument("--rate", type=float, default=1000.0, help="samples per second, to state delays in seconds")
    args = ap.parse_args()
    C.begin("monitor_delay", root=False, paths=("analysis", "tests/unit/analysis"))
    print(f"halt delay on a real breach: baseline {N_BASE} samples, looks of {LOOK}, alpha 1 %, {args.reps} seeded "
          f"streams per figure", flush=True)
    for shift in (0.5, 1.0):
        for name in GENERATORS:
            print(f"latency monitor, {name}, fault = baseline process x {1 + shift:g}:", flush=True)
            for label, dep in (("dependence-aware", True), ("plain", False)):
                halts, infl = latency_delay(name, shift, args.reps, dep)
                print(line(label, halts, args.reps, infl, args.rate), flush=True)
    for gname, gen in (("bursty errors", bursty_errors), ("independent errors", independent_errors)):
        print(f"error monitor, {gname}, baseline 1 %, limit 2 %, fault 4 %:", flush=True)
        for label, dep in (("dependence-aware", True), ("plain", False)):
            halts, infl = error_delay(gen, args.reps, dep)
            print(line(label, halts, args.reps, infl, args.rate), flush=True)


if __name__ == "__main__":
    main()
