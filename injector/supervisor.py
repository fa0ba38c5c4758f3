"""``--detach``: apply a fault, return once it is active, leave a small supervisor that renews the lease.

The foreground process has already parsed, resolved and planned (bad input and a missing capability are
reported there with the CLI's exit codes). It then double-forks: the grandchild, in a new session, with no
controlling terminal and stdout/stderr in a log file, runs the plan as a FaultSession in its main thread (the same
mechanism as a foreground run: ledger, lease, signals -> rollback). It tells the foreground through a pipe when
the fault is active, or what went wrong before that; the foreground prints the run id and exits.

The supervisor ends at the plan's duration, on ``chaos-inject stop RUN_ID|--all`` (a stop-request file it reads
each tick, <= 1 s), or on SIGTERM/SIGINT/SIGHUP (rolled back). ``kill -9`` of the supervisor ends the fault by
lease expiry and ``chaos-inject sweep`` removes its objects. The command line's side (printing the run id,
``chaos-inject stop``) is in cli/inject.py and cli/stop.py.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import time
from dataclasses import dataclass

from .errors import ChaosInjectError, InvalidSpec, NotPermitted, Unsupported
from .kernel.ledger import Ledger, history_dir
from .plan import Plan

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNSUPPORTED = 0, 1, 2, 3


@dataclass
class Detached:
    run_id: str
    pid: int            # the supervisor
    log_path: str


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, InvalidSpec):
        return EXIT_USAGE
    if isinstance(exc, (Unsupported, NotPermitted)):
        return EXIT_UNSUPPORTED
    return EXIT_ERROR


class DetachFailed(ChaosInjectError):
    """The supervisor could not make the fault active; ``exit_code`` is what the CLI returns."""

    def __init__(self, message: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)


def log_path_for(run_id: str) -> str:
    return str(history_dir() / f"{run_id}.log")


def detach(plan: Plan, engine_name: str, *, timeout_s: float = 120.0,
           heartbeat: tuple[str, int] | None = None) -> Detached:
    """Start the supervisor; return once the fault is active. Raises DetachFailed with the supervisor's error."""
    log_path = log_path_for(plan.run_id)
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # first child: new session, fork again so the supervisor is no session leader (no tty)
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _supervise(plan, engine_name, write_end, log_path, heartbeat)
        finally:
            os._exit(EXIT_ERROR)  # never back into the caller's stack (or a test runner's)
    os.close(write_end)
    os.waitpid(child, 0)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                raise DetachFailed(f"the fault was not active after {timeout_s:.0f}s; the supervisor goes on "
                                   f"(see {log_path}, `chaos-inject status`, `chaos-inject stop {plan.run_id}`)",
                                   EXIT_ERROR)
            chunk = os.read(read_end, 65536)
            if not chunk:  # the supervisor reported and closed its end, or died
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    text = b"".join(chunks).decode(errors="replace").strip()
    if not text:
        raise DetachFailed(f"the supervisor died before the fault was active; see {log_path}", EXIT_ERROR)
    report = json.loads(text.splitlines()[0])
    if not report.get("ok"):
        raise DetachFailed(report.get("message", "unknown error"), int(report.get("exit", EXIT_ERROR)))
    return Detached(plan.run_id, int(report["pid"]), log_path)


