"""A host fault (cpu-stress, kill-process) as a run with the network faults' guarantees: a ledger and a status file
(`status` lists it, `stop RUN_ID` ends it), SIGINT/SIGTERM/SIGHUP end it cleanly, its final state goes to the
history. The commands that drive it are cli/host.py.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
import time
from typing import Any, Callable, Iterator

from .errors import ChaosInjectError, Interrupted
from .run_base import RunBase

EXIT_OK, EXIT_ERROR = 0, 1
TICK_S = 0.05          # stop requests and CPU samples (the last sample before a worker exits counts)
STATUS_EVERY_S = 0.5


class HostRun(RunBase):
    """One host fault as a run: FaultSession's status file, stop requests and final record (RunBase), with
    no kernel objects of its own. Use::

        with run.running() as owner:   # Interrupted / ChaosInjectError end the block: stopped / failed
            ...start the fault, owner.callback(undo)...
            run.active()
            run.hold(seconds, done)
        status = run.finish(**outcome)
    """

    def __init__(self, kind: str, describe: str, duration_s: float):
        super().__init__(kind)
        self.describe, self.duration_s = describe, duration_s
        self._run_id = f"{kind}-{secrets.token_hex(4)}"
        self.started = time.time()
        self._t0 = self._clock()
        self.extra: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.stop_reason: str | None = None
        self._final = "completed"

    @property
    def run_id(self) -> str:
        return self._run_id

    def _details(self) -> dict[str, Any]:
        elapsed = (self._clock() - self._t0) / 1e9
        return {"engine": "host", "flows": [], "fault": self.describe, "direction": None, "started": self.started,
                "elapsed_s": elapsed, "duration_s": self.duration_s,
                "remaining_s": max(0.0, self.duration_s - elapsed) if self._state == "running" else 0.0,
                "rules": [], "counters": {}, "stop_reason": self.stop_reason,
                "error": str(self.error) if self.error is not None and self._state == "failed" else None,
                **self.extra}

    @contextlib.contextmanager
    def running(self) -> Iterator[Any]:
        """The run's owner (ledger; SIGINT/SIGTERM/SIGHUP end it); its undo callbacks run on every exit path.
        An interruption or a ChaosInjectError inside ends the block and decides the final state."""
        from .kernel.owner import KernelOwner

        self._owner = KernelOwner(self.run_id, meta={"kind": self.kind, "flows": [], "fault": self.describe,
                                                     "engine": "host"})
        try:
            with self._owner as owner:
                yield owner
        except Interrupted as exc:
            self.error, self._final = exc, "stopped"
            self.stop_reason = signal.Signals(exc.signum).name
        except ChaosInjectError as exc:
            self.error, self._final = exc, "failed"
        else:
            self._final = self._stop_state if self._stop.is_set() else "completed"

    def active(self) -> None:
        self._state = "running"
        self._write_status()

    def hold(self, seconds: float, done: Callable[[], bool] = lambda: False) -> None:
        """Up to ``seconds``, until ``done()`` (polled every TICK_S) or a `chaos-inject stop RUN_ID`; the
        status file is rewritten every STATUS_EVERY_S (it is fsynced: not every tick)."""
        end = self._clock() + int(seconds * 1e9)

        def wait(s: float) -> bool:  # _wait_tick's contract: sleep, then say whether the hold is over
            time.sleep(s)
            return done()

        while (now := self._clock()) < end and not done():
            if self._wait_tick(wait, min(end, now + int(STATUS_EVERY_S * 1e9)), poll_ns=int(TICK_S * 1e9)):
                return
            self._write_status()

    def finish(self, **outcome: Any) -> dict[str, Any]:
        """The final state into the history (as every run's); returns that record."""
        self._state = self._final
        if self.stop_reason is None:
            self.stop_reason = self._final
        self.extra.update(outcome)
        self._record_final()
        return self._status()

    def exit_code(self) -> int:
        if isinstance(self.error, Interrupted):
            return 128 + self.error.signum
        if self._state == "failed":
            print(f"chaos-inject: {self.error}", file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK


__all__ = ["HostRun"]
