"""Benchmark: calibration and power of the dependence-aware statistics (analysis/dependence.py) on longer runs
than the unit-tier suite (tests/unit/analysis/test_dependence_calibration.py), beside the independence-assuming
methods (the same data marked as having no time order, ``ordered=False``). Needs nothing (no root).

    .venv/bin/python bench/dependence_calibration.py [--reps 1000] [--power-reps 200] [--error-reps 10000]
        [--only all|monitors|power|errors|coverage]

Prints, per generator of tests/unit/analysis/dependent_synth.py (Markov congestion episodes, AR(1) on log
latency, GC-like pauses, independent lognormal; n = 20,000 per phase):
- p99 95 % interval coverage (among conclusive intervals), share of phases too short for their dependence,
  and the independence-assuming interval's coverage;
- A/A false-positive rate at alpha 5 % of the verdict's p99 change test (expected deviation), of
  ``quantile_shift_test`` and ``tail_rank_test`` (one-sided), of ``compare_latency``'s Mann-Whitney p-value
  (two-sided) and the share of its 98 % Hodges-Lehmann shift intervals that exclude 0 (nominal 2 %; default
  ``groups``, so the interval is the exact Moses interval at this n), new and old;
- for bursty and independent errors: A/A rate of "error rate significantly higher than baseline" and the 95 %
  error-rate interval's coverage, new and old (counts only); and on ``--error-reps`` phases (cheap: ~1 ms each)
  the absolute interval three ways (the verdict's: from the errors' episodes when dependent, or with one episode
  batch means' lower end and the episode upper end; Clopper-Pearson on
  batch-means effective counts, the verdict's until round 6; binomial): coverage, the shares missing from below
  and from above, median width; the same (half as many phases) for other burst shapes (4 to 40 bursts per
  phase), and the time of ``episode_rate_ci`` on 1e7 requests;
- the halt guard's sequential monitors: share of H0 streams (latency threshold = the true p99, error rate at
  the 1 % limit; 20,000 samples looked at every 100) that ever breach at alpha 5 %, dependence-aware (prior
  inflation from a 20,000-sample baseline of the same process) and plain (independence assumed);
- power at alpha 5 % for +5 % p99 (fault = baseline x 1.05) at n = 1e5 per phase, new and old: the verdict's
  p99 change test, quantile_shift_test and tail_rank_test, on independent and AR(1) data, and the time of
  one compare_latency at n = 1e5 + 1e5, new and old.
``--only coverage`` prints the p99 interval's coverage alone (the first column, the same seeds) with its SE, for
runs long enough to tell 0.97 from 0.975. Each figure is one seeded run of R repetitions (standard error ~ sqrt(p (1 - p) / R): 0.007 at p = 0.05,
R = 1000). Single-threaded (OMP/BLAS threads 1).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO / "tests" / "unit" / "analysis"))
from chaosinject.analysis import (Outcome, PhaseData, compare_latency, episode_rate_ci, evaluate,  # noqa: E402
                                  indicator_dependence, quantile_shift_test, tail_rank_test)
from dependent_synth import GENERATORS, bursty_errors, independent_errors  # noqa: E402
from test_dependence_calibration import (LAT_ONLY, aa_errors, aa_latency, aa_tail_tests, coverage,  # noqa: E402
                                        error_intervals, error_monitor_false_alarms, monitor_false_alarms)


def power(name: str, reps: int, n: int, seed: int = 17) -> dict[str, float]:
    """Share of runs (fault = baseline x 1.05) each test detects at alpha 5 %, new (time order) and old."""
    gen, _ = GENERATORS[name]
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(("verdict", "verdict_old", "shift", "shift_old", "tail", "tail_old"), 0)
    secs: dict[str, list[float]] = {"mw": [], "mw_old": []}
    for i in range(reps):
        x, y = gen(rng, n), gen(rng, n) * 1.05
        for suffix, ordered in (("", True), ("_old", False)):
            ph = {"baseline": PhaseData(x, ordered=ordered), "fault": PhaseData(y, ordered=ordered)}
            v = evaluate(ph, LAT_ONLY, latency_unit_ns=False, expect={"fault": "deviation"})
            hits["verdict" + suffix] += v.phase_outcome("fault") is Outcome.DEVIATED
            hits["shift" + suffix] += quantile_shift_test(x, y, ordered=ordered).pvalue < 0.05
            hits["tail" + suffix] += tail_rank_test(x, y, ordered=ordered).pvalue < 0.05
            if i < 10:
                secs["mw" + suffix].append(C.timed(lambda: compare_latency(x, y, ordered=ordered)))
    out = {k: v / reps for k, v in hits.items()}
    out.update({k: C.median(v) for k, v in secs.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1000, help="repetitions per calibration figure")
    ap.add_argument("--power-reps", type=int, default=200, help="repetitions per power figure (n = 1e5)")
    ap.add_argument("--error-reps", type=int, default=10_000, help="phases per error-rate interval figure")
    ap.add_argument("--only", choices=("all", "monitors", "power", "errors", "coverage"), default="all",
                    help="run only the monitors', the power, the error-interval or the p99-coverage section")
    args = ap.parse_args()
    R, P = args.reps, args.power_reps
    C.begin("dependence_calibration", root=False, paths=("analysis", "tests/unit/analysis"))
    print(f"n = 20000 per phase, {R} seeded repetitions per figure (A/A: {R // 2}); "
          f"'old' = the same data without time order (independence assumed)")
    if args.only == "all":
        print(f"{'generator':<12} {'p99 95% CI coverage':<32} | A/A false positives at alpha 5 %, new / old")
        print(f"{'':<12} {'new (inconclusive)   old':<32} | {'verdict p99 change':<20} {'quantile_shift_test':<20} "
              f"{'tail_rank_test':<20} {'Mann-Whitney p':<20} HL 98 % CI excludes 0")
        for name in GENERATORS:
            took = C.Stopwatch()
            cov, inc, old = coverage(name, R, seed=101)
            aa_new = aa_latency(name, R // 2, seed=102)
            aa_old = aa_latency(name, R // 2, seed=102, ordered=False)
            qs, tr, mw, ci = aa_tail_tests(name, R // 2, seed=104, mann_whitney=True, groups=65_536)
            qs_old, tr_old, mw_old, ci_old = aa_tail_tests(name, R // 2, seed=104, ordered=False, mann_whitney=True,
                                                           groups=65_536)
            print(f"{name:<12} {cov:.3f} ({inc:.3f})        {old:.3f}    | {aa_new:.3f} / {aa_old:.3f}        "
                  f"{qs:.3f} / {qs_old:.3f}        {tr:.3f} / {tr_old:.3f}        {mw:.3f} / {mw_old:.3f}        "
                  f"{ci:.3f} / {ci_old:.3f}   [{took.s:.0f} s]",
                  flush=True)
        for name, gen in (("bursty errors", bursty_errors), ("independent errors", independent_errors)):
            f_new, c_new = aa_errors(gen, R, seed=103)
            f_old, c_old = aa_errors(gen, R, seed=103, flags=False)
            print(f"{name:<18} A/A 'higher than baseline' new {f_new:.3f} old {f_old:.3f} | "
                  f"error-rate 95 % CI coverage new {c_new:.3f} old {c_old:.3f}", flush=True)
    if args.only == "coverage":   # the p99 interval's coverage alone, cheap enough for many repetitions
        for name in GENERATORS:
            took = C.Stopwatch()
            cov, inc, old = coverage(name, R, seed=101)
            se = (cov * (1 - cov) / (R * (1 - inc))) ** 0.5
            print(f"p99 95 % CI coverage {name:<12} {cov:.3f} (SE {se:.4f}, inconclusive {inc:.3f}), old {old:.3f}  "
                  f"[{R} reps, {took.s:.0f} s]", flush=True)
    if args.only in ("all", "errors"):
        E = args.error_reps
        print(f"error-rate 95 % interval, one 20,000-request phase at 1 %, {E} seeded phases: coverage "
              f"(upper end below the rate / lower end above it), median width", flush=True)
        for name, gen in (("bursty errors", bursty_errors), ("independent errors", independent_errors)):
            took = C.Stopwatch()
            r = error_intervals(gen, E, seed=107)
            print(f"  {name:<18} " + "; ".join(f"{k} {c:.3f} ({lo:.3f} / {hi:.3f}), {w * 100:.3f} %"
                                               for k, (c, lo, hi, w) in r.items()) +
                  f"  [{took.s:.0f} s]", flush=True)
        for rate, run in ((0.01, 50.0), (0.005, 20.0), (0.02, 10.0), (0.01, 5.0)):   # other burst shapes
            r = error_intervals(lambda g, n, rate=rate, run=run: bursty_errors(g, n, rate, run), E // 2, seed=109,
                                rate=rate)
            print(f"  bursts {rate:.1%}, runs of ~{run:g} ({20_000 * rate / run:.0f} per phase): " + "; ".join(
                f"{k} {c:.3f} ({lo:.3f} / {hi:.3f}), {w * 100:.3f} %" for k, (c, lo, hi, w) in r.items()
                if k != "binomial") + f" [{E // 2} phases]", flush=True)
        f = bursty_errors(np.random.default_rng(1), 10_000_000)
        ts = [C.timed(lambda: episode_rate_ci(f)) for _ in range(5)]
        tb = [C.timed(lambda: indicator_dependence(f, "errors")) for _ in range(5)]
        print(f"  episode_rate_ci on 1e7 requests of bursty errors: {C.median(ts) * 1e3:.1f} ms (median of 5; the "
              f"batch-means indicator_dependence beside it {C.median(tb) * 1e3:.0f} ms)", flush=True)
    if args.only in ("all", "monitors"):
        print("halt-guard monitors, false alarms under continuous peeking at alpha 5 %, new / old:", flush=True)
        for name in GENERATORS:
            new, old = monitor_false_alarms(name, R, seed=105), monitor_false_alarms(name, R, seed=105, dependence=False)
            print(f"  latency monitor  {name:<12} {new:.3f} / {old:.3f}", flush=True)
        for name, gen in (("bursty errors", bursty_errors), ("independent errors", independent_errors)):
            new = error_monitor_false_alarms(gen, R, seed=106)
            old = error_monitor_false_alarms(gen, R, seed=106, dependence=False)
            print(f"  error monitor    {name:<18} {new:.3f} / {old:.3f}", flush=True)
    if args.only == "power":   # the verdict's p99 change test alone (its rule changed): A/A and power
        for name in GENERATORS:
            print(f"A/A verdict p99 change {name:<12} {aa_latency(name, R // 2, seed=102):.3f} / "
                  f"{aa_latency(name, R // 2, seed=102, ordered=False):.3f}", flush=True)
    if args.only in ("all", "power"):
        for name in ("independent", "ar1"):
            took = C.Stopwatch()
            p = power(name, P, 100_000)
            print(f"power, p99 x1.05, n=1e5 per phase, {name:<11} ({P} reps), new / old: verdict p99 change "
                  f"{p['verdict']:.3f} / {p['verdict_old']:.3f}, quantile_shift_test {p['shift']:.3f} / "
                  f"{p['shift_old']:.3f}, tail_rank_test {p['tail']:.3f} / {p['tail_old']:.3f}; one compare_latency "
                  f"{p['mw']:.2f} s / {p['mw_old']:.2f} s (median of 10)  "
                  f"[{took.s:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
