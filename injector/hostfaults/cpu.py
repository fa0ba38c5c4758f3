"""cpu_stress: N worker processes, each at L % of one CPU (busy/sleep duty cycle in short periods), for a duration.

Workers are separate processes (the GIL would serialize threads) and end by themselves at the deadline or when
this process dies. ``measure_cpu_load`` reads utime+stime from /proc/PID/stat: what the load really was;
``measure_cpu_share`` adds the time a worker was runnable but waited for a CPU (/proc/PID/schedstat): on a busy
host a worker can get less than it asks, and that wait says the shortfall was the host's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import crashpoints
from ..errors import ChaosInjectError, InvalidSpec

WORKER = Path(__file__).with_name("_cpu_worker.py")
DEFAULT_PERIOD_NS = 50_000_000      # 50 ms: short enough to look steady, long enough for little overhead
MAX_WORKERS = 256
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_wait_seconds(pid: int) -> float | None:
    """Time the process was runnable but waiting for a CPU (run-queue delay, /proc/PID/schedstat field 2);
    None where the kernel keeps no scheduler statistics (CONFIG_SCHED_INFO off)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except FileNotFoundError:
        if Path(f"/proc/{pid}").exists():
            return None
        raise


@dataclass
class CpuShare:
    load: float                 # CPU used, fraction of one CPU
    waited: float | None        # runnable but waiting for a CPU, fraction of the window (None: not kept)


def measure_cpu_share(pids: list[int], seconds: float) -> list[CpuShare]:
    """Each process's CPU use over the next ``seconds`` and the share of them it waited for a CPU: a worker
    that got less than it asked while it waited was refused the CPU by the host, not by its duty cycle."""
    before = [(cpu_seconds(p), cpu_wait_seconds(p)) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    after = [(cpu_seconds(p), cpu_wait_seconds(p)) for p in pids]
    elapsed = time.monotonic() - t0
    return [CpuShare((c1 - c0) / elapsed, None if w0 is None or w1 is None else (w1 - w0) / elapsed)
            for (c0, w0), (c1, w1) in zip(before, after)]


def measure_cpu_load(pids: list[int], seconds: float) -> list[float]:
    """Each process's CPU use over the next ``seconds``, as a fraction of one CPU."""
    before = [cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    after = [cpu_seconds(p) for p in pids]
    elapsed = time.monotonic() - t0
    return [(a - b) / elapsed for a, b in zip(after, before)]


@dataclass
class StressResult:
    workers: int
    load_percent: float
    duration_s: float
    elapsed_s: float = 0.0
    cpu_s: float = 0.0              # CPU time the workers used in total
    waited_s: float | None = None   # time they were runnable but waited for a CPU (the host's other load)

    @property
    def achieved_percent(self) -> float:
        """Mean load per worker over the run, percent of one CPU."""
        return 100 * self.cpu_s / (self.workers * self.elapsed_s) if self.elapsed_s else 0.0

    @property
    def waited_percent(self) -> float | None:
        """Mean time per worker spent waiting for a CPU, percent of the run: a load short of the request by
        about this much was the host's doing."""
        if self.waited_s is None or not self.elapsed_s:
            return None
        return 100 * self.waited_s / (self.workers * self.elapsed_s)


class CpuStress:
    """``workers`` processes at ``load_percent`` each for ``duration_s`` seconds (mandatory)."""

    def __init__(self, workers: int = 1, load_percent: float = 100.0, duration_s: float | None = None, *,
                 period_ns: int = DEFAULT_PERIOD_NS):
        if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
            raise InvalidSpec(f"workers must be an integer 1-{MAX_WORKERS}", text=repr(workers), field="workers")
        if not isinstance(load_percent, (int, float)) or not 0 < load_percent <= 100:
            raise InvalidSpec("load must be a percentage of one CPU in (0, 100]", text=repr(load_percent),
                              field="load")
        if duration_s is None:
            raise InvalidSpec("a CPU stress needs a duration: it must never outlive its run", field="duration")
        if not isinstance(duration_s, (int, float)) or not 0 < duration_s <= 24 * 3600:
            raise InvalidSpec("duration must be in (0 s, 24 h]", text=repr(duration_s), field="duration")
        if not 1_000_000 <= period_ns <= 1_000_000_000:
            raise InvalidSpec("period must be 1 ms - 1 s", text=str(period_ns), field="period_ns")
        self.result = StressResult(workers, float(load_percent), float(duration_s))
        self.period_ns = period_ns
        self._procs: list[subprocess.Popen] = []
        self._cpu_at_exit: dict[int, float] = {}
        self._wait_at_exit: dict[int, float | None] = {}
        self._started = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self._procs)

    def start(self) -> "CpuStress":
        if self._procs:
            raise ChaosInjectError("this stress was already started")
        deadline = time.monotonic_ns() + int(self.result.duration_s * 1e9)
        args = [str(self.result.load_percent / 100), str(self.period_ns), str(deadline), str(os.getpid())]
        self._started = time.monotonic()
        try:
            for _ in range(self.result.workers):
                with crashpoints.step("start cpu worker"):  # it ends by itself if we die (parent gone)
                    self._procs.append(subprocess.Popen([sys.executable, "-S", str(WORKER), *args],
                                                        stdin=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        return self

    def poll(self) -> bool:
        """Whether a worker still runs; samples their CPU time first (the last sample before a worker exits is
        what counts: call it often while waiting)."""
        self._sample()
        return self.running

    def _sample(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    self._cpu_at_exit[proc.pid] = cpu_seconds(proc.pid)
                    self._wait_at_exit[proc.pid] = cpu_wait_seconds(proc.pid)
                except (OSError, IndexError):
                    pass

    def wait(self, timeout: float | None = None) -> StressResult:
        """Until the workers reach their deadline."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if end is not None and time.monotonic() >= end:
                raise TimeoutError("stress workers still running")
            time.sleep(0.05)
        return self._finish()

    def stop(self) -> StressResult:
        """End every worker now (idempotent); they are our children, signalled by their own pid."""
        self._sample()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self._finish()

    def _finish(self) -> StressResult:
        if self._started and not self.result.elapsed_s:
            self.result.elapsed_s = min(time.monotonic() - self._started, self.result.duration_s)
            self.result.cpu_s = sum(self._cpu_at_exit.values())
            waits = list(self._wait_at_exit.values())
            self.result.waited_s = None if not waits or None in waits else sum(waits)
        return self.result

    def __enter__(self) -> "CpuStress":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
