"""Fault actions for experiment files, ours and the real Chaos Toolkit's (``"type": "python"`` providers).

Two patterns:
- *start and return* (the seed's method action + rollback): :func:`start_network_fault` applies the fault,
  returns once it is active and leaves a lease-renewing thread in this process; :func:`stop_network_fault`
  (the rollback) ends it. If the process dies, the fault ends within one lease anyway.
- *blocking*: :func:`network_delay`, :func:`network_loss`, :func:`network_partition` hold the fault for
  ``duration`` and return what it achieved. A halt or a signal stops them early (the runner stops every
  fault this process started).

Durations and percentages carry their units: ``"200ms"``, ``"10%"``. ``duration`` is mandatory: every fault
ends by itself. The ledger, lease, ``chaos-inject status / sweep / stop`` are the CLI's.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["start_network_fault", "stop_network_fault", "stop_all_faults", "network_delay", "network_loss",
           "network_partition", "network_fault"]

_LOCK = threading.Lock()
_SESSIONS: dict[str, Any] = {}      # run_id -> FaultSession started by this process, still ours to stop
_STARTED: list[Any] = []            # every session started by this process (the run's report)


def _start(flow: str | list[str], *, duration: str, netns: str | None, interface: str | None, direction: str,
           engine: str, lease: str, seed: int | None, **fault: Any):
    from .carrier import current_carrier

    carrier = current_carrier()
    if carrier is not None:          # e.g. the fleet's: the fault goes to the hosts that must hold it
        given = {k: v for k, v in fault.items() if v not in (None, False, "")}
        carried = carrier.start_fault([flow] if isinstance(flow, str) else list(flow), duration=duration,
                                      direction=direction, engine=engine, lease=lease, seed=seed, netns=netns,
                                      interface=interface, fault=given)
        register_session(carried)
        return carried
    from ..prepare import start_fault

    session = start_fault(flow, interface, duration=duration, netns=netns, direction=direction, engine=engine,
                          lease=lease, seed=seed, kind="experiment", **fault)
    register_session(session)
    return session


def _describe(session) -> dict[str, Any]:
    from .carrier import CarriedFault

    if isinstance(session, CarriedFault):
        return session.describe()
    plan = session.plan
    counters = session.counters()
    return {"run_id": session.run_id, "state": session.state, "engine": plan.engine,
            "flows": [f.text or str(f) for f in plan.flows],
            "fault": "; ".join(f.describe() for f in plan.faults), "direction": plan.direction,
            "duration_s": plan.duration_ns / 1e9,
            "counters": {str(k): v for k, v in counters.items()}}


def start_network_fault(flow: str, duration: str, delay: str | None = None, jitter: str | None = None,
                        loss: str | None = None, partition: bool = False, corrupt: str | None = None,
                        duplicate: str | None = None, netns: str | None = None, interface: str | None = None,
                        direction: str = "egress", engine: str = "auto", lease: str = "3s",
                        seed: int | None = None) -> dict[str, Any]:
    """Apply a fault on ``flow`` ("SRC->DST[/tcp|/udp]") and return once it is active.

    It stays on until ``duration`` (mandatory: the fault never outlives it) ends or
    :func:`stop_network_fault` (the rollback) stops it. Returns the run id, engine and what was applied.
    """
    session = _start(flow, duration=duration, netns=netns, interface=interface, direction=direction,
                     engine=engine, lease=lease, seed=seed, delay=delay, jitter=jitter, loss=loss,
                     partition=partition, corrupt=corrupt, duplicate=duplicate)
    return _describe(session)


def stop_network_fault(run_id: str | None = None) -> dict[str, Any]:
    """The rollback. With ``run_id``, stop that fault; without it, every fault this process started and still
    holds, as :func:`stop_all_faults` (network faults, and held host faults: a pod-failure comes back, a CPU
    stress ends), so a rollback leaves nothing of the method's on. Returns the network faults' final state
    and counters and how many host faults were ended. Stopping what already ended is not an error
    (rollbacks may run twice)."""
    if run_id is None:
        stopped, host_faults = _stop_everything("stopped")
        return {"stopped": stopped, "host_faults_ended": host_faults}
    with _LOCK:
        session = _SESSIONS.pop(run_id, None)
    if session is None:
        return {"stopped": [{"run_id": run_id, "state": "unknown (not started by this process)"}]}
    session.stop("stopped")
    return {"stopped": [_describe(session)]}


def stop_all_faults(state: str = "stopped") -> list[dict[str, Any]]:
    """Stop every fault this process started (the halt guard uses ``state="halted"``); held host faults
    (a pod-failure, a CPU stress) end now too. Returns the network faults' final state and counters."""
    return _stop_everything(state)[0]


