"""Remove what dead runs left behind, from their ledgers. Live runs are left alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .ledger import Ledger
from .undo import undo_entry

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    swept_runs: list[str] = field(default_factory=list)
    removed: list[dict] = field(default_factory=list)
    live_runs: list[str] = field(default_factory=list)
    failures: list[tuple[str, dict, str]] = field(default_factory=list)


def sweep(include_live: bool = False) -> SweepReport:
    report = SweepReport()
    for ledger in Ledger.all():
        if ledger.owner_alive and not include_live:
            report.live_runs.append(ledger.run_id)
            continue
        for entry in reversed(list(ledger.entries)):
            try:
                undo_entry(entry)
                ledger.remove_entry(entry)
                report.removed.append(entry)
            except Exception as exc:
                report.failures.append((ledger.run_id, entry, str(exc)))
        if not ledger.entries:
            ledger.delete()
            report.swept_runs.append(ledger.run_id)
    return report
