"""Run a plan: apply through an engine, renew the lease until the deadline, undo everything, report."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from .engines.base import Engine
from .errors import Interrupted
from .kernel.owner import KernelOwner
from .plan import Plan

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
    stop_reason: str = "completed"      # completed | SIGINT | SIGTERM | SIGHUP
    started_wall: float = 0.0
    elapsed_ns: int = 0

    @property
    def interrupted(self) -> bool:
        return self.stop_reason != "completed"


def lease_expiry(now_ns: int, lease_ns: int, deadline_ns: int) -> int:
    """The rule expiry to write now: one lease ahead, never past the hard deadline."""
    return min(now_ns + lease_ns, deadline_ns)


def run_plan(plan: Plan, engine: Engine, *, on_progress: Callable[[Progress], None] | None = None,
             clock: Callable[[], int] = time.monotonic_ns, sleep: Callable[[float], None] = time.sleep,
             handle_signals: bool = True) -> RunResult:
    """Apply ``plan`` for its duration. Every kernel object is gone when this returns or raises."""
    engine.check(plan)
    result = RunResult(plan=plan, started_wall=time.time())
    tick_ns = min(plan.lease_ns // 3, MAX_TICK_NS)
    try:
        with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=handle_signals) as owner:
            start = clock()
            deadline = start + plan.duration_ns
            engine.apply(plan, owner, lease_expiry(start, plan.lease_ns, deadline))
            try:
                while True:
                    now = clock()
                    if now >= deadline:
                        break
                    sleep(min(tick_ns, deadline - now) / 1e9)
                    now = clock()
                    engine.renew(lease_expiry(now, plan.lease_ns, deadline))
                    result.counters = engine.counters()
                    result.elapsed_ns = now - start
                    owner.ledger.write_status(_status(plan, result, deadline - now))
                    if on_progress:
                        on_progress(Progress(plan.run_id, result.elapsed_ns, plan.duration_ns, result.counters))
            finally:
                # last word from the kernel before the objects go
                try:
                    result.counters = engine.counters()
                except Exception:
                    pass
                result.elapsed_ns = min(clock() - start, plan.duration_ns)
    except Interrupted as exc:
        result.stop_reason = _signal_name(exc.signum)
    return result


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def _status(plan: Plan, result: RunResult, remaining_ns: int) -> dict:
    return {"run_id": plan.run_id, "pid": os.getpid(), "engine": plan.engine,
            "flows": [f.text or str(f) for f in plan.flows], "fault": "; ".join(f.describe() for f in plan.faults),
            "direction": plan.direction, "started": result.started_wall, "updated": time.time(),
            "elapsed_s": result.elapsed_ns / 1e9, "remaining_s": max(0, remaining_ns) / 1e9,
            "counters": {str(k): v for k, v in result.counters.items()},
            "rules": plan.to_dict()["rules"]}
