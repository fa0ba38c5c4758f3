"""The kernel-measured hold per packet (netem, EDT): its statistics, where it is timed, and which kernels can."""

from __future__ import annotations

import numpy as np

from chaosinject.engines.common import hold_stats
from chaosinject.kernel.bpf import ClassifierConfig, hold_unsupported_reason, kernel_version
from chaosinject.summary import format_hold


def test_hold_stats_median_p99_and_the_order_statistic_interval():
    rng = np.random.default_rng(1)
    holds = rng.normal(200e6, 1e6, 1001).astype(np.int64)
    c = hold_stats(holds)
    ordered = np.sort(holds)
    assert c["delay_samples"] == 1001 and c["delay_p50_ns"] == int(ordered[500])
    assert c["delay_min_ns"] == ordered[0] and c["delay_max_ns"] == ordered[-1]
    assert c["delay_p50_ci_low_ns"] < c["delay_p50_ns"] < c["delay_p50_ci_high_ns"]
    assert 199.8e6 < c["delay_p50_ci_low_ns"] and c["delay_p50_ci_high_ns"] < 200.2e6   # ~1.25 sigma/sqrt(n) wide
    assert c["delay_p99_ns"] > c["delay_p50_ns"] + 2e6
    assert "delay_p50_ci_low_ns" not in hold_stats([5, 6, 7])     # too few for a 95 % interval of the median
    assert hold_stats([]) == {}


def test_the_summary_says_where_the_hold_was_timed():
    c = {**hold_stats([200_000_000 + i for i in range(100)]), "delay_kernel_measured": 1, "delay_samples_lost": 0}
    line = format_hold(c, 200_000_000)
    assert line.startswith("  delay     requested 200.000 ms: achieved median 200.000 ms, p99 200.000 ms, 95% CI")
    assert "measured in the kernel: from our classifier to the device's transmit" in line and "lost" not in line
    assert "3 samples lost" in format_hold({**c, "delay_samples_lost": 3}, 200_000_000)
    userspace = {k: v for k, v in c.items() if k != "delay_kernel_measured"}
    assert "held in userspace" in format_hold(userspace, 200_000_000)


def test_kernels_without_ring_buffers_say_so_and_the_flag_reaches_the_compiler():
    assert kernel_version("5.10.0-46-amd64") == (5, 10) and kernel_version("6.18.1") == (6, 18)
    assert hold_unsupported_reason("5.10.0-46-amd64") is None
    assert "no BPF ring buffer (Linux 5.8+)" in hold_unsupported_reason("5.4.0-200-generic")
    assert "-DCI_HOLD=1" in ClassifierConfig(hold=True).cflags()
    assert not any("CI_HOLD" in f for f in ClassifierConfig().cflags())


def test_median_ranks_match_the_exact_order_statistic_interval():
    """The scipy-free ranks (the lease-renewal path) against analysis' exact ones: equal up to 1000 samples, within
    one rank beyond; nothing below 6 samples."""
    from chaosinject.analysis.quantiles import order_statistic_ranks
    from chaosinject.engines.common import median_ranks_95

    for n in list(range(1, 1001)) + [1001, 1500, 4096, 10_007, 65_536, 200_000]:
        exact = order_statistic_ranks(n, 0.5, 0.95)
        ours = median_ranks_95(n)
        if exact is None:
            assert ours is None, n
            continue
        if n <= 1000:
            assert ours == exact[:2], n
        else:
            assert abs(ours[0] - exact[0]) <= 1 and abs(ours[1] - exact[1]) <= 1, (n, ours, exact)


def test_hold_stats_do_not_import_the_statistics_package():
    """Counters are read on every lease renewal: importing scipy there stalled renewals for tens of seconds under
    QEMU TCG (the Vagrant smoke's fault lapsed)."""
    import subprocess
    import sys

    code = ("import sys; from chaosinject.engines.common import hold_stats; hold_stats(list(range(5000))); "
            "print(sorted(m for m in ('scipy', 'chaosinject.analysis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
