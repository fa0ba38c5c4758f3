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

import logging
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import crashpoints
from ..livestatus import experiments_dir, live_experiments  # noqa: F401  (status reads them without this module)
from . import tcnetem
from .actions import describe_session, stop_all_faults
from .effects import fault_starts_when_active, faults_removal_ns, no_effect
from .guard import HaltGuard, resolve_guard
from .journal import declared_verdict_failed, now_iso, write_json
from .loader import check_environment, resolve_configuration, resolve_secrets
from .model import Experiment
from .providers import RunContext
from .steps import ExperimentRun, RunOptions, guarded

__all__ = ["RunOptions", "RunOutcome", "run_experiment", "experiments_dir", "EXIT_INTERRUPTED"]

log = logging.getLogger("chaos_inject.experiment")
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


class _Stop(BaseException):
    """A signal arrived in the main thread (a BaseException: no ``except Exception`` may swallow it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class _Abort(Exception):
    """The steady state did not hold before the method: nothing is injected, nothing rolled back."""


@dataclass
class RunOutcome:
    journal: dict[str, Any]
    state: str
    exit_code: int
    run_dir: Path | None


def run_experiment(exp: Experiment, opts: RunOptions | None = None) -> RunOutcome:
    """Run ``exp``; every fault it started is stopped and its rollbacks ran (per the rules above) on return."""
    return _Runner(exp, opts or RunOptions()).run()


def _should_rollback(strategy: str, normal_end: bool, deviated: bool) -> bool:
    if not normal_end:
        return True      # our safety rule: halt, signals and errors always roll back
    return {"default": True, "always": True, "never": False, "deviated": deviated}[strategy]


class _Runner:
    """The phases of one run in their order: prepare (here), baseline, method, after the method, unwind
    (rollbacks, the fault phase's edges, recovery), close (guard and recorders stopped), finish (outcome,
    exit code, run directory)."""

    def __init__(self, exp: Experiment, opts: RunOptions):
        # everything that can reject the experiment comes first: an invalid one leaves no trace
        self.exp, self.opts = exp, opts
        warnings = check_environment(exp)
        self.conf = resolve_configuration(exp, opts.variables, opts.env)
        self.secrets = resolve_secrets(exp, opts.env)
        self.tc = tcnetem.tc_settings(self.conf, literal=opts.literal_tc, netns=opts.tc_netns)
        translations = tcnetem.check_experiment(exp, self.conf, self.secrets, self.tc)
        from ..record.experiment import recording_for

        recording = recording_for(exp)  # the extension's "record" block: resolved and checked, nothing started yet
        self.r = r = ExperimentRun(exp, opts)
        if opts.run_dir:
            Path(opts.run_dir).mkdir(parents=True, exist_ok=True)
        r.set_state("pending")
        for note in (*exp.notes, *[w for w in warnings if w not in exp.notes]):
            r.say(f"note: {note}")
        for path, cmd in translations:
            r.say(f"{path}: {tcnetem.describe_translation(cmd, self.tc)}")
        self.baselines: dict[str, Any] = {}
        self.strategy = opts.hypothesis_strategy or exp.hypothesis_strategy or "default"
        self.rb_strategy = opts.rollback_strategy or exp.rollback_strategy or "default"
        self._guard_and_recorders(recording)
        self.prev_handlers: dict[int, Any] = {}
        self.stop_signal: list[int] = []
        if opts.handle_signals and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self.prev_handlers[s] = signal.signal(s, self._on_signal)
        self.journal = r.journal
        self.journal["chaos-inject"] = {
            "run_id": r.run_id, "hypothesis_strategy": self.strategy, "rollback_strategy": self.rb_strategy,
            "notes": list(exp.notes),
            "tc": {"mode": "literal" if self.tc.literal else "translate", "netns": self.tc.netns,
                   "bound": self.tc.duration,
                   "commands": [{"activity": p, "as": tcnetem.describe_translation(c, self.tc)}
                                for p, c in translations]}}
        self.normal_end = True
        self.started_recorders: list[Any] = []
        self.done = threading.Event()

    def _guard_and_recorders(self, recording) -> None:
        sources = list(self.opts.sample_sources)
        self.recorders = list(self.opts.recorders)
        self.g = g = resolve_guard(self.r.guard_spec, self.conf, self.secrets)
        if g.load is not None:
            from .http_load import HttpLoad

            load = HttpLoad(g.load.url, g.load.rate_per_s, timeout_s=g.load.timeout_s, netns=g.load.netns)
            sources.append(load)
            self.recorders.append(load)
        self.guard = HaltGuard(g, sources if g.enabled else [], self.r.on_breach)
        if not g.enabled:
            self.guard.spec = replace(g, prometheus_query=None)
        from ..record.store import Phases

        self.r.phases = Phases()
        if recording is not None:
            recording.follow(self.r.phases)
            self.recorders.append(recording)

    def note(self, text: str) -> None:
        self.r.say(f"note: {text}")
        self.journal["chaos-inject"]["notes"].append(text)

    def ctx(self) -> RunContext:
        return RunContext(dict(self.conf), self.secrets, self.baselines, tc=self.tc, note=self.note)

    def _on_signal(self, signum, frame):
        if self.stop_signal:
            return       # a second signal while unwinding: rollbacks go on
        self.stop_signal.append(signum)
        self.r.cancel.set()
        raise _Stop(signum)

    # -- the phases --------------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        r, journal = self.r, self.journal
        try:
            try:
                self.baseline()
                self.method()
                if journal["status"] is None:
                    journal["status"] = "completed"
            except _Abort:
                self.normal_end = False
            except _Stop as exc:
                self.normal_end = False
                journal["status"] = "interrupted"
                r.reason = f"stopped by {signal.Signals(exc.signum).name}"
            except KeyboardInterrupt:      # no handlers of ours (handle_signals=False): Python's own SIGINT
                self.normal_end = False
                self.stop_signal.append(signal.SIGINT)
                journal["status"] = "interrupted"
                r.reason = "stopped by SIGINT"
            except Exception as exc:  # noqa: BLE001 - roll back, then report
                self.normal_end = False
                journal["status"] = "aborted"
                r.reason = f"error: {type(exc).__name__}: {exc}"
                log.exception("experiment run failed")
            self.unwind()
        finally:
            self.close()
        return self.finish()

    def baseline(self) -> None:
        """Recorders and guard started, the before-hypothesis judged (raises _Abort if it did not hold), the
        guard's baseline gathered."""
        r, journal = self.r, self.journal
        r.set_state("running")
        r.phases.mark("baseline")
        for rec in self.recorders:
            rec.start()
            self.started_recorders.append(rec)
        self.guard.start()
        if self.strategy in ("default", "before-method-only", "continuously"):
            before = r.hypothesis(self.ctx(), "before")
            journal["steady_states"]["before"] = before
            if before is not None and not before["steady_state_met"]:
                failed_probe = any(p["status"] != "succeeded" for p in before["probes"])
                journal["status"] = "failed"
                r.reason = ("a steady-state probe failed before the method" if failed_probe else
                            "steady state did not hold before the method")
                r.reason += ": aborted, nothing was injected"
                raise _Abort()
        self.guard.wait_for_baseline(r.cancel)
        if r.cancel.is_set() and self.stop_signal:
            raise _Stop(self.stop_signal[0])

    def method(self) -> None:
        """The method in a worker thread (the continuous hypothesis beside it), the guard armed; then, unless
        it halted, the method's judged probes and the after-hypothesis."""
        r, journal, exp = self.r, self.journal, self.exp
        self.guard.arm()
        for n in self.guard.notes:
            r.say(f"guard: {n}")
        r.phases.mark("fault")
        r.method_started = True
        r.enter("method")
        cont = None
        if self.strategy in ("during-method-only", "continuously") and exp.hypothesis and exp.hypothesis.probes:
            cont = threading.Thread(target=r.continuous, args=(self.ctx, self.done), daemon=True, name="hypothesis")
            cont.start()
        worker = threading.Thread(target=guarded, args=(r, r.method, self.ctx()), daemon=True, name="method")
        worker.start()
        while worker.is_alive():
            worker.join(0.05)
            if r.halt.is_set():
                break
        self.done.set()
        if cont is not None:
            cont.join(5)
        if r.method_error is not None:
            journal["status"] = "aborted"
            r.reason = f"the method raised {r.method_error!r}"
            self.normal_end = False
        if r.halt.is_set():
            self.normal_end = False
            journal["status"] = r.halt_status
            r.reason = f"halted: {r.halt_reason}"
        else:
            self.guard.disarm()
            self.after_method()

    def after_method(self) -> None:
        r, journal = self.r, self.journal
        missed = [run["activity"].get("name") for run in journal["run"] if run.get("tolerance_met") is False]
        if missed:   # ours: a method probe with a tolerance is judged (e.g. "the fault took effect")
            journal["deviated"] = True
            r.reason = f"method probe(s) {', '.join(map(repr, missed))} did not meet their tolerance"
        if self.strategy in ("default", "after-method-only", "continuously"):
            after = r.hypothesis(self.ctx(), "after")
            journal["steady_states"]["after"] = after
            if after is not None and not after["steady_state_met"]:
                journal["deviated"] = True
                if any(p["status"] != "succeeded" for p in after["probes"]):
                    journal["status"] = "failed"
                    self.normal_end = False
                    r.reason = "a steady-state probe failed after the method"
                else:
                    r.reason = "; ".join(filter(None, (r.reason, "steady state deviated after the method")))

    def unwind(self) -> None:
        """Rollbacks (signals are deferred, recorded not raised, until they are done), every fault of ours
        stopped, the fault phase's true edges, the recovery recorded."""
        r = self.r
        self.done.set()
        r.cancel.set()
        self.guard.disarm()
        if self.opts.handle_signals and self.prev_handlers:
            for s in self.prev_handlers:
                signal.signal(s, lambda signum, frame: self.stop_signal.append(signum))
        if r.halt.is_set() and not r.halt_done.wait(10):
            log.error("halt: stopping the faults took more than 10 s")
        if r.method_started and _should_rollback(self.rb_strategy, self.normal_end, bool(self.journal["deviated"])):
            r.rollbacks(self.ctx())
            r.rollbacks_done_ns = time.monotonic_ns()
        else:
            stop_all_faults("stopped")
            if r.method_started:
                r.say(f"rollbacks skipped (strategy {self.rb_strategy})")
        tcnetem.reset()
        removal = faults_removal_ns(r.phases, r.sessions())
        if removal is not None:
            # while the faults are being taken off, samples are neither faulted nor recovered: in no phase
            r.phases.close(removal[0])
            r.phases.mark("recovery", removal[1])
        else:
            r.phases.mark("recovery")
        r.fault_onset = fault_starts_when_active(r.phases, r.sessions())
        if self.started_recorders and r.method_started and self.g.recovery_s > 0:
            r.say(f"recording recovery for {self.g.recovery_s:g}s")
            time.sleep(self.g.recovery_s)

    def close(self) -> None:
        self.guard.stop()
        for rec in self.started_recorders:
            try:
                rec.stop()
            except Exception as exc:  # noqa: BLE001
                log.error("recorder %r: %s", rec, exc)
        self.r.phases.close()
        if self.opts.handle_signals and self.prev_handlers:
            for s, h in self.prev_handlers.items():
                signal.signal(s, h)

    # -- the outcome -------------------------------------------------------------------------------------
    def finish(self) -> RunOutcome:
        r, journal, opts = self.r, self.journal, self.opts
        state, faults = self._judge()
        report = None
        if opts.run_dir:   # samples and the recorded-samples verdict first: a declared verdict decides the exit code
            from .report import write_run_data

            try:
                report = write_run_data(Path(opts.run_dir), journal, r.phases, self.started_recorders, faults,
                                        self.g, self.exp.verdict)
            except Exception as exc:  # noqa: BLE001 - the journal below is still written
                log.exception("writing the run directory failed")
                journal["chaos-inject"]["report_error"] = f"{type(exc).__name__}: {exc}"
        code = self._exit_code()
        r.state = state
        r.step = "end"
        self._write(report)
        r.set_state(state, r.reason)
        try:
            from ..kernel.ledger import record_final

            record_final(r.status())
            with crashpoints.step("delete experiment status"):
                r.status_path.unlink(missing_ok=True)
        except (ImportError, OSError) as exc:
            log.warning("cannot record the final state: %s", exc)
        return RunOutcome(journal, state, code, Path(opts.run_dir) if opts.run_dir else None)

    def _judge(self) -> tuple[str, list[dict]]:
        """The run's final state, and the journal's chaos-inject block: faults, phases, no effect, halt."""
        r, journal = self.r, self.journal
        if self.stop_signal:
            state = "stopped"
        elif r.halt.is_set():
            state = "halted"
        elif journal["status"] == "completed":
            state = "completed"
        else:
            state = "failed"
        if journal["status"] is None:
            journal["status"] = "failed"
        journal["end"] = now_iso()
        journal["duration"] = time.monotonic() - r.t0
        ours = r.sessions()
        faults = [describe_session(s) for s in ours]
        # principle 1: a fault that did not take effect is a failed experiment, not a success
        missed = no_effect(journal, ours)
        if missed and not self.stop_signal and not r.halt.is_set():
            r.reason = "; ".join(filter(None, (r.reason, "the fault did not take effect: " + "; ".join(missed))))
            if journal["status"] == "completed":
                journal["status"] = "failed"
                state = "failed"
            r.say(f"FAILED: the fault did not take effect: {'; '.join(missed)}")
        journal["chaos-inject"].update({
            "state": state, "reason": r.reason, "halt": self.guard.summary(),
            "halt_faults_stopped_ns": r.halt_faults_stopped_ns, "halt_detected_ns": self.guard.breached_at_ns,
            "rollbacks_done_ns": r.rollbacks_done_ns,
            "faults": faults, "phases": r.phases.windows() if r.phases.starts else {},
            "no_effect": missed, "fault_onset": r.fault_onset,
        })
        return state, faults

    def _add_reason(self, why: str) -> None:
        self.r.reason = "; ".join(filter(None, (self.r.reason, why)))
        self.r.say(f"verdict: {why}")

    def _exit_code(self) -> int:
        """0 for a completed run whose steady state held (and its declared verdict, if any); 130/143/129 for a
        signal; else 1."""
        r, journal = self.r, self.journal
        journal["chaos-inject"]["verdict_declared"] = self.exp.verdict is not None
        verdict_failed = False
        if self.exp.verdict is not None and journal["status"] == "completed" and not self.stop_signal \
                and not r.halt.is_set():
            verdict_failed = declared_verdict_failed(journal, self._add_reason)
        journal["chaos-inject"]["reason"] = r.reason
        if self.stop_signal:
            code = EXIT_INTERRUPTED.get(signal.Signals(self.stop_signal[0]).name, 1)
        else:
            code = 0 if journal["status"] == "completed" and not journal["deviated"] and not verdict_failed else 1
        journal["chaos-inject"]["exit_code"] = code
        return code

    def _write(self, report) -> None:
        """The report (if the run data were written) and the journal, in the run directory and/or where asked."""
        journal, opts = self.journal, self.opts
        if opts.run_dir:
            if report is not None:
                from .report import write_report

                try:
                    write_report(Path(opts.run_dir), journal, report)
                except Exception as exc:  # noqa: BLE001 - the journal below is still written
                    log.exception("writing the report failed")
                    journal["chaos-inject"]["report_error"] = f"{type(exc).__name__}: {exc}"
            write_json(Path(opts.run_dir) / "journal.json", journal)
        if opts.journal_path:
            write_json(Path(opts.journal_path), journal)
