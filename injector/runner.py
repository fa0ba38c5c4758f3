"""Run a plan in the foreground: apply through an engine, renew the lease until the deadline, undo, report.

The mechanism is chaosinject.session.FaultSession (shared with --detach and the library); this is its blocking,
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
             handle_signals: bool = True, kind: str = "cli", extra_status: dict | None = None) -> RunResult:
    """Apply ``plan`` for its duration. Every kernel object is gone when this returns or raises.

    ``extra_status`` goes into every status write (its values may be updated in place meanwhile, e.g. the
    recording's live figures that `status` shows)."""
    session = FaultSession(plan, engine, kind=kind, on_progress=on_progress, clock=clock, sleep=sleep,
                           extra_status=extra_status)
    return session.run(handle_signals=handle_signals)
