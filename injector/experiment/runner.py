"""Running an experiment with Chaos Toolkit semantics, plus our safety rules.

Order (chaoslib's): steady-state hypothesis before -> method (continuous hypothesis alongside if asked)
-> hypothesis after -> rollbacks. Journal fields and statuses are chaoslib's where they overlap; our
lifecycle (FIS-like) is ``pending -> running -> completed | failed | stopped | halted`` in ``state``.

Where we differ from Chaos Toolkit, on purpose (docs/experiments.md says more):
- An unsteady baseline (before-hypothesis not met) aborts: the method is skipped, nothing is injected, no
  rollback runs (nothing was applied; a rollback such as ``tc qdisc del dev eth0 root`` would delete what we
  did not create), state ``failed``, exit 1. Chaos Toolkit runs the rollbacks and exits 0.
- Once the method has started, rollbacks always run on a halt, Ctrl-C, SIGTERM and on errors (a failed
  after-probe, an exception), whatever the strategy; the strategy (default/always/never/deviated) decides
  only for normal ends. Chaos Toolkit's default skips rollbacks when the run failed or was interrupted.
- A halt guard watches during the method and halts (faults stopped at once, rollbacks, state ``halted``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets as _secrets
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..files import write_json_atomic
from ..livestatus import experiments_dir, live_experiments  # noqa: F401  (status reads them without this module)
from .guard import HaltGuard
from .loader import check_environment, resolve_configuration, resolve_secrets
from .providers import ActivityFailed, RunContext, run_provider, within_tolerance
from .model import Activity, Experiment, GuardSpec, thaw

__all__ = ["RunOptions", "RunOutcome", "run_experiment", "experiments_dir", "EXIT_INTERRUPTED"]

log = logging.getLogger("chaos_inject.experiment")
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


class _Stop(BaseException):
    """A signal arrived in the main thread (a BaseException: no ``except Exception`` may swallow it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@dataclass
class RunOptions:
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


@dataclass
class RunOutcome:
    journal: dict[str, Any]
    state: str
    exit_code: int
    run_dir: Path | None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, _jsonable(data), dir_mode=0o755, sort_keys=False)


class _Run:
    def __init__(self, exp: Experiment, opts: RunOptions):
        self.exp = exp
        self.opts = opts
        self.run_id = f"exp-{time.strftime('%Y%m%d-%H%M%S')}-{_secrets.token_hex(3)}"
        self.t0 = time.monotonic()
        from .actions import session_mark

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
        self.journal: dict[str, Any] = {
            "chaoslib-version": None, "platform": platform.platform(), "node": platform.node(),
            "experiment": thaw(exp.document), "start": _now_iso(), "status": None, "deviated": False,
            "steady_states": {"before": None, "after": None, "during": []}, "run": [], "rollbacks": [],
        }

    def sessions(self) -> list[Any]:
        """The faults this run started: the one answer to "which faults are this run's" (not time windows)."""
        from .actions import started_sessions

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
            _write_json(self.status_path, st)
            if self.opts.run_dir:
                _write_json(Path(self.opts.run_dir) / "status.json", st)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)

    # -- activities --------------------------------------------------------------------------------------
    def _pause(self, seconds: Any, ctx: RunContext) -> None:
        if seconds is None:
            return
        from .loader import substitute

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
        run: dict[str, Any] = {"activity": thaw(act.raw), "output": None, "start": _now_iso()}
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
            run["end"] = _now_iso()
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
        from .actions import stop_all_faults

        try:
            stop_all_faults("halted")
        finally:
            self.halt_faults_stopped_ns = time.monotonic_ns()
            self.halt_done.set()

    def rollbacks(self, ctx: RunContext) -> None:
        from .actions import stop_all_faults

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


def _resolve_guard(g: GuardSpec, conf: dict, secrets: dict) -> GuardSpec:
    """``${name}`` in the extension's URLs and query, like everywhere else in the file."""
    from .loader import substitute

    if g.load is not None:
        g = replace(g, load=replace(g.load, url=substitute(g.load.url, conf, secrets)))
    if g.prometheus_url:
        g = replace(g, prometheus_url=substitute(g.prometheus_url, conf, secrets),
                    prometheus_query=substitute(g.prometheus_query, conf, secrets))
    return g


