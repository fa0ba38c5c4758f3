"""Where an experiment's network faults are carried: this host (the default, a FaultSession here) or elsewhere.

The caller of the runner may hand it a :class:`FaultCarrier` (``chaos-inject run X.json --inventory hosts.yml``
hands it the fleet's, which carries each fault to the hosts of an Ansible inventory). The experiment room does
not know what is behind it: our network-fault actions (:mod:`.actions`) ask the carrier set here, if any, and
get back a :class:`CarriedFault`, which the runner stops, waits for, counts and reports like a local session.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from typing import Any, Iterator

__all__ = ["CarriedFault", "FaultCarrier", "carried_by", "current_carrier"]


class CarriedFault(ABC):
    """A fault held somewhere else: what the runner needs of a session (run id, state, activity span, counters,
    stop, wait) and a description for the journal (``describe()``: the keys of a local fault's description,
    plus ``hosts``: one row per host with its verdict)."""

    run_id: str
    state: str

    @property
    @abstractmethod
    def active_span_ns(self) -> tuple[int, int | None] | None:
        """(became active, removed or None), time.monotonic_ns; None if it never became active."""

    @property
    @abstractmethod
    def removal_started_ns(self) -> int | None:
        """When its removal began (time.monotonic_ns), None before."""

    @abstractmethod
    def counters(self) -> dict[str, dict[str, int]]:
        """Counters per rule (keys name the host too), as last reported."""

    @abstractmethod
    def stop(self, state: str = "stopped") -> None:
        """Remove the fault everywhere it is held (idempotent; never raises for a host it cannot reach)."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> None:
        """Block until the fault ended (its duration, or a stop)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """run_id, state, engine, flows, fault, direction, duration_s, counters, hosts."""


class FaultCarrier(ABC):
    """Starts an experiment's network fault somewhere else. ``fault``: the fault options as our actions take
    them (``delay``, ``loss``, ``partition``...), only those given."""

    @abstractmethod
    def start_fault(self, flows: list[str], *, duration: str, direction: str, engine: str, lease: str,
                    seed: int | None, netns: str | None, interface: str | None,
                    fault: dict[str, Any]) -> CarriedFault:
        """Return once the fault is active on every host that must hold it; raise (with nothing left on) if not."""

    def describe_plan(self, flows: list[str]) -> str:
        """For a dry run: where a fault on ``flows`` would be held."""
        return f"{', '.join(flows)}: carried by {type(self).__name__}"


_LOCK = threading.Lock()
_CARRIER: FaultCarrier | None = None


def current_carrier() -> FaultCarrier | None:
    with _LOCK:
        return _CARRIER


@contextlib.contextmanager
def carried_by(carrier: FaultCarrier | None) -> Iterator[FaultCarrier | None]:
    """Within this block our network-fault actions start their faults through ``carrier`` (None: here)."""
    global _CARRIER
    with _LOCK:
        before, _CARRIER = _CARRIER, carrier
    try:
        yield carrier
    finally:
        with _LOCK:
            _CARRIER = before
