"""Did the method's faults take effect, and when: the no-effect check (principle 1: a fault that did not take
effect is a failed experiment) and the fault phase's true edges (onset when the first fault became active,
recovery from when the faults were removed), read from this run's fault sessions."""

from __future__ import annotations

import time
from typing import Any

from .carrier import CarriedFault

__all__ = ["no_effect", "active_spans", "faults_removal_ns", "fault_starts_when_active"]


def no_effect(journal: dict, sessions) -> list[str]:
    """What the method meant to inject and did not: a method action that failed, a process action that
    exited non-zero (chaoslib counts it succeeded), a fault of this run (``sessions``) whose kernel counters
    show no matched packet over its active time (an engine that keeps no counters is not judged)."""
    out = []
    for run in journal["run"]:
        act = run["activity"]
        if act.get("type") != "action":
            continue
        name = act.get("name")
        output = run.get("output")
        if run.get("status") == "failed":
            out.append(f"action {name!r} failed")
        elif act.get("provider", {}).get("type") == "process" and isinstance(output, dict) and \
                output.get("status") not in (0, None):
            out.append(f"action {name!r} exited with status {output['status']}")
    for s in sessions:
        if getattr(s, "active_span_ns", None) is None:
            continue                       # never active: its action failed above
        carried = isinstance(s, CarriedFault)
        if carried and s.state == "failed":   # e.g. a host of the fleet lost mid-fault: not held as asked there
            out.append(f"fault {s.run_id} failed: {s.describe().get('error') or 'see its hosts'}")
            continue
        counters = s.counters()
        rules = [c for c in counters.values() if isinstance(c, dict) and "matched_packets" in c]
        if rules and not any(c["matched_packets"] for c in rules):
            what = s.describe()["fault"] if carried else "; ".join(f.describe() for f in s.plan.faults)
            out.append(f"fault {s.run_id} ({what}) matched no packet")
    return out


def active_spans(sessions) -> list[tuple[int, int | None, Any]]:
    """(activated, removed or None, session) of the sessions that became active."""
    return [(span[0], span[1], s) for s in sessions if (span := getattr(s, "active_span_ns", None)) is not None]


def faults_removal_ns(phases, sessions) -> tuple[int, int] | None:
    """(removal began, removed) for this run's faults (``sessions``), if all were removed before now: a method
    that stops its own fault and then waits (for a metrics window to pass) is in recovery during that wait,
    not in the fault phase. The fault phase ends when the last removal began, the recovery starts when it
    ended."""
    now = time.monotonic_ns()
    spans = active_spans(sessions)
    if phases.starts.get("fault") is None or not spans or any(end is None for _, end, _ in spans):
        return None
    removed = min(max(end for _, end, _ in spans), now)
    began = max(getattr(s, "removal_started_ns", None) or end for _, end, s in spans)
    return min(began, removed), removed


def fault_starts_when_active(phases, sessions) -> dict | None:
    """Move the fault phase's start from the method's start to when this run's first fault (of ``sessions``)
    became active (symmetric to the recovery starting when the faults were removed). The baseline still ends
    at the method's start: samples in between (earlier method steps, the engine applying the fault) are in no
    phase, neither steady nor faulted, and are not judged. Returns that window, or None (no fault of ours
    became active, e.g. a method of host actions only: the fault phase starts with the method)."""
    start = phases.starts.get("fault")
    spans = active_spans(sessions)
    if start is None or not spans:
        return None
    onset = min(begin for begin, _, _ in spans)
    if onset <= start:
        return None
    phases.starts["fault"] = onset     # (Phases has no "move": its windows are read from starts/ends)
    return {"start_ns": start, "end_ns": onset, "seconds": (onset - start) / 1e9,
            "samples": "in no phase (not judged): between the method's start and the fault's activation"}
