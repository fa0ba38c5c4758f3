"""The steps of an experiment run, each a method of :class:`ExperimentRun`: one activity (pauses, dry modes,
tolerance), the steady-state hypothesis (before, after, or continuously during the method), the method in a
worker thread, the halt (called from the guard's thread: faults stopped at once), the rollbacks; and the run's
state and status file (what ``chaos-inject status`` reads). The order of the steps and the outcome are
:mod:`.runner`'s."""

from __future__ import annotations

import logging
import os
import secrets as _secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import crashpoints
from ..livestatus import experiments_dir
from .actions import session_mark, started_sessions, stop_all_faults
from .journal import new_journal, now_iso, write_json
from .loader import substitute
from .model import Activity, Experiment, GuardSpec, thaw
from .providers import ActivityFailed, RunContext, run_provider, within_tolerance

__all__ = ["RunOptions", "ExperimentRun", "guarded"]

log = logging.getLogger("chaos_inject.experiment")


@dataclass
class RunOptions:
    """How to run an experiment (the CLI's and ``chaos run``'s options); :func:`.runner.run_experiment` takes it."""

    run_dir: Path | None = None                # run directory (journal, report, samples); None: no files
    journal_path: Path | None = None           # an extra copy of journal.json (chaos run's --journal-path)
    rollback_strategy: str | None = None       # default | always | never | deviated (else runtime.rollbacks)
    hypothesis_strategy: str | None = None     # default | before-method-only | ... | continuously
    hypothesis_frequency_s: float = 1.0
    fail_fast: bool = False
    dry: str | None = None                     # chaoslib dry mode: probes | actions | activities | pause
    variables: dict[str, Any] = field(default_factory=dict)
    guard: GuardSpec | None = None             # overrides the experiment's extension block
    sample_sources: list[Any] = field(default_factory=list)   # live read_new() feeds for the guard
    recorders: list[Any] = field(default_factory=list)        # chaosinject.record.Recorder objects
    handle_signals: bool = True
    progress: Callable[[str], None] | None = None
    env: dict[str, str] | None = None
    literal_tc: bool = False                   # run `tc ... netem` process actions as written (no translation)
    tc_netns: str | None = None                # namespace of the interfaces tc names (else configuration's)


