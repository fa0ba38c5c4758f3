"""Schedule parsing (pure) and the run loop with a fake clock: ticks, no overlap, count, bad input."""

import datetime as dt

import pytest

from chaosinject.errors import InvalidSpec
from chaosinject.schedule import Cron, Every, parse_schedule, run_schedule

S = 1_000_000_000
T0 = dt.datetime(2026, 11, 27, 1, 23, 45)  # a Friday


@pytest.mark.parametrize("text,ns", [("@every 10m", 600 * S), ("@every 1h30m", 5400 * S), ("@EVERY 30s", 30 * S),
                                     ("@every 1.5s", 1_500_000_000)])
def test_every(text, ns):
    schedule = parse_schedule(text)
    assert isinstance(schedule, Every) and schedule.interval_ns == ns


def test_every_ticks_on_its_grid():
    every = parse_schedule("@every 10s")
    assert every.next_after(0, 0) == 10 * S
    assert every.next_after(10 * S, 0) == 20 * S  # strictly after
    assert every.next_after(37 * S, 5 * S) == 45 * S


@pytest.mark.parametrize("text,expected", [
    ("@hourly", dt.datetime(2026, 11, 27, 2, 0)),
    ("@daily", dt.datetime(2026, 11, 28, 0, 0)),
    ("@midnight", dt.datetime(2026, 11, 28, 0, 0)),
    ("@weekly", dt.datetime(2026, 11, 29, 0, 0)),        # Sunday
    ("@monthly", dt.datetime(2026, 12, 1, 0, 0)),
    ("@yearly", dt.datetime(2027, 1, 1, 0, 0)),
    ("*/15 * * * *", dt.datetime(2026, 11, 27, 1, 30)),
    ("5 * * * *", dt.datetime(2026, 11, 27, 2, 5)),
    ("0 9-17/4 * * mon-fri", dt.datetime(2026, 11, 27, 9, 0)),
    ("0 9 * * sat,sun", dt.datetime(2026, 11, 28, 9, 0)),
    ("0 0 * * 7", dt.datetime(2026, 11, 29, 0, 0)),      # 7 is Sunday too
    ("30 2 1 jan *", dt.datetime(2027, 1, 1, 2, 30)),
    ("0 0 29 2 *", dt.datetime(2028, 2, 29, 0, 0)),      # the next leap day
    ("0 12 13 * 5", dt.datetime(2026, 11, 27, 12, 0)),   # day 13 OR Friday (Vixie cron)
    ("0 12 */2 * 1", dt.datetime(2026, 12, 7, 12, 0)),  # "*/2" does not restrict: odd day AND Monday
    ("10/20 * * * *", dt.datetime(2026, 11, 27, 1, 30)),  # 10, 30, 50
])
def test_cron_next(text, expected):
    schedule = parse_schedule(text)
    assert isinstance(schedule, Cron)
    assert schedule.next_after(T0) == expected
    assert schedule.matches(expected)


@pytest.mark.parametrize("text,match", [
    ("", "empty schedule"),
    ("@every", "needs an interval"),
    ("@every ten minutes", "such as 30s"),
    ("@every 10", "such as 30s"),
    ("@every 500ms", "at least 1s"),
    ("@fortnightly", "unknown macro"),
    ("* * * *", "5 fields"),
    ("* * * * * *", "5 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 24 * * *", "hour: 24 is out of range"),
    ("* * 0 * *", "day of month: 0 is out of range 1-31"),
    ("* * * 13 *", "month: 13"),
    ("* * * * 8", "day of week: 8"),
    ("* * * foo *", "month: 'foo' is not a number or a name"),
    ("*/0 * * * *", "step must be at least 1"),
    ("5-1 * * * *", "runs backwards"),
    ("1,,2 * * * *", "cannot read ''"),
    ("0 0 30 2 *", "never matches"),
])
def test_bad_schedules_name_the_problem(text, match):
    with pytest.raises(InvalidSpec, match=match) as err:
        parse_schedule(text)
    assert err.value.field == "schedule"


class Clock:
    def __init__(self):
        self.mono = 1000 * S
        self.wall = T0

    def sleep(self, seconds):
        self.mono += int(seconds * 1e9)
        self.wall += dt.timedelta(seconds=seconds)


def test_runs_at_each_tick_and_stops_at_count():
    clock, starts = Clock(), []

    def job(n):
        starts.append(clock.mono)
        clock.sleep(2)  # the run takes 2 s
        return 0

    report = run_schedule(parse_schedule("@every 10s"), job, count=3, mono=lambda: clock.mono,
                          wall=lambda: clock.wall, sleep=clock.sleep)
    assert report.runs == 3 and report.failures == 0 and report.skipped_ticks == 0
    assert [s - 1000 * S for s in starts] == [10 * S, 20 * S, 30 * S]


def test_a_long_run_skips_ticks_instead_of_overlapping():
    clock, spans = Clock(), []

    def job(n):
        start = clock.mono
        clock.sleep(25 if n == 1 else 1)
        spans.append((start, clock.mono))
        return 3 if n == 2 else 0

    report = run_schedule(parse_schedule("@every 10s"), job, count=2, immediately=True, mono=lambda: clock.mono,
                          wall=lambda: clock.wall, sleep=clock.sleep)
    (a0, a1), (b0, b1) = spans
    assert b0 >= a1, "runs never overlap"
    assert b0 - 1000 * S == 30 * S, "the next tick on the grid after the long run"
    assert report.skipped_ticks == 2 and report.failures == 1 and report.exit_codes == [0, 3]


def test_cron_schedule_waits_for_the_wall_clock_minute():
    clock, starts = Clock(), []
    report = run_schedule(parse_schedule("*/15 * * * *"), lambda n: starts.append(clock.wall) or 0, count=2,
                          mono=lambda: clock.mono, wall=lambda: clock.wall, sleep=clock.sleep)
    assert starts == [dt.datetime(2026, 11, 27, 1, 30), dt.datetime(2026, 11, 27, 1, 45)] and report.runs == 2


def test_count_must_be_positive():
    with pytest.raises(InvalidSpec, match="count"):
        run_schedule(parse_schedule("@hourly"), lambda n: 0, count=0)


def test_ctrl_c_between_ticks_ends_the_schedule_at_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen([sys.executable, "-m", "chaosinject.cli", "schedule", "@every 60s", "--", "--flow",
                             "127.0.0.1->127.0.0.2", "--interface", "lo", "--loss", "1%", "--duration", "1s"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        while "run 1 in" not in line:  # waiting for the first tick
            line = proc.stderr.readline()
            assert line, "the scheduler exited early"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
