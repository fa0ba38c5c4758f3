"""Benchmark: a full steady-state verdict on 3 phases x 10 M latency samples (plus error counts) on one core,
beside scipy.stats.bootstrap for a p99 interval on a smaller n. Prints figures; not a timed test.

    .venv/bin/python bench/verdict_speed.py [--n 10000000] [--repeats 5] [--boot-n 10000]
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject import analysis  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_phase(rng: np.random.Generator, n: int, median_ms: float, err_rate: float) -> analysis.PhaseData:
    out = np.empty(n, dtype=np.int64)
    step = 1_000_000
    for i in range(0, n, step):  # chunked, so generation does not dominate peak memory
        m = min(step, n - i)
        out[i:i + m] = rng.lognormal(np.log(median_ms * 1e6), 0.5, size=m)
    return analysis.PhaseData(out, int(rng.binomial(n, err_rate)), n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000, help="latency samples per phase")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--boot-n", type=int, default=10_000, help="sample size for scipy.stats.bootstrap")
    ap.add_argument("--boot-resamples", type=int, default=9_999)
    ap.add_argument("--hl", action="store_true", help="also time Mann-Whitney + Hodges-Lehmann on n vs n")
    args = ap.parse_args()
    C.begin("verdict_speed", root=False, paths=("analysis",))

    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
    rng = np.random.default_rng(20261126)
    phases = {
        "baseline": make_phase(rng, args.n, 20.0, 0.0005),
        "fault": make_phase(rng, args.n, 32.0, 0.0030),
        "recovery": make_phase(rng, args.n, 20.5, 0.0006),
    }
    rss_data = peak_rss_mb()

    times = []
    verdict = None
    for _ in range(args.repeats):
        with C.Stopwatch() as sw:
            verdict = analysis.evaluate(phases)
        times.append(sw.s)
    rss_verdict = peak_rss_mb()
    total = 3 * args.n
    med = C.median(times)

    boot_x = phases["baseline"].latencies[: args.boot_n].astype(np.float64)
    with C.Stopwatch() as sw:
        boot = stats.bootstrap((boot_x,), lambda a, axis: np.quantile(a, 0.99, axis=axis), confidence_level=0.95,
                               n_resamples=args.boot_resamples, method="percentile", vectorized=True,
                               rng=np.random.default_rng(1))
    boot_t = sw.s
    with C.Stopwatch() as sw:
        os_ci = analysis.quantile_ci(boot_x, 0.99)
    os_t = sw.s

    hl_line = None
    if args.hl:
        with C.Stopwatch() as sw:
            cmp_ = analysis.compare_latency(phases["baseline"].latencies, phases["fault"].latencies)
        hl_line = (sw.s, cmp_)

    print(f"chaos-inject analysis benchmark — {platform.python_implementation()} {platform.python_version()}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}, pinned to 1 CPU, {platform.machine()}")
    print()
    print(f"{'what':<58} {'n':>12} {'wall s':>9} {'ns/sample':>10}")
    print("-" * 92)
    print(f"{'full verdict, 3 phases (median of %d)' % args.repeats:<58} {total:>12,} {med:>9.3f} "
          f"{med / total * 1e9:>10.1f}")
    print(f"{'  median (min-max) of the runs':<58} {'':>12} {C.fmt(times, ' s', digits=3)}")
    print(f"{'scipy.stats.bootstrap p99 CI (percentile, %d resamples)' % args.boot_resamples:<58} "
          f"{args.boot_n:>12,} {boot_t:>9.3f} {boot_t / args.boot_n * 1e9:>10.1f}")
    print(f"{'order-statistic p99 CI (analysis.quantile_ci), same data':<58} {args.boot_n:>12,} {os_t:>9.4f} "
          f"{os_t / args.boot_n * 1e9:>10.1f}")
    if hl_line:
        print(f"{'Mann-Whitney + Hodges-Lehmann + Moses CI, baseline vs fault':<58} {2 * args.n:>12,} "
              f"{hl_line[0]:>9.3f} {hl_line[0] / (2 * args.n) * 1e9:>10.1f}")
    print("-" * 92)
    ratio = (boot_t / args.boot_n) / (med / total)
    print(f"time per sample, bootstrap / verdict: {ratio:,.0f}x "
          f"(the verdict does 3 phases x 14 order statistics, 2 SLO and 2 relative checks each)")
    print(f"peak RSS: {rss_data:,.0f} MB after generating data ({total * 8 / 2**20:,.0f} MB of int64 samples), "
          f"{rss_verdict:,.0f} MB after the verdicts (ru_maxrss)")
    print(f"goal: <= 2 s and <= 2048 MB -> {'MET' if med <= 2 and rss_verdict <= 2048 else 'NOT MET'}")
    print()
    print(f"bootstrap p99 CI [{boot.confidence_interval.low / 1e6:.3f}, {boot.confidence_interval.high / 1e6:.3f}] ms;"
          f" order-statistic CI [{os_ci.interval.low / 1e6:.3f}, {os_ci.interval.high / 1e6:.3f}] ms "
          f"(exact coverage {os_ci.coverage:.4f})")
    if hl_line:
        c = hl_line[1]
        print(f"HL shift {c.shift / 1e6:.4f} ms +/- {c.shift_error / 1e6:.2g} ms (bracket), "
              f"98% CI [{c.interval.low / 1e6:.4f}, {c.interval.high / 1e6:.4f}] ms")
    print()
    print(verdict.summary())


if __name__ == "__main__":
    main()