def _should_rollback(strategy: str, normal_end: bool, deviated: bool) -> bool:
    if not normal_end:
        return True      # our safety rule: halt, signals and errors always roll back
    return {"default": True, "always": True, "never": False, "deviated": deviated}[strategy]


def run_experiment(exp: Experiment, opts: RunOptions | None = None) -> RunOutcome:
    """Run ``exp``; every fault it started is stopped and its rollbacks ran (per the rules above) on return."""
    opts = opts or RunOptions()
    # everything that can reject the experiment comes first: an invalid one leaves no trace
    warnings = check_environment(exp)
    conf = resolve_configuration(exp, opts.variables, opts.env)
    secrets = resolve_secrets(exp, opts.env)
    from . import tcnetem

    tc = tcnetem.tc_settings(conf, literal=opts.literal_tc, netns=opts.tc_netns)
    translations = tcnetem.check_experiment(exp, conf, secrets, tc)
    from ..record.experiment import recording_for

    recording = recording_for(exp)  # the extension's "record" block: resolved and checked, nothing started yet
    r = _Run(exp, opts)
    if opts.run_dir:
        Path(opts.run_dir).mkdir(parents=True, exist_ok=True)
    r.set_state("pending")
    for note in (*exp.notes, *[w for w in warnings if w not in exp.notes]):
        r.say(f"note: {note}")
    for path, cmd in translations:
        r.say(f"{path}: {tcnetem.describe_translation(cmd, tc)}")
    baselines: dict[str, Any] = {}

    def note(text: str) -> None:
        r.say(f"note: {text}")
        r.journal["chaos-inject"]["notes"].append(text)

    def ctx() -> RunContext:
        return RunContext(dict(conf), secrets, baselines, tc=tc, note=note)

    strategy = opts.hypothesis_strategy or exp.hypothesis_strategy or "default"
    rb_strategy = opts.rollback_strategy or exp.rollback_strategy or "default"
    sources = list(opts.sample_sources)
    recorders = list(opts.recorders)
    g = _resolve_guard(r.guard_spec, conf, secrets)
    if g.load is not None:
        from .load import HttpLoad

        load = HttpLoad(g.load.url, g.load.rate_per_s, timeout_s=g.load.timeout_s, netns=g.load.netns)
        sources.append(load)
        recorders.append(load)
    guard = HaltGuard(g, sources if g.enabled else [], r.on_breach)
    if not g.enabled:
        guard.spec = replace(g, prometheus_query=None)
    from ..record.store import Phases

    r.phases = Phases()
    if recording is not None:
        recording.follow(r.phases)
        recorders.append(recording)
    prev_handlers: dict[int, Any] = {}
    stop_signal: list[int] = []

    def on_signal(signum, frame):
        if stop_signal:
            return       # a second signal while unwinding: rollbacks go on
        stop_signal.append(signum)
        r.cancel.set()
        raise _Stop(signum)

    if opts.handle_signals and threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            prev_handlers[s] = signal.signal(s, on_signal)

    journal = r.journal
    journal["chaos-inject"] = {"run_id": r.run_id, "hypothesis_strategy": strategy,
                               "rollback_strategy": rb_strategy, "notes": list(exp.notes),
                               "tc": {"mode": "literal" if tc.literal else "translate", "netns": tc.netns,
                                      "bound": tc.duration,
                                      "commands": [{"activity": p, "as": tcnetem.describe_translation(c, tc)}
                                                   for p, c in translations]}}
    normal_end = True
    started_recorders: list[Any] = []
    done = threading.Event()
    try:
        try:
            r.set_state("running")
            r.phases.mark("baseline")
            for rec in recorders:
                rec.start()
                started_recorders.append(rec)
            guard.start()
            if strategy in ("default", "before-method-only", "continuously"):
                before = r.hypothesis(ctx(), "before")
                journal["steady_states"]["before"] = before
                if before is not None and not before["steady_state_met"]:
                    failed_probe = any(p["status"] != "succeeded" for p in before["probes"])
                    journal["status"] = "failed"
                    r.reason = ("a steady-state probe failed before the method" if failed_probe else
                                "steady state did not hold before the method")
                    r.reason += ": aborted, nothing was injected"
                    raise _Abort()
            guard.wait_for_baseline(r.cancel)
            if r.cancel.is_set() and stop_signal:
                raise _Stop(stop_signal[0])
            guard.arm()
            for n in guard.notes:
                r.say(f"guard: {n}")
            r.phases.mark("fault")
            r.method_started = True
            r.enter("method")
            cont = None
            if strategy in ("during-method-only", "continuously") and exp.hypothesis and exp.hypothesis.probes:
                cont = threading.Thread(target=r.continuous, args=(ctx, done), daemon=True, name="hypothesis")
                cont.start()
            worker = threading.Thread(target=_guarded, args=(r, r.method, ctx()), daemon=True, name="method")
            worker.start()
            while worker.is_alive():
                worker.join(0.05)
                if r.halt.is_set():
                    break
            done.set()
            if cont is not None:
                cont.join(5)
            if r.method_error is not None:
                journal["status"] = "aborted"
                r.reason = f"the method raised {r.method_error!r}"
                normal_end = False
            if r.halt.is_set():
                normal_end = False
                journal["status"] = r.halt_status
                r.reason = f"halted: {r.halt_reason}"
            else:
                guard.disarm()
                missed = [run["activity"].get("name") for run in journal["run"] if run.get("tolerance_met") is False]
                if missed:   # ours: a method probe with a tolerance is judged (e.g. "the fault took effect")
                    journal["deviated"] = True
                    r.reason = f"method probe(s) {', '.join(map(repr, missed))} did not meet their tolerance"
                if strategy in ("default", "after-method-only", "continuously"):
                    after = r.hypothesis(ctx(), "after")
                    journal["steady_states"]["after"] = after
                    if after is not None and not after["steady_state_met"]:
                        journal["deviated"] = True
                        if any(p["status"] != "succeeded" for p in after["probes"]):
                            journal["status"] = "failed"
                            normal_end = False
                            r.reason = "a steady-state probe failed after the method"
                        else:
                            r.reason = "; ".join(filter(None, (r.reason, "steady state deviated after the method")))
            if journal["status"] is None:
                journal["status"] = "completed"
        except _Abort:
            normal_end = False
        except _Stop as exc:
            normal_end = False
            journal["status"] = "interrupted"
            r.reason = f"stopped by {signal.Signals(exc.signum).name}"
        except KeyboardInterrupt:      # no handlers of ours (handle_signals=False): Python's own SIGINT
            normal_end = False
            stop_signal.append(signal.SIGINT)
            journal["status"] = "interrupted"
            r.reason = "stopped by SIGINT"
        except Exception as exc:  # noqa: BLE001 - roll back, then report
            normal_end = False
            journal["status"] = "aborted"
            r.reason = f"error: {type(exc).__name__}: {exc}"
            log.exception("experiment run failed")
        # -- rollbacks: signals are deferred (recorded, not raised) until they are done ------------------
        done.set()
        r.cancel.set()
        guard.disarm()
        if opts.handle_signals and prev_handlers:
            for s in prev_handlers:
                signal.signal(s, lambda signum, frame: stop_signal.append(signum))
        if r.halt.is_set() and not r.halt_done.wait(10):
            log.error("halt: stopping the faults took more than 10 s")
        if r.method_started and _should_rollback(rb_strategy, normal_end, bool(journal["deviated"])):
            r.rollbacks(ctx())
            r.rollbacks_done_ns = time.monotonic_ns()
        else:
            from .actions import stop_all_faults

            stop_all_faults("stopped")
            if r.method_started:
                r.say(f"rollbacks skipped (strategy {rb_strategy})")
        tcnetem.reset()
        removal = _faults_removal_ns(r.phases, r.sessions())
        if removal is not None:
            # while the faults are being taken off, samples are neither faulted nor recovered: in no phase
            r.phases.close(removal[0])
            r.phases.mark("recovery", removal[1])
        else:
            r.phases.mark("recovery")
        r.fault_onset = _fault_starts_when_active(r.phases, r.sessions())
        if started_recorders and r.method_started and g.recovery_s > 0:
            r.say(f"recording recovery for {g.recovery_s:g}s")
            time.sleep(g.recovery_s)
    finally:
        guard.stop()
        for rec in started_recorders:
            try:
                rec.stop()
            except Exception as exc:  # noqa: BLE001
                log.error("recorder %r: %s", rec, exc)
        r.phases.close()
        if opts.handle_signals and prev_handlers:
            for s, h in prev_handlers.items():
                signal.signal(s, h)

    # -- outcome -----------------------------------------------------------------------------------------
    if stop_signal:
        state = "stopped"
    elif r.halt.is_set():
        state = "halted"
    elif journal["status"] == "completed":
        state = "completed"
    else:
        state = "failed"
    if journal["status"] is None:
        journal["status"] = "failed"
    journal["end"] = _now_iso()
    journal["duration"] = time.monotonic() - r.t0
    from .actions import describe_session

    ours = r.sessions()
    faults = [describe_session(s) for s in ours]
    # principle 1: a fault that did not take effect is a failed experiment, not a success
    no_effect = _no_effect(journal, ours)
    if no_effect and not stop_signal and not r.halt.is_set():
        r.reason = "; ".join(filter(None, (r.reason, "the fault did not take effect: " + "; ".join(no_effect))))
        if journal["status"] == "completed":
            journal["status"] = "failed"
            state = "failed"
        r.say(f"FAILED: the fault did not take effect: {'; '.join(no_effect)}")
    journal["chaos-inject"].update({
        "state": state, "reason": r.reason, "halt": guard.summary(),
        "halt_faults_stopped_ns": r.halt_faults_stopped_ns, "halt_detected_ns": guard.breached_at_ns,
        "rollbacks_done_ns": r.rollbacks_done_ns,
        "faults": faults, "phases": r.phases.windows() if r.phases.starts else {},
        "no_effect": no_effect, "fault_onset": r.fault_onset,
    })
    report = None
    if opts.run_dir:   # samples and the recorded-samples verdict first: a declared verdict decides the exit code
        from .report import write_run_data

        try:
            report = write_run_data(Path(opts.run_dir), journal, r.phases, started_recorders, faults, g, exp.verdict)
        except Exception as exc:  # noqa: BLE001 - the journal below is still written
            log.exception("writing the run directory failed")
            journal["chaos-inject"]["report_error"] = f"{type(exc).__name__}: {exc}"
    journal["chaos-inject"]["verdict_declared"] = exp.verdict is not None
    verdict_failed = False
    if exp.verdict is not None and journal["status"] == "completed" and not stop_signal and not r.halt.is_set():
        verdict_failed = _declared_verdict_failed(journal, r)
    journal["chaos-inject"]["reason"] = r.reason
    if stop_signal:
        code = EXIT_INTERRUPTED.get(signal.Signals(stop_signal[0]).name, 1)
    else:
        code = 0 if journal["status"] == "completed" and not journal["deviated"] and not verdict_failed else 1
    journal["chaos-inject"]["exit_code"] = code
    r.state = state
    r.step = "end"
    if opts.run_dir:
        if report is not None:
            from .report import write_report

            try:
                write_report(Path(opts.run_dir), journal, report)
            except Exception as exc:  # noqa: BLE001 - the journal below is still written
                log.exception("writing the report failed")
                journal["chaos-inject"]["report_error"] = f"{type(exc).__name__}: {exc}"
        _write_json(Path(opts.run_dir) / "journal.json", journal)
    if opts.journal_path:
        _write_json(Path(opts.journal_path), journal)
    r.set_state(state, r.reason)
    try:
        from ..kernel.ledger import record_final

        record_final(r.status())
        r.status_path.unlink(missing_ok=True)
    except (ImportError, OSError) as exc:
        log.warning("cannot record the final state: %s", exc)
    return RunOutcome(journal, state, code, Path(opts.run_dir) if opts.run_dir else None)


