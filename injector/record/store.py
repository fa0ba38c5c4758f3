"""The run directory's sample files, and the phase clock every recorder labels its samples with.

Every source (one-way packets, sock_ops RTT, the lab's requests) writes its own part
``samples/<source>-<n>.parquet``; ``chaosinject.analysis.load_run`` concatenates the parts. Phases are windows on
CLOCK_MONOTONIC, which every network namespace on the host shares, so a sample taken in another process
or in the kernel is labelled by its timestamp alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..kernel.abi import RECORD_PHASES as PHASES
SOURCES = ("oneway", "rtt", "request")


@dataclass
class Phases:
    """Phase windows on CLOCK_MONOTONIC: ``mark("fault")`` ends the open phase and starts the next."""

    starts: dict[str, int] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)

    def mark(self, name: str, t_ns: int | None = None) -> int:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}: expected one of {', '.join(PHASES)}")
        if name in self.starts:
            raise ValueError(f"phase {name!r} was already started")
        t = time.monotonic_ns() if t_ns is None else int(t_ns)
        self.close(t)
        self.starts[name] = t
        return t

    def close(self, t_ns: int | None = None) -> None:
        """End the open phase (if any) at ``t_ns``."""
        t = time.monotonic_ns() if t_ns is None else int(t_ns)
        for name in self.starts:
            if name not in self.ends:
                self.ends[name] = max(t, self.starts[name])

    @property
    def current(self) -> str | None:
        open_ = [n for n in self.starts if n not in self.ends]
        return open_[-1] if open_ else None

    def windows(self) -> dict[str, dict[str, int]]:
        """meta.json's ``phases``: an open phase ends now."""
        now = time.monotonic_ns()
        return {n: {"start_ns": s, "end_ns": self.ends.get(n, max(now, s))} for n, s in self.starts.items()}

    def label(self, t_ns: np.ndarray) -> np.ndarray:
        """Phase name for each timestamp; ``""`` for samples outside every window."""
        t = np.asarray(t_ns, dtype=np.int64)
        out = np.full(t.shape, "", dtype=object)
        for name, w in self.windows().items():
            inside = (t >= w["start_ns"]) & (t < w["end_ns"])
            out[inside] = name
        return out


@runtime_checkable
class Recorder(Protocol):
    """A sample source for one run: started before the baseline, stopped after recovery, then written.

    Optional, beyond the protocol: ``set_phase(name)`` (told at each phase mark by ``Recording``; the BPF
    recorders keep per-phase histograms with it), ``follow(phases)`` (the same for callers that only mark a
    Phases object) and ``live()`` (figures for `status`)."""

    source: str                      # one of SOURCES

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def write(self, run_dir: Path, phases: Phases) -> dict:
        """Write this source's part(s) under ``run_dir/samples/`` and return a summary for meta.json
        (at least ``{"samples": n, "lost": n}``)."""
        ...


def write_samples(run_dir: str | Path, part: str, phases: Phases, *, t_ns, flow, source: str, latency_ns,
                  ok=None, status=None) -> int:
    """Write one part ``samples/<part>.parquet``; samples outside every phase window are dropped.

    Returns the number of rows written (0 writes nothing).
    """
    import pandas as pd

    if source not in SOURCES:
        raise ValueError(f"unknown sample source {source!r}: expected one of {', '.join(SOURCES)}")
    t = np.asarray(t_ns, dtype=np.int64)
    lat = np.asarray(latency_ns, dtype=np.int64)
    if t.shape != lat.shape:
        raise ValueError(f"t_ns has {t.size} values but latency_ns has {lat.size}")
    ok_ = np.ones(t.shape, bool) if ok is None else np.asarray(ok, dtype=bool)
    st = np.zeros(t.shape, np.int16) if status is None else np.asarray(status, dtype=np.int16)
    labels = phases.label(t)
    keep = labels != ""
    if not keep.any():
        return 0
    flows = np.broadcast_to(np.asarray(flow, dtype=object), t.shape)[keep]
    df = pd.DataFrame({
        "t_ns": t[keep],
        "phase": pd.Categorical(labels[keep], categories=list(PHASES)),
        "flow": pd.array(flows, dtype="string"),
        "source": pd.Categorical(np.full(int(keep.sum()), source, dtype=object), categories=list(SOURCES)),
        "latency_ns": np.maximum(lat[keep], 0),
        "ok": ok_[keep],
        "status": st[keep],
    })
    out = Path(run_dir) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / f"{part}.parquet", index=False)
    return len(df)
