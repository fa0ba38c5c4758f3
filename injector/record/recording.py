"""A Recording runs a set of recorders around one fault and writes the run directory.

Usage (the CLI's ``--record DIR`` and the experiment runner do the same)::

    from chaosinject.record import Recording, OneWayRecorder, PacketFlow

    rec = Recording("runs/r1", [OneWayRecorder(flows, sender=..., cgroup=...)],
                    flow="api->db", fault=fault.to_dict(), engine="userspace", seed=None)
    with rec:                      # recorders start; phase "baseline"
        time.sleep(5)
        rec.mark("fault")          # histograms count into "fault" from here; apply the fault now
        ...                        # run it; rec.set_counters(engine.counters(), rules) when it ends
        rec.mark("recovery")       # after the fault was removed
        time.sleep(5)
    # leaving the block stops the recorders and writes meta.json, counters.json, samples/, histograms/
    rec.shifts                     # measured latency shift per flow (fault median - baseline median, CI)

The directory's layout is docs/run-directory.md; ``chaosinject.analysis.load_run`` reads it.
"""

from __future__ import annotations

import platform
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..files import jsonable, write_json_atomic
from .store import PHASES, Phases, Recorder

# engine counter names -> counters.json names (docs/run-directory.md); others keep their own name
COUNTER_NAMES = {"matched_packets": "matched", "dropped_packets": "dropped", "corrupted_packets": "corrupted",
                 "duplicated_packets": "duplicated", "matched_bytes": "bytes", "delayed_packets": "delayed"}


@dataclass(frozen=True)
class LatencyShift:
    """Measured change of one flow's median latency: fault - baseline, with a distribution-free CI."""

    flow: str
    source: str
    baseline_n: int
    fault_n: int
    baseline_median_ns: float
    fault_median_ns: float
    shift_ns: float
    ci_low_ns: float | None
    ci_high_ns: float | None
    confidence: float = 0.95
    placement: str = ""

    def describe(self) -> str:
        ci = (f", 95% CI [{self.ci_low_ns / 1e6:+.3f}, {self.ci_high_ns / 1e6:+.3f}] ms"
              if self.ci_low_ns is not None else " (too few samples for a CI)")
        return (f"median {self.baseline_median_ns / 1e6:.3f} ms -> {self.fault_median_ns / 1e6:.3f} ms: shift "
                f"{self.shift_ns / 1e6:+.3f} ms{ci} ({self.source}" + (f" at {self.placement}" if self.placement else "")
                + f", {self.baseline_n}/{self.fault_n} samples)")


def latency_shift(flow: str, source: str, baseline, fault, confidence: float = 0.95, *, placement: str = ""
                  ) -> LatencyShift | None:
    """Fault median - baseline median, and analysis's conservative CI for it; None without samples."""
    from chaosinject.analysis import quantile_difference_ci

    b = np.asarray(baseline, dtype=np.float64)
    f = np.asarray(fault, dtype=np.float64)
    if not b.size or not f.size:
        return None
    d = quantile_difference_ci(b, f, 0.5, confidence)
    low = high = None
    if d.interval is not None:
        low, high = float(d.interval.low), float(d.interval.high)
    return LatencyShift(flow, source, int(b.size), int(f.size), float(d.baseline), float(d.fault),
                        float(d.difference), low, high, confidence, placement)


def shifts_of(run_dir: str | Path, summaries: list[dict]) -> list[LatencyShift]:
    """Fault median - baseline median of the samples each recorder wrote (summary ``part``), per recorder
    (placements differ in what they see: never pool them) and flow."""
    import pandas as pd

    out = []
    for summary in summaries:
        part = Path(run_dir) / "samples" / f"{summary.get('part')}.parquet"
        if not part.exists():
            continue
        df = pd.read_parquet(part)
        for flow, g in df.groupby("flow", observed=True):
            s = latency_shift(str(flow), str(summary.get("source")), g.loc[g["phase"] == "baseline", "latency_ns"],
                              g.loc[g["phase"] == "fault", "latency_ns"], placement=summary.get("placement", ""))
            if s is not None:
                out.append(s)
    return out


def engine_counters(counters: dict, rules=None) -> dict[str, dict[str, int]]:
    """counters.json content: per rule id, the engine's integer counters under the documented names."""
    out: dict[str, dict[str, int]] = {}
    flows = {r.rule_id: r.flow for r in rules} if rules else {}
    for rule_id, c in counters.items():
        entry = {}
        for name, value in c.items():
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
                entry[COUNTER_NAMES.get(name, name)] = int(value)
        for name in ("matched", "dropped", "corrupted", "duplicated", "bytes"):
            entry.setdefault(name, 0)
        if rule_id in flows:
            entry["flow"] = flows[rule_id]  # type: ignore[assignment]
        out[str(rule_id)] = entry
    return out