class _Abort(Exception):
    pass


def _no_effect(journal: dict, sessions) -> list[str]:
    """What the method meant to inject and did not: a method action that failed, a process action that
    exited non-zero (chaoslib counts it succeeded), a fault of this run (``sessions``) whose kernel counters
    show no matched packet over its active time (an engine that keeps no counters is not judged)."""
    out = []
    for run in journal["run"]:
        act = run["activity"]
        if act.get("type") != "action":
            continue
        name = act.get("name")
        output = run.get("output")
        if run.get("status") == "failed":
            out.append(f"action {name!r} failed")
        elif act.get("provider", {}).get("type") == "process" and isinstance(output, dict) and \
                output.get("status") not in (0, None):
            out.append(f"action {name!r} exited with status {output['status']}")
    from .carrier import CarriedFault

    for s in sessions:
        if getattr(s, "active_span_ns", None) is None:
            continue                       # never active: its action failed above
        carried = isinstance(s, CarriedFault)
        if carried and s.state == "failed":   # e.g. a host of the fleet lost mid-fault: not held as asked there
            out.append(f"fault {s.run_id} failed: {s.describe().get('error') or 'see its hosts'}")
            continue
        counters = s.counters()
        rules = [c for c in counters.values() if isinstance(c, dict) and "matched_packets" in c]
        if rules and not any(c["matched_packets"] for c in rules):
            what = s.describe()["fault"] if carried else "; ".join(f.describe() for f in s.plan.faults)
            out.append(f"fault {s.run_id} ({what}) matched no packet")
    return out


