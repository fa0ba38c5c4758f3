"""Run a plan in the foreground: apply through an engine, renew the lease until the deadline, undo, report.

The mechanism is injector.session.FaultSession (shared with --detach and the library); this is its blocking,
signal-handling form as the CLI uses it.
"""

from __future__ import annotations

import time
from typing import Callable

from .engines.base import Engine
from .plan import Plan
from .session import MAX_TICK_NS, FaultSession, Progress, RunResult, lease_expiry

__all__ = ["MAX_TICK_NS", "Progress", "RunResult", "lease_expiry", "run_plan"]


def run_plan(plan: Plan, engine: Engine, *, on_progress: Callable[[Progress], None] | None = None,
             clock: Callable[[], int] = time.monotonic_ns, sleep: Callable[[float], None] = time.sleep,
             handle_signals: bool = True, kind: str = "cli") -> RunResult:
    """Apply ``plan`` for its duration. Every kernel object is gone when this returns or raises."""
    session = FaultSession(plan, engine, kind=kind, on_progress=on_progress, clock=clock, sleep=sleep)
    return session.run(handle_signals=handle_signals)
