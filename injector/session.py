"""FaultSession: one run of a plan, the one mechanism behind the CLI, ``--detach`` and the library API.

A session applies a plan through an engine and a KernelOwner (same ledger, ownership and lease as always),
renews the lease at most every second until the plan's duration ends or it is stopped, then undoes everything.

Two ways to drive it:

* ``run()`` in the calling thread, blocking (the CLI and the detached supervisor): SIGINT/SIGTERM/SIGHUP are
  caught by the owner, the fault is rolled back and the run ends ``stopped``.
* ``start()`` then ``stop()``/``wait()`` (the library): the fault is applied in the caller's thread (so errors
  before the fault is active are raised right there) and a daemon thread renews the lease. The library installs
  no signal handlers: the caller owns signal handling. If the process dies without stopping the session, the
  rules' lease switches the fault off within one lease and ``chaos-inject sweep`` removes the objects.

States (FIS-like, written to the run's status file and, at the end, to the history):
pending -> running -> completed | stopped | halted | failed. The status file, stop requests from another
process, the fleet's heartbeat and the final record are ``run_base.RunBase``'s, shared with host faults.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ChaosInjectError, CleanupFailed, Interrupted, InvalidSpec
from .kernel.ledger import FINAL_STATES
from .plan import Plan
from .run_base import STOP_STATES, RunBase

log = logging.getLogger(__name__)
MAX_TICK_NS = 1_000_000_000


@dataclass
class Progress:
    run_id: str
    elapsed_ns: int
    duration_ns: int
    counters: dict[int, dict[str, int]]


@dataclass
class RunResult:
    plan: Plan
    counters: dict[int, dict[str, int]] = field(default_factory=dict)
    stop_reason: str = "completed"      # completed | SIGINT | SIGTERM | SIGHUP | stopped | halted | failed
    started_wall: float = 0.0
    elapsed_ns: int = 0
    state: str = "pending"              # the session's final state
    error: str | None = None
    # CLOCK_MONOTONIC: fault active, its removal began, removed (None if never active)
    active_ns: int | None = None
    removal_started_ns: int | None = None
    removed_ns: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.stop_reason != "completed"


def lease_expiry(now_ns: int, lease_ns: int, deadline_ns: int) -> int:
    """The rule expiry to write now: one lease ahead, never past the hard deadline."""
    return min(now_ns + lease_ns, deadline_ns)


_ACTIVE: "weakref.WeakSet[FaultSession]" = weakref.WeakSet()


@atexit.register
def _stop_active_sessions() -> None:
    # interpreter exit would kill the daemon thread mid-lease; undo now instead of waiting for sweep
    for session in list(_ACTIVE):
        try:
            session.stop()
        except Exception as exc:  # noqa: BLE001 - at exit, report and go on
            log.error("stopping run %s at exit: %s", session.run_id, exc)


class FaultSession(RunBase):
    """One run of ``plan``. ``engine`` defaults to the plan's engine (``plan.engine``)."""

    def __init__(self, plan: Plan, engine: Any = None, *, kind: str = "library",
                 on_progress: Callable[[Progress], None] | None = None,
                 clock: Callable[[], int] = time.monotonic_ns, sleep: Callable[[float], None] = time.sleep,
                 extra_status: dict[str, Any] | None = None,
                 on_active: Callable[["FaultSession"], None] | None = None,
                 heartbeat: tuple[str, int] | None = None):
        if engine is None:
            from .engines.select import make_engine

            engine = make_engine(plan.engine)
        # kind: cli | detached | library | experiment, shown by `status`
        super().__init__(kind, extra_status=extra_status, clock=clock)
        self.plan = plan
        self.engine = engine
        self.result = RunResult(plan=plan)
        self._on_progress = on_progress
        self._sleep = sleep
        self._on_active = on_active           # called once the fault is in place (--detach reports then)
        if heartbeat is not None:             # (file, timeout ns): the run ends when the file goes stale
            self._heartbeat = (str(heartbeat[0]), int(heartbeat[1]))
            self._extra_status["heartbeat"] = {"file": self._heartbeat[0], "timeout_s": self._heartbeat[1] / 1e9}
        self._lock = threading.RLock()          # engine calls from the renew thread and the caller
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None   # the thread renewing the lease (run() or _background)
        self._error: BaseException | None = None
        self._error_raised = False
        self._start_ns = 0
        self._deadline_ns = 0
        self._active_ns = 0                   # when the fault became active (0: never)
        self._ended_ns: int | None = None
        self._removing_ns: int | None = None

    # -- public ------------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.plan.run_id

    @property
    def active(self) -> bool:
        return self._state == "running"

    @property
    def active_span_ns(self) -> tuple[int, int | None] | None:
        """(became active, removed) on CLOCK_MONOTONIC, the end None while it runs; None if never active.
        Experiments label their samples' phases with it."""
        return (self._active_ns, self._ended_ns) if self._active_ns else None

    @property
    def removal_started_ns(self) -> int | None:
        """When the undo began (CLOCK_MONOTONIC): from here the fault is being taken off (the userspace engine
        releases its held packets at once), until ``active_span_ns[1]``. Neither fault nor recovery."""
        return self._removing_ns

    def start(self) -> "FaultSession":
        """Apply the fault and return once it is active; a daemon thread renews the lease."""
        self._claim()
        owner = self._new_owner(handle_signals=False).__enter__()  # the library's run: closed by _background
        try:
            self._apply(owner)
        except BaseException as exc:
            self._fail_before_active(owner, exc)
            raise
        _ACTIVE.add(self)
        self._thread = threading.Thread(target=self._background, name=f"chaos-inject-{self.run_id}", daemon=True)
        self._thread.start()
        return self

    def run(self, *, handle_signals: bool = True) -> RunResult:
        """Apply, renew in this thread until the duration ends (or a signal / stop request), undo; block."""
        self._claim()
        try:
            with self._new_owner(handle_signals=handle_signals) as owner:
                self._apply(owner)
                try:
                    self._loop(self._sleep_and_check)
                finally:
                    self._last_counters()
        except Interrupted as exc:
            self.result.stop_reason = signal.Signals(exc.signum).name
            self._finish("stopped")
        except BaseException as exc:
            self._error = exc
            self._finish("failed")
            raise
        else:
            if self._stop.is_set():
                self.result.stop_reason = self._stop_state
            self._finish(self._stop_state if self._stop.is_set() else "completed")
        return self.result

    def stop(self, state: str = "stopped", *, timeout: float | None = 30.0) -> RunResult:
        """End the fault now (idempotent). ``state`` is ``stopped`` or ``halted`` (a guard's breach)."""
        if state not in STOP_STATES:
            raise InvalidSpec(f"a run is stopped as one of {', '.join(STOP_STATES)}", text=state, field="state")
        with self._lock:
            if self._state == "pending":
                self._state = state
                self.result.state = state
                self.result.stop_reason = state
                self._done.set()
                return self.result
        if not self._done.is_set():
            self._stop_state = state
            self._stop.set()
        if self._loop_thread is threading.current_thread():
            return self.result  # called from on_progress: the loop ends after this callback and undoes
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> RunResult:
        """Until the run has ended (its duration, or stop()); raises what went wrong once."""
        if self._state == "pending" and self._thread is None and not self._done.is_set():
            raise ChaosInjectError(f"run {self.run_id} was never started")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"run {self.run_id} still running after {timeout}s")
        elif not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id} still running after {timeout}s")
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error
        return self.result

    def counters(self) -> dict[int, dict[str, int]]:
        """Per rule id, the kernel's counters now (the last ones once the run has ended)."""
        with self._lock:
            if self._state == "running":
                try:
                    self.result.counters = self.engine.counters()
                except Exception as exc:  # noqa: BLE001 - the renew thread will see and report it
                    log.debug("counters of run %s: %s", self.run_id, exc)
            return {k: dict(v) for k, v in self.result.counters.items()}

    def remaining_s(self) -> float:
        if self._state != "running":
            return 0.0
        return max(0, self._deadline_ns - self._clock()) / 1e9

    def __enter__(self) -> "FaultSession":
        if self._state == "pending":
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.stop()
            return
        try:  # the block's own exception wins; still roll back, and say if that failed too
            self.stop()
        except Exception as cleanup:  # noqa: BLE001
            log.error("run %s: rollback after %r failed: %s", self.run_id, exc, cleanup)

    def __repr__(self) -> str:
        return f"<FaultSession {self.run_id} {self._state} engine={self.plan.engine}>"

    # -- mechanism ---------------------------------------------------------------------------------------
    def _claim(self) -> None:
        with self._lock:
            if self._state != "pending" or self._thread is not None or self._owner is not None:
                raise ChaosInjectError(f"run {self.run_id} was already started (state {self._state}); "
                                       "a session runs once")
            self._owner = True  # placeholder until the owner exists: a second start() fails at once
        self.result.started_wall = time.time()
        try:
            self.engine.check(self.plan)
        except BaseException as exc:
            self._error, self._error_raised = exc, True
            self._finish("failed")
            raise

    def _new_owner(self, *, handle_signals: bool):
        from .kernel.owner import KernelOwner

        # pending: the ledger exists once it is entered, the status file appears once the fault is active
        self._owner = KernelOwner(self.run_id, meta={**self.plan.to_dict(), "kind": self.kind},
                                  handle_signals=handle_signals)
        return self._owner

    def _apply(self, owner) -> None:
        self._start_ns = self._clock()
        self._deadline_ns = self._start_ns + self.plan.duration_ns
        with self._lock:
            self.engine.apply(self.plan, owner, lease_expiry(self._start_ns, self.plan.lease_ns,
                                                             self._deadline_ns))
            active = self._clock()
            if active > self._start_ns:
                # applying took time (a bcc compile is ~0.4 s, longer than a short lease): the duration counts
                # from when the fault is active, and the lease is renewed at once so it does not lapse
                self._start_ns, self._deadline_ns = active, active + self.plan.duration_ns
                self.engine.renew(lease_expiry(active, self.plan.lease_ns, self._deadline_ns))
            self._state = "running"
            self._active_ns = self._start_ns
        self._write_status()
        if self._on_active:
            self._on_active(self)

    def _fail_before_active(self, owner, exc: BaseException) -> None:
        self._error, self._error_raised = exc, True
        try:
            owner.__exit__(type(exc), exc, None)
        except CleanupFailed as cleanup:
            log.error("run %s: undo after a failed apply: %s", self.run_id, cleanup)
        self._finish("failed")

    def _sleep_and_check(self, seconds: float) -> bool:
        self._sleep(seconds)
        return self._stop.is_set()

    def _loop(self, wait: Callable[[float], bool]) -> None:
        self._loop_thread = threading.current_thread()
        plan = self.plan
        tick_ns = min(plan.lease_ns // 3, MAX_TICK_NS)
        while True:
            now = self._clock()
            if now >= self._deadline_ns:
                return
            if self._wait_tick(wait, now + min(tick_ns, self._deadline_ns - now)):
                return
            now = self._clock()
            with self._lock:
                self.engine.renew(lease_expiry(now, plan.lease_ns, self._deadline_ns))
                self.result.counters = self.engine.counters()
            self.result.elapsed_ns = now - self._start_ns
            self._write_status()
            if self._on_progress:
                self._on_progress(Progress(plan.run_id, self.result.elapsed_ns, plan.duration_ns,
                                           self.result.counters))

    def _last_counters(self) -> None:
        # last word from the kernel before the objects go
        if self._active_ns and self._removing_ns is None:
            self._removing_ns = self._clock()
        with self._lock:
            try:
                self.result.counters = self.engine.counters()
            except Exception:  # noqa: BLE001
                pass
        self.result.elapsed_ns = min(self._clock() - self._start_ns, self.plan.duration_ns)

    def _background(self) -> None:
        final = "completed"
        try:
            self._loop(self._stop.wait)
            if self._stop.is_set():
                final = self._stop_state
        except BaseException as exc:  # noqa: BLE001 - reported by wait()/stop()
            log.error("run %s: lease renewal failed, rolling back: %s", self.run_id, exc)
            self._error, final = exc, "failed"
        finally:
            self._last_counters()
            try:
                self._owner.close()
            except BaseException as exc:  # noqa: BLE001
                if self._error is None:
                    self._error = exc
                final = "failed"
            _ACTIVE.discard(self)
            if final in STOP_STATES:
                self.result.stop_reason = final
            self._finish(final)

    def _finish(self, state: str) -> None:
        assert state in FINAL_STATES
        with self._lock:
            if self._active_ns and self._ended_ns is None:
                self._ended_ns = self._clock()   # after the owner removed its objects: the fault is gone
            self.result.active_ns, self.result.removed_ns = self._active_ns or None, self._ended_ns
            self.result.removal_started_ns = self._removing_ns
            self._state = state
            self.result.state = state
            if state == "failed":
                self.result.stop_reason = "failed"
                self.result.error = repr(self._error) if self._error else None
        self._record_final()
        self._done.set()

    def _details(self) -> dict[str, Any]:
        plan, result = self.plan, self.result
        remaining = max(0, self._deadline_ns - self._clock()) if self._state == "running" else 0
        return {"engine": plan.engine, "flows": [f.text or str(f) for f in plan.flows],
                "fault": "; ".join(f.describe() for f in plan.faults), "direction": plan.direction,
                "started": result.started_wall, "elapsed_s": result.elapsed_ns / 1e9,
                "remaining_s": remaining / 1e9, "duration_s": plan.duration_ns / 1e9,
                "counters": {str(k): v for k, v in result.counters.items()}, "rules": plan.to_dict()["rules"],
                "stop_reason": result.stop_reason if self._state in FINAL_STATES else None,
                "error": result.error}