def _declared_verdict_failed(journal: dict, r: _Run) -> bool:
    """The experiment's own ``verdict`` block is its question, so a run that completed answers to it too:
    violated -> deviated (as an after-hypothesis not met; Chaos Toolkit: deviated -> exit 1); inconclusive,
    or not judged at all (no samples were recorded), is no success either. True if it did not hold."""
    ci = journal["chaos-inject"]
    outcome = ci.get("verdict")
    if outcome == "held":
        return False
    phases = ", ".join(f"{p} {o}" for p, o in (ci.get("verdict_phases") or {}).items())
    if outcome == "violated":
        journal["deviated"] = True
        why = f"the recorded samples violate the experiment's verdict ({phases})"
    elif outcome is None:
        why = "the experiment's verdict was not judged: " + (
            f"writing the run directory failed ({ci['report_error']})" if ci.get("report_error") else
            "no samples were recorded (it needs a run directory and a load, a record block or a recorder)")
    else:
        why = f"the experiment's verdict is {outcome.upper()} ({phases}): the steady state was not shown to hold"
    r.reason = "; ".join(filter(None, (r.reason, why)))
    r.say(f"verdict: {why}")
    return True


def _judged(act: Activity) -> bool:
    return act.type == "probe" and act.tolerance is not None


def _active_spans(sessions) -> list[tuple[int, int | None, Any]]:
    """(activated, removed or None, session) of the sessions that became active."""
    return [(span[0], span[1], s) for s in sessions if (span := getattr(s, "active_span_ns", None)) is not None]


