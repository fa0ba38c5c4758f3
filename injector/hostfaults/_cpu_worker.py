"""One CPU stress worker, run as its own process: ``python _cpu_worker.py LOAD PERIOD_NS DEADLINE_NS PARENT``.

Duty cycle in short periods: burn CPU until this process has used LOAD x PERIOD of CPU time in the period (CPU
time, not wall time: when another task preempts us the busy part stretches instead of counting as load), then
sleep the rest. Ends at DEADLINE (CLOCK_MONOTONIC, shared by every process) or when its parent is gone, so a
stress never outlives the run that started it. Standard library only: no package import, fast start.
"""

import os
import sys
import time


def main(load: float, period_ns: int, deadline_ns: int, parent: int) -> None:
    busy_ns = int(load * period_ns)
    while True:
        start = time.monotonic_ns()
        if start >= deadline_ns or os.getppid() != parent:
            return
        cpu0 = time.process_time_ns()
        end = start + period_ns
        while time.process_time_ns() - cpu0 < busy_ns and time.monotonic_ns() < end:
            pass
        rest = end - time.monotonic_ns()
        if rest > 0:
            time.sleep(rest / 1e9)


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
