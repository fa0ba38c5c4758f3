"""Remove what dead runs left behind, from their ledgers. Live runs are left alone.

A swept run's final state goes into the history (``failed``, "owner died; swept"), so `status` shows how it
ended; then every marked clsact (kernel/clsact.py) that nothing uses any more is removed. A fleet controller's
ledger (kind ``fleet``, fleet/ledger.py) names other hosts: a local sweep leaves it and says so; ``sweep
--inventory`` clears it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import clsact
from .ledger import (Ledger, describe, final_record, history_dir, ledger_dir,  # noqa: F401  (describe, ledger_dir,
                     orphaned_run_files, record_final, stray_files)          # orphaned_run_files: from here too)
from .undo import undo_entry

log = logging.getLogger(__name__)

SWEPT_ERROR = "owner died; swept"
FLEET_KIND = "fleet"   # fleet/ledger.py's KIND (the kernel floor does not import the fleet's)


@dataclass
class SweepReport:
    swept_runs: list[str] = field(default_factory=list)
    removed: list[dict] = field(default_factory=list)
    live_runs: list[str] = field(default_factory=list)
    failures: list[tuple[str, dict, str]] = field(default_factory=list)
    clsacts_kept: list[dict] = field(default_factory=list)   # marked clsacts still in use, with the reason
    fleet_runs: list[dict] = field(default_factory=list)     # dead fleet controllers' ledgers: sweep --inventory's


def leftovers() -> list[dict[str, Any]]:
    """Dead runs' ledgers and what `sweep` would do with each, last-made first (nothing is changed)."""
    out = []
    for ledger in Ledger.all():
        if ledger.owner_alive:
            continue
        out.append({"run_id": ledger.run_id, "pid": ledger.pid, "kind": ledger.meta.get("kind", "cli"),
                    "actions": [{"entry": e, "action": describe(e)} for e in reversed(ledger.entries)]})
    return out


def sweep(include_live: bool = False) -> SweepReport:
    report = SweepReport()
    for ledger in Ledger.all():
        if ledger.owner_alive and not include_live:
            report.live_runs.append(ledger.run_id)
            continue
        if ledger.meta.get("kind") == FLEET_KIND:     # other hosts' faults: nothing here to undo
            report.fleet_runs.append({"run_id": ledger.run_id, "inventory": ledger.meta.get("inventory"),
                                      "hosts": [e.get("host") for e in ledger.entries]})
            continue
        last_status = ledger.read_status()  # read before delete() removes it
        for entry in reversed(list(ledger.entries)):
            try:
                outcome = undo_entry(entry)
                ledger.remove_entry(entry)
                if not isinstance(outcome, clsact.Released) or outcome.removed:
                    report.removed.append(entry)  # a shared clsact another user still has is not removed
            except Exception as exc:
                report.failures.append((ledger.run_id, entry, str(exc)))
        if not ledger.entries:
            ledger.delete()
            report.swept_runs.append(ledger.run_id)
            _record_swept(ledger, last_status)
    for marker, outcome in clsact.sweep_markers():
        where = {"kind": "clsact", "netns": marker.get("netns"), "ifname": marker["ifname"],
                 "ifindex": marker["ifindex"]}
        if outcome.removed:
            report.removed.append(where)
        elif outcome.in_use:
            report.clsacts_kept.append({**where, "why": outcome.reason})
    for stray in stray_files():   # a writer killed between write and rename; a kill inside Ledger.delete()
        path = Path(stray["path"])
        try:
            path.unlink()
            report.removed.append({"kind": stray["kind"], "path": str(path)})
        except FileNotFoundError:
            pass
        except OSError as exc:
            report.failures.append(("", {"kind": stray["kind"], "path": str(path)}, str(exc)))
    return report


def _record_swept(ledger: Ledger, last_status: dict[str, Any] | None) -> None:
    """The final state of a run whose owner died: what its last status said, ended as failed."""
    if ledger.meta.get("kind") in ("recording", "probe", "demo", "vm-lab", "lab"):
        return  # a recorder's own ledger (clsact fallback), the capability probe's, the demos', the labs': not runs
    if (final_record(ledger.run_id) or {}).get("state"):
        return  # the owner recorded how it ended before it died (e.g. a failed undo kept the ledger)
    status = dict(last_status or {})
    active = bool(last_status)  # the status file appears once the fault is active
    status.update({
        "run_id": ledger.run_id, "pid": ledger.pid, "kind": status.get("kind") or ledger.meta.get("kind", "cli"),
        "state": "failed", "stop_reason": "owner-died", "swept": time.time(), "updated": time.time(),
        "error": SWEPT_ERROR if active else f"{SWEPT_ERROR} (it died before the fault was active)",
        "last_state": (last_status or {}).get("state", "pending"),
    })
    status.setdefault("flows", ledger.meta.get("flows"))
    status.setdefault("engine", ledger.meta.get("engine"))
    try:
        record_final(status)
    except OSError as exc:
        log.warning("run %s: could not record its final state: %s", ledger.run_id, exc)