def _faults_removal_ns(phases, sessions) -> tuple[int, int] | None:
    """(removal began, removed) for this run's faults (``sessions``), if all were removed before now: a method
    that stops its own fault and then waits (for a metrics window to pass) is in recovery during that wait,
    not in the fault phase. The fault phase ends when the last removal began, the recovery starts when it
    ended."""
    now = time.monotonic_ns()
    spans = _active_spans(sessions)
    if phases.starts.get("fault") is None or not spans or any(end is None for _, end, _ in spans):
        return None
    removed = min(max(end for _, end, _ in spans), now)
    began = max(getattr(s, "removal_started_ns", None) or end for _, end, s in spans)
    return min(began, removed), removed


def _fault_starts_when_active(phases, sessions) -> dict | None:
    """Move the fault phase's start from the method's start to when this run's first fault (of ``sessions``)
    became active (symmetric to the recovery starting when the faults were removed). The baseline still ends
    at the method's start: samples in between (earlier method steps, the engine applying the fault) are in no
    phase, neither steady nor faulted, and are not judged. Returns that window, or None (no fault of ours
    became active, e.g. a method of host actions only: the fault phase starts with the method)."""
    start = phases.starts.get("fault")
    spans = _active_spans(sessions)
    if start is None or not spans:
        return None
    onset = min(begin for begin, _, _ in spans)
    if onset <= start:
        return None
    phases.starts["fault"] = onset     # (Phases has no "move": its windows are read from starts/ends)
    return {"start_ns": start, "end_ns": onset, "seconds": (onset - start) / 1e9,
            "samples": "in no phase (not judged): between the method's start and the fault's activation"}


def _guarded(r: _Run, fn: Callable, ctx: RunContext) -> None:
    try:
        fn(ctx)
    except BaseException as exc:  # noqa: BLE001 - the main thread reports it
        r.method_error = exc