def _supervise(plan: Plan, engine_name: str, report_fd: int, log_path: str,
               heartbeat: tuple[str, int] | None = None) -> None:
    os.chdir("/")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)  # the caller's pipes are released: `chaos-inject ... --detach | cat` ends
    os.close(null)
    os.close(log_fd)
    # Python-level streams too (a caller may have replaced sys.stderr, e.g. a test runner's capture)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    log = logging.getLogger("chaos-inject.supervisor")
    reported = False

    def report(payload: dict) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        try:
            os.write(report_fd, (json.dumps(payload) + "\n").encode())
        except OSError:
            pass  # the foreground is gone: the run goes on, bounded by its duration
        os.close(report_fd)

    from .engines.select import make_engine
    from .session import FaultSession

    code = EXIT_OK
    try:
        session = FaultSession(plan, make_engine(engine_name), kind="detached",
                               extra_status={"log": log_path},
                               on_active=lambda s: report({"ok": True, "pid": os.getpid()}),
                               heartbeat=heartbeat)
        log.info("run %s: supervisor pid %d, engine %s", plan.run_id, os.getpid(), engine_name)
        result = session.run(handle_signals=True)
        log.info("run %s ended: %s after %.1fs; counters %s", plan.run_id, result.state, result.elapsed_ns / 1e9,
                 result.counters)
    except BaseException as exc:  # noqa: BLE001 - the supervisor reports and exits, whatever happened
        log.exception("run %s failed", plan.run_id)
        code = exit_code_for(exc)
        report({"ok": False, "exit": code, "message": str(exc) or type(exc).__name__})
    report({"ok": False, "exit": EXIT_ERROR, "message": "the run ended before it was active"})
    logging.shutdown()
    os._exit(code)


# -- stop ------------------------------------------------------------------------------------------------------
@dataclass
class StopOutcome:
    run_id: str
    outcome: str        # stopped | already-gone | dead | timeout
    state: str | None = None


FINAL_RECORD_GRACE_S = 2.0   # ledger gone, final record not yet written: the owner's last moment


def stop_runs(run_ids: list[str] | None, *, timeout_s: float = 15.0, state: str = "stopped") -> list[StopOutcome]:
    """Ask the owners of ``run_ids`` (None: every live run) to end them, and wait until their ledgers are gone.

    Works for every kind of run (CLI, detached, library): the owner reads the request at its next tick."""
    from .kernel.ledger import final_record

    ledgers = {ledger.run_id: ledger for ledger in Ledger.all()}
    outcomes: list[StopOutcome] = []
    if run_ids is None:
        targets = [ledger for ledger in ledgers.values() if ledger.owner_alive]
    else:
        finished = {r: final_record(r) for r in run_ids if r not in ledgers}
        # an owner deletes its ledger just before it writes its final record: a run in that moment is neither
        # live nor finished, so give it a moment before calling it unknown
        grace_end = time.monotonic() + FINAL_RECORD_GRACE_S
        while any(final is None for final in finished.values()) and time.monotonic() < grace_end:
            time.sleep(0.05)
            finished = {r: final or final_record(r) for r, final in finished.items()}
        missing = [r for r, final in finished.items() if final is None]
        if missing:
            raise InvalidSpec("no such run (see `chaos-inject status`)", text=", ".join(missing), field="run id")
        outcomes += [StopOutcome(r, "already-gone", finished[r].get("state")) for r in run_ids if r not in ledgers]
        targets = [ledgers[r] for r in run_ids if r in ledgers]
    waiting = []
    for ledger in targets:
        if not ledger.owner_alive:
            outcomes.append(StopOutcome(ledger.run_id, "dead"))
            continue
        ledger.request_stop(state)
        waiting.append(ledger)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)
        for ledger in list(waiting):
            if not ledger.path.exists():
                waiting.remove(ledger)
                outcomes.append(StopOutcome(ledger.run_id, "stopped", _final_state(ledger.run_id)))
            elif not ledger.owner_alive:
                waiting.remove(ledger)
                outcomes.append(StopOutcome(ledger.run_id, "dead"))
    outcomes += [StopOutcome(ledger.run_id, "timeout") for ledger in waiting]
    return outcomes


def _final_state(run_id: str, wait_s: float = 2.0) -> str | None:
    """The owner records the final state just after it removed the ledger: give it a moment."""
    from .kernel.ledger import final_record

    end = time.monotonic() + wait_s
    while True:
        final = final_record(run_id)
        if final or time.monotonic() >= end:
            return (final or {}).get("state")
        time.sleep(0.02)
