"""A run's phases as the verdict takes them: per-phase latencies and request outcomes in time order
(:class:`PhaseData`), the recovery's settle window and time to recover (:class:`Recovery`), and
:func:`phases_from_run`, which builds them from a loaded run directory. Judging them is
:func:`chaosinject.analysis.evaluate` (verdict.py, with the checks in checks.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._types import InvalidInput

__all__ = ["PHASES", "PhaseData", "Recovery", "phases_from_run"]

PHASES: tuple[str, ...] = ("baseline", "fault", "recovery")


@dataclass(frozen=True)
class Recovery:
    """The recovery's first moments, from :func:`phases_from_run`: the settle window left out of the recovery's
    steady-state checks, and the time to recover.

    ``start_ns``: the recovery's start (its ``meta.json`` window: when the fault's removal finished; None if the
    run has no recovery window). ``settle_ns``: the declared settle time; samples with ``start_ns <= t_ns <
    start_ns + settle_ns`` are the ``excluded_*`` ones (``excluded_samples``: latency samples of the judged
    source). ``requests``/``errors``: every request of the recovery phase, the settle window included.
    ``last_error_ns``: ``t_ns`` (the request's start) of its last failed request, None if none failed.
    """

    start_ns: int | None
    settle_ns: int = 0
    excluded_samples: int = 0
    excluded_requests: int = 0
    excluded_errors: int = 0
    requests: int = 0
    errors: int = 0
    last_error_ns: int | None = None
    tail_start_ns: int | None = None   # the recovery's last third (by time, to its last request): from here
    tail_requests: int = 0
    tail_errors: int = 0

    # a recovery still failing at the end: at least this many requests in its last third, half or more failed
    METASTABLE_MIN_REQUESTS = 10
    METASTABLE_ERROR_SHARE = 0.5

    @property
    def metastable(self) -> bool:
        """The service still failed at the end of the recording, long after the fault was removed: half or more
        of the requests in the recovery's last third failed (and there were at least 10). Not a fault that
        never ended (the recovery starts once the fault's removal finished): a failure the service keeps up by
        itself under its load, a metastable failure."""
        return (self.tail_requests >= self.METASTABLE_MIN_REQUESTS
                and self.tail_errors >= self.METASTABLE_ERROR_SHARE * self.tail_requests)

    def metastable_text(self) -> str:
        if not self.metastable or self.start_ns is None or self.tail_start_ns is None:
            return ""
        return (f"METASTABLE FAILURE: the fault was removed, yet {self.tail_errors} of {self.tail_requests} "
                f"requests still failed in the recovery's last third (from {(self.tail_start_ns - self.start_ns) / 1e9:.1f} s "
                f"after the removal): the service did not come back by itself (overload kept up by its own load, "
                f"not the fault)")

    @property
    def time_to_recover_ns(self) -> int | None:
        """From the recovery's start to the start of its last failed request (0 if that one started
        earlier, e.g. labelled at the boundary); None with no failed request or no known start."""
        if self.last_error_ns is None or self.start_ns is None:
            return None
        return max(0, int(self.last_error_ns) - int(self.start_ns))

    def settle_text(self) -> str:
        if self.settle_ns <= 0:
            return ""
        extra = (f", {self.excluded_samples} latency samples" if self.excluded_samples != self.excluded_requests
                 else "")
        return (f"first {_secs(self.settle_ns)} after the fault's removal not judged: {self.excluded_requests} "
                f"requests, {self.excluded_errors} errors{extra}")

    def recover_text(self) -> str:
        """"time to recover ..." when the recovery has request samples, else ""."""
        if self.requests == 0:
            return ""
        ttr = self.time_to_recover_ns
        if self.metastable:
            return self.metastable_text() + f" ({self.errors} of {self.requests} recovery requests failed)"
        if ttr is None:
            return f"time to recover: no error in recovery ({self.requests} requests)"
        return (f"time to recover: {ttr / 1e9:.3f} s (the last failed request of the recovery started "
                f"{ttr / 1e9:.3f} s after the fault's removal; {self.errors} of {self.requests} requests failed)")

    def to_record(self) -> dict:
        ttr = self.time_to_recover_ns
        return {"start_ns": self.start_ns, "settle_ns": self.settle_ns, "settle_s": self.settle_ns / 1e9,
                "excluded": {"samples": self.excluded_samples, "requests": self.excluded_requests,
                             "errors": self.excluded_errors},
                "requests": self.requests, "errors": self.errors, "last_error_ns": self.last_error_ns,
                "time_to_recover_s": None if ttr is None else ttr / 1e9,
                "tail": {"start_ns": self.tail_start_ns, "requests": self.tail_requests, "errors": self.tail_errors},
                "metastable": self.metastable,
                "settle_text": self.settle_text(), "recover_text": self.recover_text()}


def _secs(ns: int) -> str:
    return f"{ns / 1e9:g} s"


@dataclass(frozen=True)
class PhaseData:
    """Latency samples (any unit consistent with the spec; ns for runs) and request outcome counts.
    ``recovery``: for the recovery phase of a run, what its settle window left out and the time to recover."""

    latencies: Any
    errors: int = 0
    requests: int = 0
    recovery: Recovery | None = None
    ordered: bool = True          # latencies in time order (False: pooled samples, dependence not estimable)
    error_flags: Any = None       # per request in time order, True = failed (None: counts only)



def phases_from_run(run: Any, *, source: str | None = None, flow: str | None = None,
                    settle_ns: int = 0) -> dict[str, PhaseData]:
    """Per-phase latencies (ns) and request error counts from a loaded run directory.

    ``source``: which latency samples to judge ("request", "rtt" or "oneway"); by default "request" if the
    run has any, else "rtt", else "oneway". Errors/requests always come from ``source == "request"`` rows.

    ``settle_ns``: recovery samples with ``t_ns < start + settle_ns`` (start: the recovery window's
    ``start_ns`` in ``meta.json``) are left out of the recovery's PhaseData (a declared settle time: the
    transient while the system re-settles is measured, not judged as steady state). The recovery's PhaseData
    carries a :class:`Recovery` saying what was left out and the time to recover; 0 changes nothing else.
    """
    if isinstance(settle_ns, bool) or not isinstance(settle_ns, (int, np.integer)) or settle_ns < 0:
        raise InvalidInput(f"settle_ns must be a non-negative integer (ns), got {settle_ns!r}")
    df = run.samples
    if flow is not None:
        df = df[df["flow"] == flow]
    present = set(df["source"].astype(str).unique())
    if source is None:
        source = next((s for s in ("request", "rtt", "oneway") if s in present), "request")
    out: dict[str, PhaseData] = {}
    phase_col = df["phase"].astype(str)
    src = df["source"].astype(str)
    t = df["t_ns"].to_numpy().astype(np.int64)
    is_lat = (src == source).to_numpy()
    is_req = (src == "request").to_numpy()
    failed = ~df["ok"].to_numpy().astype(bool)
    window = (getattr(run, "meta", None) or {}).get("phases", {}).get("recovery")
    start = int(window["start_ns"]) if window else None
    for name in PHASES:
        in_phase = (phase_col == name).to_numpy()
        if not in_phase.any():
            continue
        judged = in_phase
        rec = None
        if name == "recovery":
            if start is None and settle_ns > 0:
                raise InvalidInput("a settle time needs the recovery's start: the run's meta.json has no "
                                   "recovery window")
            # the one place the settle window is applied: [start, start + settle) is not judged
            settling = in_phase & (t < start + settle_ns) if settle_ns > 0 else np.zeros_like(in_phase)
            judged = in_phase & ~settling
            req_fail = in_phase & is_req & failed
            tail_start, tail = None, np.zeros_like(in_phase)
            if start is not None and (in_phase & is_req).any():
                last = int(t[in_phase & is_req].max())
                tail_start = start + 2 * max(0, last - start) // 3
                tail = in_phase & is_req & (t >= tail_start)
            rec = Recovery(start, int(settle_ns), int(np.count_nonzero(settling & is_lat)),
                           int(np.count_nonzero(settling & is_req)), int(np.count_nonzero(settling & is_req & failed)),
                           int(np.count_nonzero(in_phase & is_req)), int(np.count_nonzero(req_fail)),
                           int(t[req_fail].max()) if req_fail.any() else None, tail_start,
                           int(np.count_nonzero(tail)), int(np.count_nonzero(tail & failed)))
        sel = judged & is_lat
        lat = df["latency_ns"].to_numpy()[sel][np.argsort(t[sel], kind="stable")]  # time order: dependence
        req = judged & is_req
        flags = failed[req][np.argsort(t[req], kind="stable")]
        out[name] = PhaseData(lat, int(np.count_nonzero(flags)), int(flags.size), rec, True, flags)
    return out