class ExperimentRun:
    """One run of an experiment: its state, its journal, and the steps Chaos Toolkit's order puts together."""

    def __init__(self, exp: Experiment, opts: RunOptions):
        self.exp = exp
        self.opts = opts
        self.run_id = f"exp-{time.strftime('%Y%m%d-%H%M%S')}-{_secrets.token_hex(3)}"
        self.t0 = time.monotonic()
        self.sessions_from = session_mark()     # faults of earlier runs in this process are not this run's
        self.state = "pending"
        self.step = "start"                    # before-hypothesis | method | after-hypothesis | rollbacks | end
        self.reason = ""
        self.halt = threading.Event()          # guard breach / fail-fast: stop the method
        self.cancel = threading.Event()        # anything that must end pauses and waits now
        self.halt_reason: str | None = None
        self.halt_done = threading.Event()   # the guard's thread has stopped our faults
        self.halt_faults_stopped_ns: int | None = None
        self.method_started = False
        self.method_error: BaseException | None = None     # the method's thread raised (reported by the main one)
        self.halt_status = "interrupted"       # journal status of a halt (fail-fast: "failed")
        self.rollbacks_done_ns: int | None = None
        self.fault_onset: dict | None = None
        self.guard_spec = opts.guard or exp.guard
        self.status_path = experiments_dir() / f"{self.run_id}.json"
        self.phases = None
        self.journal: dict[str, Any] = new_journal(exp)

    def sessions(self) -> list[Any]:
        """The faults this run started: the one answer to "which faults are this run's" (not time windows)."""
        return started_sessions(self.sessions_from)

    # -- presentation ------------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.2f}s] {msg}"
        if self.opts.progress:
            self.opts.progress(line)

    def set_state(self, state: str, reason: str = "") -> None:
        self.state = state
        if reason:
            self.reason = reason
        self.say(f"state {state}" + (f": {reason}" if reason else ""))
        self.write_status()

    def status(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": "experiment", "pid": os.getpid(), "title": self.exp.title,
                "state": self.state, "step": self.step, "reason": self.reason, "updated": time.time(),
                "elapsed_s": time.monotonic() - self.t0,
                "run_dir": str(self.opts.run_dir) if self.opts.run_dir else None,
                "halt": self.halt_reason}

    def write_status(self) -> None:
        st = self.status()
        try:
            # rewritten at each state: one crash point; a dead runner's file is swept (kernel.ledger.stray_files)
            with crashpoints.step("write experiment status", once=True):
                write_json(self.status_path, st)
            if self.opts.run_dir:
                write_json(Path(self.opts.run_dir) / "status.json", st)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)

    # -- activities --------------------------------------------------------------------------------------
    def _pause(self, seconds: Any, ctx: RunContext) -> None:
        if seconds is None:
            return
        s = substitute(seconds, ctx.configuration, ctx.secrets)
        try:
            s = float(s)
        except (TypeError, ValueError):
            raise ActivityFailed(f"pause {seconds!r} is not a number of seconds") from None
        if s > 0:
            self.cancel.wait(s)

    def execute(self, act: Activity, ctx: RunContext, runs: list | None, *, check_tolerance: bool = False
                ) -> dict[str, Any]:
        dry = act.dry or self.opts.dry or self.exp.dry
        is_dry = (dry == "activities") or (dry == "actions" and act.type == "action") or \
                 (dry == "probes" and act.type == "probe")
        if not is_dry and dry != "pause":
            self._pause(act.pauses.before, ctx)
        run: dict[str, Any] = {"activity": thaw(act.raw), "output": None, "start": now_iso()}
        if runs is not None:
            runs.append(run)
        self.say(f"{act.type} {act.name} ({act.path})" + (" [dry]" if is_dry else "")
                 + (" [background]" if act.background else ""))
        t = time.monotonic()
        try:
            if self.cancel.is_set() and act.type == "action" and not check_tolerance and runs is not \
                    self.journal["rollbacks"]:
                raise ActivityFailed("not started: the run is being halted or stopped")
            run["output"] = None if is_dry else run_provider(act, ctx)
            run["status"] = "succeeded"
        except ActivityFailed as exc:
            run["status"] = "failed"
            run["exception"] = traceback.format_exception_only(type(exc), exc)
            self.say(f"  -> failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - a provider bug fails the activity, never the run silently
            run["status"] = "failed"
            run["exception"] = traceback.format_exception(type(exc), exc, exc.__traceback__)
            self.say(f"  -> failed: {type(exc).__name__}: {exc}")
        finally:
            run["end"] = now_iso()
            run["duration"] = time.monotonic() - t
        if check_tolerance:
            if run["status"] != "succeeded":
                run["tolerance_met"] = False
            elif dry in ("probes", "activities"):
                run["tolerance_met"] = True
            else:
                ok, why = within_tolerance(act, run["output"], ctx)
                run["tolerance_met"] = bool(ok)
                run["tolerance_detail"] = why
                self.say(f"  -> tolerance {'met' if ok else 'NOT met'}: {why}")
        if not is_dry and dry != "pause":
            self._pause(act.pauses.after, ctx)
        return run

    def enter(self, step: str) -> None:
        self.step = step
        self.write_status()

    def hypothesis(self, ctx: RunContext, phase: str) -> dict[str, Any] | None:
        hyp = self.exp.hypothesis
        if hyp is None or not hyp.probes:
            return None
        ctx.phase = phase
        if phase != "during":
            self.enter(f"{phase}-hypothesis")
        self.say(f"steady-state hypothesis ({phase}): {hyp.title}")
        state: dict[str, Any] = {"steady_state_met": None, "probes": []}
        for probe in hyp.probes:
            run = self.execute(probe, ctx, state["probes"], check_tolerance=True)
            if not run["tolerance_met"]:
                state["steady_state_met"] = False
                return state
        state["steady_state_met"] = True
        return state

    def method(self, ctx: RunContext) -> None:
        """The method in a worker thread: the main thread stays free for signals and halts."""
        ctx.phase = "during"
        threads: list[threading.Thread] = []
        runs = self.journal["run"]
        for act in self.exp.method:
            if self.cancel.is_set():
                break
            if act.background:
                th = threading.Thread(target=self.execute, args=(act, ctx, runs), daemon=True,
                                      kwargs={"check_tolerance": _judged(act)}, name=f"bg-{act.name}")
                th.start()
                threads.append(th)
            else:
                self.execute(act, ctx, runs, check_tolerance=_judged(act))
        for th in threads:    # chaoslib: the after-hypothesis waits for background activities
            while th.is_alive() and not self.cancel.is_set():
                th.join(0.1)

    def continuous(self, ctx_factory: Callable[[], RunContext], done: threading.Event) -> None:
        iteration, failed = 0, 0
        while not done.is_set() and not self.cancel.is_set():
            iteration += 1
            state = self.hypothesis(ctx_factory(), "during")
            if state is not None:
                self.journal["steady_states"]["during"].append(state)
                if not state["steady_state_met"]:
                    failed += 1
                    if self.opts.fail_fast:
                        self.on_breach(f"steady-state hypothesis not met during the method (fail-fast, "
                                       f"iteration {iteration})", journal_status="failed")
                        return
            done.wait(self.opts.hypothesis_frequency_s)

    def on_breach(self, reason: str, journal_status: str = "interrupted") -> None:
        """Called from the guard's thread: stop our faults now, then let the main thread roll back."""
        if self.halt.is_set():
            return
        self.halt_reason = reason
        self.halt_status = journal_status
        self.halt.set()
        self.cancel.set()
        self.say(f"HALT: {reason}")
        try:
            stop_all_faults("halted")
        finally:
            self.halt_faults_stopped_ns = time.monotonic_ns()
            self.halt_done.set()

    def rollbacks(self, ctx: RunContext) -> None:
        self.say("rollbacks")
        self.enter("rollbacks")
        ctx.phase = "rollback"
        for act in self.exp.rollbacks:
            if act.background:
                th = threading.Thread(target=self.execute, args=(act, ctx, self.journal["rollbacks"]), daemon=True)
                th.start()
                th.join()
            else:
                self.execute(act, ctx, self.journal["rollbacks"])
        # whatever the rollbacks did, no fault this process started outlives the run
        stop_all_faults("stopped")


def _judged(act: Activity) -> bool:
    return act.type == "probe" and act.tolerance is not None


def guarded(r: ExperimentRun, fn: Callable, ctx: RunContext) -> None:
    try:
        fn(ctx)
    except BaseException as exc:  # noqa: BLE001 - the main thread reports it
        r.method_error = exc
