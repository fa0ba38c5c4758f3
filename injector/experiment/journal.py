"""An experiment run's journal (Chaos Toolkit's ``journal.json`` where fields overlap, our ``chaos-inject``
block beside them) and the run's JSON files, all written through :func:`chaosinject.files.write_json_atomic`."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..files import jsonable, write_json_atomic
from .model import Experiment, thaw

__all__ = ["now_iso", "jsonable", "write_json", "new_journal", "declared_verdict_failed"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def write_json(path: Path, data: Any) -> None:
    """A journal or status file: atomic (rename after fsync), keys in the order they were set."""
    write_json_atomic(path, jsonable(data), dir_mode=0o755, sort_keys=False)


def new_journal(exp: Experiment) -> dict[str, Any]:
    """The journal before the run: chaoslib's fields, nothing run yet."""
    return {
        "chaoslib-version": None, "platform": platform.platform(), "node": platform.node(),
        "experiment": thaw(exp.document), "start": now_iso(), "status": None, "deviated": False,
        "steady_states": {"before": None, "after": None, "during": []}, "run": [], "rollbacks": [],
    }


def declared_verdict_failed(journal: dict, add_reason: Callable[[str], None]) -> bool:
    """The experiment's own ``verdict`` block is its question, so a run that completed answers to it too:
    violated -> deviated (as an after-hypothesis not met; Chaos Toolkit: deviated -> exit 1); inconclusive,
    or not judged at all (no samples were recorded), is no success either. True if it did not hold; then
    ``add_reason`` is handed why."""
    ci = journal["chaos-inject"]
    outcome = ci.get("verdict")
    if outcome == "held":
        return False
    phases = ", ".join(f"{p} {o}" for p, o in (ci.get("verdict_phases") or {}).items())
    if outcome == "violated":
        journal["deviated"] = True
        why = f"the recorded samples violate the experiment's verdict ({phases})"
    elif outcome is None:
        why = "the experiment's verdict was not judged: " + (
            f"writing the run directory failed ({ci['report_error']})" if ci.get("report_error") else
            "no samples were recorded (it needs a run directory and a load, a record block or a recorder)")
    else:
        why = f"the experiment's verdict is {outcome.upper()} ({phases}): the steady state was not shown to hold"
    add_reason(why)
    return True
