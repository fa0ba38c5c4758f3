"""Probes for experiment files, ours and the real Chaos Toolkit's (``"type": "python"`` providers)."""

from __future__ import annotations

import time
from typing import Any

from ..httpclient import KeepAlive

__all__ = ["http_latency_samples", "active_faults", "fault_counters"]


def http_latency_samples(url: str, count: int = 100, timeout: float = 1.0, interval: float = 0.0
                         ) -> dict[str, Any]:
    """GET ``url`` ``count`` times over one kept-alive connection; returns ``{"latency_ns": [...], "ok": [...],
    "status": [...]}`` (ok: a status below 500 within ``timeout`` seconds for the whole request; status 0: no
    answer). Feed it to a ``statistical`` tolerance."""
    if not 0 < count <= 100_000:
        raise ValueError(f"count must be in (0, 100000], got {count}")
    client = KeepAlive(url, timeout)
    lat, ok, status = [], [], []
    try:
        for _ in range(count):
            t0 = time.monotonic_ns()
            reply = client.get()
            lat.append(time.monotonic_ns() - t0)
            ok.append(reply.status is not None and reply.status < 500)
            status.append(reply.status or 0)
            if interval > 0:
                time.sleep(interval)
    finally:
        client.close()
    return {"latency_ns": lat, "ok": ok, "status": status}


def active_faults() -> list[dict[str, Any]]:
    """The faults this process started that are still on (run id, flows, fault, counters)."""
    from .actions import active_sessions, describe_session

    return [describe_session(s) for s in active_sessions()]


def fault_counters(run_id: str | None = None) -> dict[str, Any]:
    """Kernel counters of the faults this process started (one run, or all), per run id."""
    from .actions import describe_session, started_sessions

    return {s.run_id: describe_session(s)["counters"] for s in started_sessions()
            if run_id is None or s.run_id == run_id}
