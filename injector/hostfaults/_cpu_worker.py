"""One CPU stress worker, run as its own process: ``python _cpu_worker.py LOAD PERIOD_NS DEADLINE_NS PARENT``.

Duty cycle in short periods: burn CPU until this process has used LOAD x (time since start) of CPU time (CPU
time, not wall time: when another task preempts us the busy part stretches instead of counting as load, and
what was stolen is made up in later periods, at most one extra share per period), then sleep the rest. Ends at DEADLINE (CLOCK_MONOTONIC, shared by every process) or when its parent is gone, so a
stress never outlives the run that started it. Standard library only: no package import, fast start.
"""

import os
import sys
import time


def main(load: float, period_ns: int, deadline_ns: int, parent: int) -> None:
    busy_ns = int(load * period_ns)
    t0, cpu0 = time.monotonic_ns(), time.process_time_ns()
    while True:
        start = time.monotonic_ns()
        if start >= deadline_ns or os.getppid() != parent:
            return
        end = start + period_ns
        used = time.process_time_ns() - cpu0
        # CPU owed by the end of this period; time another task stole earlier is made up, at most one extra
        # period's share at a time (so a long stall does not turn into a long burst at 100 %)
        want = min(int(load * (end - t0)) - used, 2 * busy_ns)
        goal = used + want
        while time.process_time_ns() - cpu0 < goal and time.monotonic_ns() < end:
            pass
        rest = end - time.monotonic_ns()
        if rest > 0:
            time.sleep(rest / 1e9)


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
