"""What every run shares, a network fault (``session.FaultSession``) or a host fault (``hostrun.HostRun``): its
id and kind, the status file ``chaos-inject status`` lists, stop requests from another process (``chaos-inject
stop RUN_ID``), the heartbeat a remote controller (the fleet) keeps alive, and the final record in the history.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from .kernel.ledger import record_final

log = logging.getLogger(__name__)
STOP_POLL_NS = 100_000_000   # how often a run looks for a stop request from another process
STOP_STATES = ("stopped", "halted")


class RunBase:
    """What every run shares, a network fault (FaultSession) or a host fault (the CPU stress and process kill
    commands): its id and kind, the status file `chaos-inject status` lists, stop requests from another process
    (`chaos-inject stop RUN_ID`) and the final record in the history. A subclass says what its fault is
    (``_details``) and owns ``self._owner``, the run's KernelOwner."""

    def __init__(self, kind: str, *, extra_status: dict[str, Any] | None = None,
                 clock: Callable[[], int] = time.monotonic_ns):
        self.kind = kind
        self._clock = clock
        self._extra_status = dict(extra_status or {})
        self._state = "pending"
        self._owner: Any = None
        self._stop = threading.Event()
        self._stop_state = "stopped"
        self._heartbeat: tuple[str, int] | None = None   # (file, timeout ns): see _heartbeat_lost

    @property
    def run_id(self) -> str:
        raise NotImplementedError

    @property
    def state(self) -> str:
        return self._state

    def _details(self) -> dict[str, Any]:
        """The fault's part of the status: engine, flows, fault, started, elapsed_s, remaining_s, duration_s,
        counters, rules, stop_reason, error."""
        raise NotImplementedError

    def _status(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "pid": os.getpid(), "kind": self.kind, "state": self._state,
                "updated": time.time(), **self._details(), **self._extra_status}

    def _write_status(self) -> None:
        self._owner.ledger.write_status(self._status())

    def _record_final(self) -> None:
        try:
            record_final(self._status())
        except OSError as exc:
            log.warning("run %s: could not record its final state: %s", self.run_id, exc)

    def _wait_tick(self, wait: Callable[[float], bool], until_ns: int, poll_ns: int = STOP_POLL_NS) -> bool:
        """Wait until ``until_ns``; True if ``wait`` said so (stop(), the fault ended) or `chaos-inject stop
        RUN_ID` asked from another process (its request file is looked at every ``poll_ns``)."""
        while True:
            left = until_ns - self._clock()
            if left <= 0:
                return False
            if wait(min(left, poll_ns) / 1e9):
                return True
            requested = self._owner.ledger.stop_requested()
            if requested:
                self._stop_state = requested if requested in STOP_STATES else "stopped"
                self._stop.set()
                return True
            if self._heartbeat_lost():
                self._stop_state = "halted"
                self._extra_status["halt"] = "heartbeat lost: the controller stopped renewing it"
                log.warning("run %s: heartbeat %s not renewed for %.1fs: ending the fault", self.run_id,
                            self._heartbeat[0], self._heartbeat[1] / 1e9)
                self._stop.set()
                return True

    def _heartbeat_lost(self) -> bool:
        """A dead-man switch for a remote controller (the fleet): the run ends when the heartbeat file's mtime is
        older than its timeout (wall clock: another process touches it), or the file is gone."""
        if self._heartbeat is None:
            return False
        path, timeout_ns = self._heartbeat
        try:
            age_ns = time.time_ns() - os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return True
        return age_ns > timeout_ns
