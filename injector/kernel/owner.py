"""KernelOwner: the one object that owns every kernel object a run creates.

Each object is recorded in the run ledger *before* it is created, and undone last-in-first-out on normal end,
exception, SIGINT, SIGTERM or SIGHUP. What the run did not create is never touched. If the process dies
anyway (SIGKILL), the ledger lets `chaos-inject sweep` finish the job, and rule leases have already switched
the fault off inside the BPF program.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable, TypeVar

from .. import crashpoints
from ..errors import CleanupFailed, Interrupted
from .ledger import Ledger
from .undo import undo_entry

log = logging.getLogger(__name__)
T = TypeVar("T")
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class KernelOwner:
    def __init__(self, run_id: str, meta: dict[str, Any] | None = None, *, handle_signals: bool = True):
        self.ledger = Ledger(run_id=run_id, meta=dict(meta or {}))
        self._stack: list[tuple[dict[str, Any] | None, Callable[[], None] | None]] = []
        self._handle_signals = handle_signals and threading.current_thread() is threading.main_thread()
        self._previous_handlers: dict[int, Any] = {}
        self._deferring = False  # inside create() or close(): a signal waits until the ledger is consistent
        self.pending_signal: int | None = None

    @property
    def run_id(self) -> str:
        return self.ledger.run_id

    # -- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> "KernelOwner":
        if self._handle_signals:
            for signum in HANDLED_SIGNALS:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        self.ledger.save()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        finally:
            self._restore_signals()
        if self.pending_signal is not None and exc is None:
            raise Interrupted(self.pending_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._deferring:
            self.pending_signal = signum  # finish the change (or the undoing) first; act afterwards
            return
        raise Interrupted(signum)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    # -- ownership ---------------------------------------------------------------------------------------
    def create(self, entry: dict[str, Any], make: Callable[[], T]) -> T:
        """Record ``entry`` in the ledger, then run ``make`` (one atomic netlink change: if it fails,
        nothing was created, and undoing could hit an object someone else made meanwhile)."""
        self._deferring = True
        try:
            self.ledger.append(entry)
            try:
                with crashpoints.step(f"create {entry['kind']}"):
                    result = make()
            except BaseException:
                self.ledger.remove_entry(entry)
                raise
            self._stack.append((entry, None))
        finally:
            self._deferring = False
        if self.pending_signal is not None:
            signum, self.pending_signal = self.pending_signal, None
            raise Interrupted(signum)  # the object is owned now: unwinding will undo it
        return result

    def callback(self, undo: Callable[[], None]) -> None:
        """An in-process resource (e.g. a loaded BPF object) released in LIFO order with the rest."""
        self._stack.append((None, undo))

    def close(self) -> None:
        """Undo everything, last first. Every undo is attempted even if some fail."""
        self._deferring = True
        failures: list[tuple[dict, BaseException]] = []
        try:
            while self._stack:
                entry, undo = self._stack.pop()
                try:
                    if entry is not None:
                        with crashpoints.step(f"undo {entry['kind']}"):
                            undo_entry(entry)
                        self.ledger.remove_entry(entry)
                    elif undo is not None:
                        with crashpoints.step("release in-process object"):
                            undo()
                except Exception as exc:  # keep going: one failed undo must not strand the rest
                    log.error("undo failed for %s: %s", entry or undo, exc)
                    failures.append((entry or {"kind": "callback"}, exc))
            if failures:
                raise CleanupFailed(f"{len(failures)} object(s) could not be removed; the ledger "
                                    f"{self.ledger.path} keeps them for `chaos-inject sweep`", failures)
            self.ledger.delete()
        finally:
            self._deferring = False
