"""Public context managers: the seed's ``network_latency``/``packet_loss``/``kill_process`` signatures, kept
compatible, with per-flow options and the CLI's guarantees (ledger ownership, lease, rollback on every exit).

    from chaosinject import network_latency
    with network_latency("eth0", latency_ms=3000):            # the seed's call: every packet leaving eth0
        time.sleep(30)
    with network_latency(flow="api->db", latency_ms=200, jitter_ms=0, duration="60s") as fault:
        ...
        fault.counters()

Duration: defaulted but bounded. Without ``duration`` a fault lasts at most DEFAULT_DURATION (5 minutes): it
ends by itself then, even if the block is still running (a warning says so at the end of the block). Pass
``duration`` ('60s', or a timedelta) to choose the bound. An exception inside the block still rolls back.

Signals: the library installs no signal handlers; the caller owns them. If the process is killed, the network
faults switch themselves off within one lease (default 3 s) and ``chaos-inject sweep`` removes what is left;
CPU stress workers stop when their parent dies; a killed process is restarted only by a live caller.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
from typing import Iterator, Sequence

from .errors import InvalidSpec
from .hostfaults.cpu import CpuStress
from .hostfaults.process import KillResult, ProcessKill
from .prepare import start_fault
from .session import FaultSession
from .spec.units import parse_duration_s

log = logging.getLogger(__name__)
DEFAULT_DURATION = "300s"

__all__ = ["DEFAULT_DURATION", "cpu_stress", "kill_process", "network_latency", "packet_loss", "partition"]


def _bounded(duration) -> object:
    if duration is None:
        log.info("no duration given: the fault ends after at most %s", DEFAULT_DURATION)
        return DEFAULT_DURATION
    return duration


def _ms(value, field: str, *, allow_zero: bool = False) -> datetime.timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidSpec("must be a positive number of milliseconds", text=repr(value), field=field)
    return datetime.timedelta(milliseconds=value)


@contextlib.contextmanager
def _session(session: FaultSession) -> Iterator[FaultSession]:
    with session:
        yield session
        if session.state == "completed":
            log.warning("run %s: the block outlived the fault's duration; the fault had already ended",
                        session.run_id)


def network_latency(interface: str | None = None, latency_ms: float | None = None, jitter_ms: float = 10, *,
                    flow: str | list[str] | None = None, duration=None, direction: str = "egress",
                    distribution: str | None = None, engine: str = "auto", netns: str | None = None,
                    inventory=None, seed: int | None = None, lease="3s", percent=None):
    """Add ``latency_ms`` (+- ``jitter_ms``, the seed's default 10) to a flow, or to all of ``interface``."""
    if latency_ms is None:
        raise InvalidSpec("latency_ms is required", field="latency_ms")
    session = start_fault(flow, interface, delay=_ms(latency_ms, "latency_ms"),
                          jitter=_ms(jitter_ms, "jitter_ms", allow_zero=True) if jitter_ms else None,
                          distribution=distribution, duration=_bounded(duration), direction=direction,
                          engine=engine, netns=netns, inventory=inventory, seed=seed, lease=lease, percent=percent)
    return _session(session)


def packet_loss(interface: str | None = None, loss_percent: float | None = None, *,
                flow: str | list[str] | None = None, duration=None, direction: str = "egress",
                engine: str = "auto", netns: str | None = None, inventory=None, seed: int | None = None,
                lease="3s", percent=None):
    """Drop ``loss_percent`` % of a flow's packets (or of everything leaving ``interface``)."""
    if isinstance(loss_percent, bool) or not isinstance(loss_percent, (int, float)) or not 0 < loss_percent <= 100:
        raise InvalidSpec("loss_percent must be a number in (0, 100]", text=repr(loss_percent), field="loss_percent")
    session = start_fault(flow, interface, loss=f"{loss_percent}%", duration=_bounded(duration),
                          direction=direction, engine=engine, netns=netns, inventory=inventory, seed=seed,
                          lease=lease, percent=percent)
    return _session(session)


def partition(interface: str | None = None, *, flow: str | list[str] | None = None, duration=None,
              direction: str = "egress", engine: str = "auto", netns: str | None = None, inventory=None,
              seed: int | None = None, lease="3s", percent=None):
    """Drop every packet of a flow (``direction="both"``: the replies too)."""
    session = start_fault(flow, interface, partition=True, duration=_bounded(duration), direction=direction,
                          engine=engine, netns=netns, inventory=inventory, seed=seed, lease=lease, percent=percent)
    return _session(session)


@contextlib.contextmanager
def kill_process(service_name: str | None = None, *, pid: int | None = None, name: str | None = None,
                 restart_command: str | Sequence[str] | None = None, grace_s: float = 5.0, mode: str = "single",
                 seed: int | None = None, duration=None) -> Iterator[KillResult]:
    """Stop a systemd unit (the seed's call) or processes by pid/name; restart when the block ends.

    With ``duration``, the restart happens at the earlier of the block's end and the duration."""
    fault = ProcessKill(service_name, pid=pid, name=name, restart_command=restart_command, grace_s=grace_s,
                        mode=mode, seed=seed)
    timer = None
    if duration is not None:  # restore() runs once, whichever of the timer and the block's end comes first
        timer = threading.Timer(parse_duration_s(duration, field="duration"), fault.restore)
        timer.daemon = True
    with fault as result:
        if timer is not None:
            timer.start()
        try:
            yield result
        finally:
            if timer is not None:
                timer.cancel()


@contextlib.contextmanager
def cpu_stress(workers: int = 1, load: float = 80, duration=None) -> Iterator[CpuStress]:
    """``workers`` processes each at ``load`` % of one CPU (Chaos Mesh StressChaos stressors.cpu)."""
    seconds = parse_duration_s(_bounded(duration), field="duration")
    with CpuStress(workers, load, seconds) as stress:
        yield stress
