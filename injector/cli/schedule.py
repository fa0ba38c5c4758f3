"""`chaos-inject schedule SPEC [--count N] -- <inject args | run FILE>`: the job's arguments checked once (its dry
run), then each run as a child `python -m chaosinject.cli` at the ticks of ``schedule.run_schedule``."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from typing import Callable

from ..errors import InvalidSpec
from ..schedule import parse_schedule, run_schedule
from .inject import cmd_inject


def add_schedule_parser(sub) -> None:
    p = sub.add_parser("schedule", help="run a fault (or an experiment) at each tick of a schedule, never "
                                        "overlapping: schedule SPEC [--count N] -- <inject args | run FILE>",
                       description="SPEC: '@every 10m', '@hourly'/'@daily'/..., or 5 cron fields "
                                   "('*/15 * * * *'). After --: the arguments of one run, as for chaos-inject "
                                   "itself (e.g. --flow api->db --delay 200ms --duration 60s) or `run FILE`.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--count", type=int, metavar="N", help="stop after N runs (default: until Ctrl-C)")
    p.add_argument("--immediately", action="store_true", help="first run now, then on the schedule")


def cmd_schedule(args, *, build_parser: Callable) -> int:
    """``build_parser`` is main's (passed in: importing it here would make a circle main -> schedule -> main)."""
    schedule = parse_schedule(args.spec)
    job = list(getattr(args, "job", None) or [])
    if not job:
        raise InvalidSpec("give the run after --, e.g. schedule '@every 10m' -- --flow api->db --loss 5% "
                          "--duration 60s", field="schedule")
    if job[0] in ("inject", "run"):
        pass
    elif job[0] in ("schedule", "stop", "sweep", "status", "doctor", "demo", "lab"):
        raise InvalidSpec("a scheduled job is a fault (inject arguments) or `run EXPERIMENT`", text=job[0],
                          field="schedule")
    else:
        job.insert(0, "inject")
    if job[0] == "inject":
        if "--detach" in job:
            raise InvalidSpec("a scheduled run cannot --detach: runs must not overlap", field="schedule")
        try:  # bad job arguments are found now, not at the first tick
            job_args = build_parser().parse_args(job)
        except SystemExit as exc:
            raise InvalidSpec("the job's arguments are invalid (see the message above)", text=" ".join(job),
                              field="schedule") from exc
        job_args.dry_run = True  # the plan each run will make (flows, interfaces, fault), shown once; no change
        with contextlib.redirect_stdout(sys.stderr):
            cmd_inject(job_args)
    else:  # run EXPERIMENT: its own dry run validates the file (nothing runs)
        from .experiment import cmd_run

        try:
            job_args = build_parser().parse_args(job)
        except SystemExit as exc:
            raise InvalidSpec("the job's arguments are invalid (see the message above)", text=" ".join(job),
                              field="schedule") from exc
        job_args.dry_run = True
        with contextlib.redirect_stdout(sys.stderr):
            code = cmd_run(job_args)
        if code != 0:
            raise InvalidSpec("the experiment did not pass its dry run (see above)", text=" ".join(job),
                              field="schedule")

    current: dict[str, subprocess.Popen | None] = {"proc": None}
    got: dict[str, int] = {}

    def on_term(signum, frame):
        got["signum"] = signum
        raise KeyboardInterrupt  # same path as Ctrl-C: end the running job, then leave

    # SIGINT too: a shell starting us in the background hands down SIGINT ignored, and Python then keeps it
    # ignored; a Ctrl-C (or `kill -INT`) must still end the running job and the schedule
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}

    def run_job(n: int) -> int:
        print(f"schedule: run {n} starts: chaos-inject {' '.join(job)}", file=sys.stderr, flush=True)
        proc = subprocess.Popen([sys.executable, "-m", "chaosinject.cli", *job])
        current["proc"] = proc
        code = proc.wait()
        current["proc"] = None
        print(f"schedule: run {n} ended with exit code {code}", file=sys.stderr, flush=True)
        return code

    def on_wait(n: int, seconds: float) -> None:
        print(f"schedule: {schedule.describe()}: run {n} in {seconds:.1f}s", file=sys.stderr, flush=True)

    try:
        report = run_schedule(schedule, run_job, count=args.count, immediately=args.immediately, on_wait=on_wait)
    except KeyboardInterrupt:
        proc = current["proc"]
        if proc is not None and proc.poll() is None:
            # a Ctrl-C on the terminal reached the job too (same process group); SIGTERM covers the rest
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                proc.terminate()
            proc.wait()
        print("schedule: stopped; the running job (if any) was ended and rolled back", file=sys.stderr)
        return 128 + got.get("signum", signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"schedule: {report.runs} run(s), {report.failures} failed, {report.skipped_ticks} tick(s) skipped "
          "while a run was still going", file=sys.stderr)
    return 1 if report.failures else 0
