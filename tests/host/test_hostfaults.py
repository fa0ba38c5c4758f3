"""cpu_stress on this host: the load a worker really puts on a CPU, read from /proc/PID/stat CPU times, beside
what the host had to give: on 2 shared cores at load 4 a 50 % worker was measured at 42.7 %, the host's
shortfall (no CPU was idle; the worker waited for one, /proc/PID/schedstat), not the stress's."""

import os
import time

import pytest

from injector.hostfaults import CpuStress, measure_cpu_share

ASKED, TOLERANCE = 0.5, 0.05      # +-10 % of the request
SPARE_NEEDED = 0.5                # CPUs idle besides the worker over the window for it to be judged
CLK_TCK = os.sysconf("SC_CLK_TCK")


def idle_cpus() -> float:
    """Idle + iowait time of all CPUs so far, seconds (/proc/stat)."""
    fields = open("/proc/stat").readline().split()
    return (int(fields[4]) + int(fields[5])) / CLK_TCK


def test_one_worker_at_50_percent_is_within_10_percent_of_the_request():
    # each attempt is a fresh worker measured from its start (a worker held off the CPU earlier catches up later,
    # which would count as load in a later window); it is judged only when the host left CPU idle beside it
    attempts = []
    for _ in range(4):
        with CpuStress(workers=1, load_percent=ASKED * 100, duration_s=5) as stress:
            idle0, t0 = idle_cpus(), time.monotonic()
            (share,) = measure_cpu_share(stress.pids, 2.5)
            spare = (idle_cpus() - idle0) / (time.monotonic() - t0)
        assert not stress.running
        attempts.append((share, spare))
        assert share.load <= ASKED + TOLERANCE, f"measured {share.load:.3f} of one CPU, asked {ASKED} (+10 %)"
        if spare >= SPARE_NEEDED:
            break
    else:
        pytest.skip("the host had no CPU to spare in any attempt (idle beside the worker: "
                    + ", ".join(f"{spare:.2f} CPU, worker got {s.load:.2f} and waited {s.waited or 0:.0%}"
                                for s, spare in attempts)
                    + f"; judged at >= {SPARE_NEEDED} CPU idle): it could not offer one worker half a CPU")
    assert abs(share.load - ASKED) <= TOLERANCE, \
        f"measured {share.load:.3f} of one CPU with {spare:.2f} CPU idle beside it, asked {ASKED} (+-10 %)"


def test_stress_ends_at_its_duration():
    with CpuStress(workers=1, load_percent=30, duration_s=1.0) as stress:
        result = stress.wait(timeout=5)
    assert result.elapsed_s == pytest.approx(1.0, abs=0.3)
    assert result.waited_percent is not None and result.waited_percent >= 0
    # +-10 points; below only by the time the busy host measurably kept the worker waiting
    assert 20 - result.waited_percent <= result.achieved_percent <= 40, result
