"""cpu_stress on this host: the load a worker really puts on a CPU, read from /proc/PID/stat CPU times, beside
the time it waited for a CPU (/proc/PID/schedstat): on 2 shared cores at load 4 a 50 % worker was measured at
42.7 %, the host's shortfall (it waited), not the stress's."""

import pytest

from injector.hostfaults import CpuStress, measure_cpu_share

ASKED, TOLERANCE = 0.5, 0.05      # +-10 % of the request
JUDGED_WAIT = 0.05                # a window where the worker waited at most this share of the time for a CPU


def test_one_worker_at_50_percent_is_within_10_percent_of_the_request():
    # each attempt is a fresh worker measured from its start (a worker held off the CPU earlier catches up later,
    # which would count as load in a later window); an attempt where the host kept it waiting is not judged
    attempts = []
    for _ in range(4):
        with CpuStress(workers=1, load_percent=ASKED * 100, duration_s=5) as stress:
            (share,) = measure_cpu_share(stress.pids, 2.5)
        assert not stress.running
        if share.waited is None:
            pytest.skip("this kernel keeps no scheduler statistics (/proc/PID/schedstat): the host's share of a "
                        "shortfall cannot be told apart")
        attempts.append(share)
        if share.waited <= JUDGED_WAIT:
            break
    else:
        pytest.skip("the host kept the worker waiting for a CPU in every attempt (waited "
                    + ", ".join(f"{a.waited:.0%} got {a.load:.2f}" for a in attempts)
                    + f"; judged only at <= {JUDGED_WAIT:.0%}): it could not offer one worker half a CPU")
    # never more than asked; less only by what the host measurably withheld
    assert ASKED - TOLERANCE - share.waited <= share.load <= ASKED + TOLERANCE, \
        f"measured {share.load:.3f} of one CPU (waited {share.waited:.1%}), asked {ASKED} (+-10 %); {attempts}"


def test_stress_ends_at_its_duration():
    with CpuStress(workers=1, load_percent=30, duration_s=1.0) as stress:
        result = stress.wait(timeout=5)
    assert result.elapsed_s == pytest.approx(1.0, abs=0.3)
    assert result.waited_percent is not None and result.waited_percent >= 0
    # +-10 points; below only by the time the busy host measurably kept the worker waiting
    assert 20 - result.waited_percent <= result.achieved_percent <= 40, result
