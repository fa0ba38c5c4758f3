"""cpu_stress on this host: the load a worker really puts on a CPU, read from /proc/PID/stat CPU times, beside
what the host had to give: on 2 shared cores at load 4 a 50 % worker was measured at 42.7 %, the host's
shortfall (no CPU was idle; the worker waited for one, /proc/PID/schedstat), not the stress's."""

import pytest

from chaosinject.hostfaults import CpuStress, measure_cpu_share

ASKED, TOLERANCE = 0.5, 0.05      # +-10 % of the request


def test_one_worker_at_50_percent_is_within_10_percent_of_the_request():
    """Judged on any machine, busy or not: above, never more than asked (+10 %); below, by at most 10 % plus the
    share of the window the kernel kept the worker runnable but waiting for a CPU (/proc/PID/schedstat), the
    host's shortfall, measured, not the stress's (an idle host waits ~0: the +-10 % band itself)."""
    with CpuStress(workers=1, load_percent=ASKED * 100, duration_s=5) as stress:
        (share,) = measure_cpu_share(stress.pids, 2.5)
    assert not stress.running
    if share.waited is None:
        pytest.skip("this kernel keeps no /proc/PID/schedstat (CONFIG_SCHED_INFO): the wait cannot be measured")
    assert share.load <= ASKED + TOLERANCE, f"measured {share.load:.3f} of one CPU, asked {ASKED} (+10 %)"
    assert share.load >= ASKED - TOLERANCE - share.waited, \
        (f"measured {share.load:.3f} of one CPU, asked {ASKED}: below -10 % by more than the "
         f"{share.waited:.1%} of the window it waited for a CPU")


def test_stress_ends_at_its_duration():
    with CpuStress(workers=1, load_percent=30, duration_s=1.0) as stress:
        result = stress.wait(timeout=5)
    assert result.elapsed_s == pytest.approx(1.0, abs=0.3)
    assert result.waited_percent is not None and result.waited_percent >= 0
    # +-10 points; below only by the time the busy host measurably kept the worker waiting
    assert 20 - result.waited_percent <= result.achieved_percent <= 40, result
