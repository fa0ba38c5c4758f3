"""Run directory: loader and a seeded synthetic example run (schema in docs/run-directory.md).

pandas/pyarrow are imported lazily, so ``from chaosinject import analysis`` stays numpy/scipy only.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._types import InvalidInput

__all__ = ["SCHEMA_VERSION", "SAMPLE_COLUMNS", "SOURCES", "InvalidRun", "Run", "load_run", "example_run"]

SCHEMA_VERSION = 1
SOURCES = ("oneway", "rtt", "request")
PHASE_NAMES = ("baseline", "fault", "recovery")
SAMPLE_COLUMNS: dict[str, str] = {
    "t_ns": "int64",
    "phase": "category",
    "flow": "string",
    "source": "category",
    "latency_ns": "int64",
    "ok": "bool",
    "status": "int16",
}
_META_REQUIRED = ("run_id", "created", "flow", "fault", "engine", "kernel", "seed", "phases")
_COUNTER_FIELDS = ("matched", "dropped", "corrupted", "duplicated", "bytes")


class InvalidRun(InvalidInput):
    """A run directory is missing files or does not follow the schema."""


@dataclass(frozen=True)
class Run:
    """A loaded run directory: ``samples`` (pandas DataFrame), ``meta`` and ``counters`` (dicts)."""

    path: Path
    meta: dict
    counters: dict
    samples: Any = field(repr=False)

    def phase_window_ns(self, phase: str) -> tuple[int, int]:
        w = self.meta["phases"][phase]
        return int(w["start_ns"]), int(w["end_ns"])

    def label_mismatches(self) -> dict[str, int]:
        """Per phase, how many samples labelled with it have ``t_ns`` outside its window in ``meta``.

        Not enforced by the loader (a recorder may stamp a sample at a boundary); a large count means the
        phase labels and the clock disagree and the run should be looked at before trusting a verdict.
        """
        out: dict[str, int] = {}
        ph = self.samples["phase"].astype(str).to_numpy()
        t = self.samples["t_ns"].to_numpy()
        for name in self.phases:
            s, e = self.phase_window_ns(name)
            m = ph == name
            out[name] = int(np.count_nonzero((t[m] < s) | (t[m] > e)))
        return out

    @property
    def phases(self) -> tuple[str, ...]:
        return tuple(p for p in PHASE_NAMES if p in self.meta.get("phases", {}))


def _read_json(p: Path) -> dict:
    try:
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise InvalidRun(f"{p.parent}: missing {p.name}") from None
    except json.JSONDecodeError as exc:
        raise InvalidRun(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidRun(f"{p}: top level must be an object")
    return data


def _check_meta(meta: dict, where: Path) -> None:
    missing = [k for k in _META_REQUIRED if k not in meta]
    if missing:
        raise InvalidRun(f"{where}: meta.json lacks {missing}")
    phases = meta["phases"]
    if not isinstance(phases, dict) or not phases:
        raise InvalidRun(f"{where}: meta.json 'phases' must be a non-empty object")
    for name, w in phases.items():
        if name not in PHASE_NAMES:
            raise InvalidRun(f"{where}: unknown phase {name!r} (expected one of {PHASE_NAMES})")
        try:
            s, e = int(w["start_ns"]), int(w["end_ns"])
        except (KeyError, TypeError, ValueError):
            raise InvalidRun(f"{where}: phase {name!r} needs integer start_ns and end_ns") from None
        if e < s:
            raise InvalidRun(f"{where}: phase {name!r} ends before it starts")


def _check_counters(counters: dict, where: Path) -> None:
    for rule, c in counters.items():
        if not isinstance(c, dict):
            raise InvalidRun(f"{where}: counters[{rule!r}] must be an object")
        for k in _COUNTER_FIELDS:
            v = c.get(k, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InvalidRun(f"{where}: counters[{rule!r}][{k!r}] must be a non-negative integer")


def _read_samples(root: Path):
    import pandas as pd

    single = root / "samples.parquet"
    parts_dir = root / "samples"
    if single.exists():
        df = pd.read_parquet(single)
    elif parts_dir.is_dir():
        parts = sorted(parts_dir.glob("*.parquet"))
        if not parts:
            raise InvalidRun(f"{root}: samples/ holds no .parquet files")
        df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    else:
        raise InvalidRun(f"{root}: missing samples.parquet (or samples/*.parquet)")
    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise InvalidRun(f"{root}: samples lack columns {missing}")
    try:
        df = df.astype({"t_ns": "int64", "latency_ns": "int64", "ok": "bool", "status": "int16",
                        "flow": "string"})
    except (TypeError, ValueError) as exc:
        raise InvalidRun(f"{root}: samples have wrong column types ({exc})") from None
    phase = df["phase"].astype(str)
    bad = set(phase.unique()) - set(PHASE_NAMES)
    if bad:
        raise InvalidRun(f"{root}: unknown phase labels {sorted(bad)}")
    source = df["source"].astype(str)
    bad = set(source.unique()) - set(SOURCES)
    if bad:
        raise InvalidRun(f"{root}: unknown sources {sorted(bad)}")
    df["phase"] = pd.Categorical(phase, categories=list(PHASE_NAMES))
    df["source"] = pd.Categorical(source, categories=list(SOURCES))
    if (df["latency_ns"] < 0).any():
        raise InvalidRun(f"{root}: negative latency_ns values")
    return df


def load_run(path: str | os.PathLike) -> Run:
    """Load and validate a run directory (meta.json, counters.json, samples.parquet)."""
    root = Path(path)
    if not root.is_dir():
        raise InvalidRun(f"{root}: not a directory")
    meta = _read_json(root / "meta.json")
    _check_meta(meta, root)
    counters = _read_json(root / "counters.json")
    _check_counters(counters, root)
    return Run(root, meta, counters, _read_samples(root))


def example_run(
    path: str | os.PathLike,
    rng: np.random.Generator | int | None = 0,
    *,
    phase_seconds: float = 60.0,
    request_rate_hz: float = 200.0,
    rtt_rate_hz: float = 500.0,
    oneway_rate_hz: float = 1000.0,
    delay_ms: float = 40.0,
    jitter_ms: float = 10.0,
    baseline_error_rate: float = 0.0003,
    fault_error_rate: float = 0.004,
    flow: str = "api->db",
) -> Run:
    """Write a realistic synthetic run (a 40 ms +/- 10 ms delay fault on ``flow``) and return it loaded.

    Requests: lognormal service time (median 12 ms) plus a slow-path mode (3 %, ~60 ms) and the injected
    delay during the fault (twice: request and response cross the flow). Error rate rises during the fault
    (timeouts: status 504) and returns in recovery. Seeded through ``rng`` (Generator or int seed).
    """
    import pandas as pd

    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    seed = None if isinstance(rng, np.random.Generator) else rng
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    t0 = int(gen.integers(10**12, 10**13))
    dur = int(phase_seconds * 1e9)
    windows = {name: (t0 + i * dur, t0 + (i + 1) * dur) for i, name in enumerate(PHASE_NAMES)}
    frames = []
    for name, (s, e) in windows.items():
        in_fault = name == "fault"
        for source, rate in (("request", request_rate_hz), ("rtt", rtt_rate_hz), ("oneway", oneway_rate_hz)):
            n = int(gen.poisson(rate * phase_seconds))
            t = np.sort(gen.integers(s, e, size=n))
            if source == "request":
                base = gen.lognormal(np.log(12e6), 0.35, size=n)
                slow = gen.random(n) < 0.03
                base[slow] = gen.lognormal(np.log(60e6), 0.25, size=int(slow.sum()))
                extra = 2 * np.maximum(gen.normal(delay_ms * 1e6, jitter_ms * 1e6, size=n), 0) if in_fault else 0
                lat = base + extra
                p_err = fault_error_rate if in_fault else baseline_error_rate
                ok = gen.random(n) >= p_err
                status = np.where(ok, 200, np.where(gen.random(n) < 0.8, 504, 503)).astype(np.int16)
                lat = np.where(ok, lat, np.where(status == 504, 1e9, lat))  # timeouts cut at 1 s
            elif source == "rtt":
                base = gen.gamma(4.0, 0.06e6, size=n) + 0.15e6
                extra = 2 * np.maximum(gen.normal(delay_ms * 1e6, jitter_ms * 1e6, size=n), 0) if in_fault else 0
                lat = base + extra
                ok = np.ones(n, bool)
                status = np.zeros(n, np.int16)
            else:
                base = gen.gamma(3.0, 0.03e6, size=n) + 0.05e6
                extra = np.maximum(gen.normal(delay_ms * 1e6, jitter_ms * 1e6, size=n), 0) if in_fault else 0
                lat = base + extra
                ok = np.ones(n, bool)
                status = np.zeros(n, np.int16)
            frames.append(pd.DataFrame({
                "t_ns": t.astype(np.int64),
                "phase": name,
                "flow": flow,
                "source": source,
                "latency_ns": np.rint(lat).astype(np.int64),
                "ok": ok.astype(bool),
                "status": status,
            }))
    df = pd.concat(frames, ignore_index=True).sort_values("t_ns", kind="stable").reset_index(drop=True)
    df["phase"] = pd.Categorical(df["phase"], categories=list(PHASE_NAMES))
    df["source"] = pd.Categorical(df["source"], categories=list(SOURCES))
    df["flow"] = df["flow"].astype("string")
    df.to_parquet(root / "samples.parquet", index=False)
    fault_oneway = int(((df["phase"] == "fault") & (df["source"] == "oneway")).sum())
    meta = {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"example-{int(gen.integers(0, 2**32)):08x}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "flow": flow,
        "fault": {"kind": "delay", "delay_us": int(delay_ms * 1000), "jitter_us": int(jitter_ms * 1000),
                  "distribution": "normal"},
        "engine": "synthetic",
        "kernel": "synthetic (example_run)",
        "seed": seed,
        "phases": {k: {"start_ns": v[0], "end_ns": v[1]} for k, v in windows.items()},
    }
    matched = fault_oneway * 3
    counters = {
        "rule-1": {"matched": matched, "dropped": 0, "corrupted": 0, "duplicated": 0,
                   "bytes": int(matched * int(gen.integers(200, 1200)))},
    }
    with open(root / "meta.json", "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
    with open(root / "counters.json", "w", encoding="utf-8") as fh:
        json.dump(counters, fh, indent=2)
    return load_run(root)