class Recording:
    """Recorders around one run; writes ``run_dir`` (meta.json, counters.json, samples/, histograms/)."""

    def __init__(self, run_dir: str | Path, recorders: list[Recorder], *, flow: str, fault: dict, engine: str,
                 seed: int | None = None, run_id: str | None = None, meta: dict | None = None):
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise ValueError(f"run directory {self.run_dir} exists and is not empty; give a new one")
        for r in recorders:
            if not isinstance(r, Recorder):
                raise TypeError(f"{r!r} is not a Recorder (source, start, stop, write)")
        self.recorders = list(recorders)
        self.phases = Phases()
        self.meta = {"schema_version": 1, "run_id": run_id or time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2),
                     "flow": flow, "fault": fault, "engine": engine, "kernel": platform.release(), "seed": seed,
                     **(meta or {})}
        self.counters: dict[str, dict[str, int]] = {}
        self.summaries: list[dict] = []
        self.shifts: list[LatencyShift] = []
        self._started: list[Recorder] = []
        self._stopped: list[Recorder] = []
        self._finished = False

    # -- phases ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.meta["created"] = self.meta["created"][:-2] + ":" + self.meta["created"][-2:]
        try:
            for r in self.recorders:
                try:
                    r.start()
                except Exception as exc:
                    if not getattr(r, "optional", False):
                        raise
                    # a recorder nobody asked for by name (RTT on the cgroup v2 root): the run goes on, said
                    self.meta.setdefault("notes", []).append(f"no {r.source} samples: it did not start: {exc}")
                    continue
                self._started.append(r)
        except BaseException:
            self._stop_all()
            raise
        self.mark("baseline")
        # provisional: says the recorders are attached and when the baseline began; finish() rewrites it
        self.meta["state"] = "recording"
        self.meta["phases"] = self.phases.windows()
        write_json_atomic(self.run_dir / "meta.json", jsonable(self.meta), dir_mode=0o755, sort_keys=False)

    def mark(self, phase: str) -> int:
        t = self.phases.mark(phase)
        for r in self._started:
            set_phase = getattr(r, "set_phase", None)
            if set_phase is not None:
                set_phase(phase)
        self.meta.setdefault("phase_marks_wall", {})[phase] = time.time()
        return t

    def set_counters(self, counters: dict, rules=None) -> None:
        self.counters = engine_counters(counters, rules)

    def live(self) -> list[dict]:
        """Current figures of the recorders that can tell (for `status`)."""
        return [r.live() for r in self._started if hasattr(r, "live")]

    # -- end ------------------------------------------------------------------------------------------------
    def _stop_all(self) -> list[BaseException]:
        errors = []
        while self._started:
            r = self._started.pop()
            try:
                r.stop()
            except Exception as exc:  # stop the others anyway: their programs must go too
                errors.append(exc)
            self._stopped.append(r)
        return errors

    def finish(self) -> dict:
        """Stop the recorders, write everything; returns meta.json's content. Idempotent."""
        if self._finished:
            return self.meta
        self._finished = True
        self.phases.close()
        errors = self._stop_all()
        for r in self._stopped:
            try:
                self.summaries.append(r.write(self.run_dir, self.phases))
            except Exception as exc:
                errors.append(exc)
        self._ensure_samples()
        self.shifts = shifts_of(self.run_dir, self.summaries)
        self.meta["state"] = "complete"
        self.meta["phases"] = self.phases.windows()
        self.meta["recorders"] = self.summaries
        self.meta["latency_shift"] = [asdict(s) for s in self.shifts]
        self.meta["lost_events"] = sum(int(s.get("lost", 0)) for s in self.summaries)
        write_json_atomic(self.run_dir / "meta.json", jsonable(self.meta), dir_mode=0o755, sort_keys=False)
        write_json_atomic(self.run_dir / "counters.json", self.counters, dir_mode=0o755, sort_keys=False)
        if errors:
            raise RuntimeError(f"recording: {len(errors)} recorder(s) failed: {errors}") from errors[0]
        return self.meta

    def _ensure_samples(self) -> None:
        """A run without one sample still gets a (empty) samples part, so the directory loads."""
        parts = self.run_dir / "samples"
        if parts.is_dir() and any(parts.glob("*.parquet")):
            return
        import pandas as pd

        parts.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"t_ns": pd.Series([], dtype="int64"),
                      "phase": pd.Categorical([], categories=list(PHASES)),
                      "flow": pd.Series([], dtype="string"), "source": pd.Categorical([], categories=["oneway"]),
                      "latency_ns": pd.Series([], dtype="int64"), "ok": pd.Series([], dtype="bool"),
                      "status": pd.Series([], dtype="int16")}).to_parquet(parts / "empty-000001.parquet",
                                                                          index=False)

    def __enter__(self) -> "Recording":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.finish()
        except Exception:
            if exc is None:
                raise