def _stop_everything(state: str) -> tuple[list[dict[str, Any]], int]:
    import sys

    host_faults = 0
    if "chaosinject.experiment.hostactions" in sys.modules:  # not imported: no host fault was ever started
        host_faults = sys.modules["chaosinject.experiment.hostactions"].stop_all()
    with _LOCK:
        sessions = list(_SESSIONS.values())
        _SESSIONS.clear()
    out = []
    for session in sessions:
        try:
            session.stop(state)
        finally:
            out.append(_describe(session))
    return out, host_faults


def _hold(session) -> dict[str, Any]:
    try:
        session.wait()
    finally:
        with _LOCK:
            _SESSIONS.pop(session.run_id, None)
        if session.state == "running":   # interrupted while waiting: never leave it on
            session.stop("stopped")
    return _describe(session)


def network_fault(flow: str | list[str], duration: str, delay: str | None = None, jitter: str | None = None,
                  correlation: str | None = None, loss: str | None = None, partition: bool = False,
                  corrupt: str | None = None, duplicate: str | None = None, rate: str | None = None,
                  netns: str | None = None, interface: str | None = None, direction: str = "egress",
                  engine: str = "auto", seed: int | None = None) -> dict[str, Any]:
    """Any fault on ``flow`` (one or a list, e.g. ["api->db", "api2->db"]) for ``duration``; blocks and
    returns its counters (translated Chaos Mesh NetworkChaos uses this)."""
    return _hold(_start(flow, duration=duration, netns=netns, interface=interface, direction=direction,
                        engine=engine, lease="3s", seed=seed, delay=delay, jitter=jitter, correlation=correlation,
                        loss=loss, partition=partition, corrupt=corrupt, duplicate=duplicate, rate=rate))


def network_delay(flow: str, delay: str, duration: str, jitter: str | None = None, netns: str | None = None,
                  interface: str | None = None, direction: str = "egress", engine: str = "auto",
                  seed: int | None = None) -> dict[str, Any]:
    """Delay ``flow`` by ``delay`` (e.g. "200ms", optional ``jitter``) for ``duration``; blocks."""
    return _hold(_start(flow, duration=duration, netns=netns, interface=interface, direction=direction,
                        engine=engine, lease="3s", seed=seed, delay=delay, jitter=jitter))


def network_loss(flow: str, loss: str, duration: str, netns: str | None = None, interface: str | None = None,
                 direction: str = "egress", engine: str = "auto", seed: int | None = None) -> dict[str, Any]:
    """Drop ``loss`` (e.g. "10%") of ``flow``'s packets for ``duration``; blocks."""
    return _hold(_start(flow, duration=duration, netns=netns, interface=interface, direction=direction,
                        engine=engine, lease="3s", seed=seed, loss=loss))


def network_partition(flow: str, duration: str, netns: str | None = None, interface: str | None = None,
                      direction: str = "both", engine: str = "auto") -> dict[str, Any]:
    """Drop every packet of ``flow`` (both directions by default) for ``duration``; blocks."""
    return _hold(_start(flow, duration=duration, netns=netns, interface=interface, direction=direction,
                        engine=engine, lease="3s", seed=None, partition=True))


def register_session(session) -> None:
    """A session started elsewhere for this run (a translated tc netem): stopped and reported like ours."""
    with _LOCK:
        _SESSIONS[session.run_id] = session
        _STARTED.append(session)


def active_sessions() -> list[Any]:
    with _LOCK:
        return list(_SESSIONS.values())


def started_sessions(since: int = 0) -> list[Any]:
    """Sessions started by this process, from the ``since``-th on (``session_mark()`` taken earlier)."""
    with _LOCK:
        return list(_STARTED[since:])


def session_mark() -> int:
    """A mark for ``started_sessions(since=...)``: a run reports only the faults it started itself, not those
    of earlier runs in the same process (a schedule, a test suite, a notebook)."""
    with _LOCK:
        return len(_STARTED)


def describe_session(session) -> dict[str, Any]:
    return _describe(session)
