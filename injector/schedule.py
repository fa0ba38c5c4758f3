"""Recurring runs: ``@every 10m`` (Chaos Mesh / robfig cron), ``@hourly`` and friends, and 5-field cron.

Parsing is pure and lives in cron.py (``parse_schedule`` -> a frozen spec with ``next_after``; re-exported
here). ``run_schedule`` runs a job at each tick, one at a time: a tick that comes while the previous run is still
going is skipped (and counted), never overlapped. ``count`` bounds the number of runs; Ctrl-C / SIGTERM end the
loop (the running job is ended first). Times are the host's local time. `chaos-inject schedule` (its parser, the
job's checks, the job as a child process) is cli/schedule.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Callable

from .cron import (DAYS, FIELDS, MACROS, MIN_EVERY_NS, MONTHS, Cron, Every, Schedule,  # noqa: F401 (re-exported)
                   parse_schedule)
from .errors import InvalidSpec

log = logging.getLogger(__name__)


# -- running ---------------------------------------------------------------------------------------------------
@dataclass
class ScheduleReport:
    runs: int = 0
    failures: int = 0
    skipped_ticks: int = 0
    exit_codes: list[int] | None = None


def run_schedule(schedule: Schedule, job: Callable[[int], int], *, count: int | None = None,
                 immediately: bool = False, mono: Callable[[], int] = time.monotonic_ns,
                 wall: Callable[[], dt.datetime] = dt.datetime.now, sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[int, float], None] | None = None) -> ScheduleReport:
    """Run ``job(run_number)`` at each tick until ``count`` runs (forever when None). The job blocks; its exit
    code is recorded (non-zero counts as a failure). A KeyboardInterrupt from ``sleep``/``job`` propagates."""
    if count is not None and count < 1:
        raise InvalidSpec("count must be at least 1", text=str(count), field="count")
    report = ScheduleReport(exit_codes=[])
    anchor = mono()
    first = True
    while count is None or report.runs < count:
        if not (first and immediately):
            wait_s = _seconds_to_next(schedule, anchor, mono, wall)
            if on_wait:
                on_wait(report.runs + 1, wait_s)
            sleep(wait_s)
        first = False
        started = mono()
        code = job(report.runs + 1)
        report.runs += 1
        report.exit_codes.append(code)
        report.failures += code != 0
        if isinstance(schedule, Every):
            missed = (mono() - started) // schedule.interval_ns
            if missed:
                report.skipped_ticks += missed
                log.warning("run %d took longer than the interval: %d tick(s) skipped (runs never overlap)",
                            report.runs, missed)
    return report


def _seconds_to_next(schedule: Schedule, anchor: int, mono: Callable[[], int],
                     wall: Callable[[], dt.datetime]) -> float:
    if isinstance(schedule, Every):
        now = mono()
        return max(0.0, (schedule.next_after(now, anchor) - now) / 1e9)
    now_wall = wall()
    return max(0.0, (schedule.next_after(now_wall) - now_wall).total_seconds())
