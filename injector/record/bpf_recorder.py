"""What the BPF recorders share: flows to record, a reader thread draining the ring, phases, writing.

Recorders built on this load their own copy of bpf/record.bpf.c (chaosinject.kernel.record_program), so two
recorders never share maps; each reads its ring buffer in numpy batches from one thread.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .histogram import BUCKETS, Histogram, bucket_bounds
from .store import PHASES, Phases, write_samples

PROTOCOLS = {"tcp": 6, "udp": 17, None: 0, 0: 0, 6: 6, 17: 17}


@dataclass(frozen=True)
class PacketFlow:
    """Packets to record, as they travel (src = the packet's source). None = any address / port.

    ``label`` names the flow in the samples (e.g. ``api->db``); ``rule_id`` links it to a fault rule.
    """

    label: str
    src: str | None
    dst: str | None
    sport: int | None = None
    dport: int | None = None
    protocol: str | int | None = None
    rule_id: int | None = None

    def __post_init__(self) -> None:
        if self.src is None and self.dst is None:
            raise ValueError(f"flow {self.label!r}: name at least one address to record")
        fams = {ipaddress.ip_address(a).version for a in (self.src, self.dst) if a is not None}
        if len(fams) != 1:
            raise ValueError(f"flow {self.label!r}: source and destination are of different IP versions")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"flow {self.label!r}: protocol must be tcp or udp, not {self.protocol!r}")
        for port in (self.sport, self.dport):
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"flow {self.label!r}: port {port} out of range")

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.src if self.src is not None else self.dst).version

    @classmethod
    def from_rule(cls, rule) -> "PacketFlow":
        """The packets a planned rule faults (``rule.match`` is already in packet direction)."""
        m = rule.match
        addrs = []
        for net in (m.src, m.dst):
            if net is not None and net.prefixlen != net.max_prefixlen:
                raise ValueError(f"rule #{rule.rule_id} matches the network {net}; recording needs host "
                                 "addresses (name hosts, not networks)")
            addrs.append(None if net is None else str(net.network_address))
        return cls(label=rule.flow, src=addrs[0], dst=addrs[1], sport=m.sport, dport=m.dport,
                   protocol=m.protocol or None, rule_id=rule.rule_id)

    def to_filter(self, events: bool):
        from ..kernel.record_program import F_EVENTS, Filter  # ctypes only: importable without bcc

        f = Filter(family=self.family, proto=PROTOCOLS[self.protocol], flags=F_EVENTS if events else 0)
        f.sport = _port_nbo(self.sport)
        f.dport = _port_nbo(self.dport)
        for field, addr in (("saddr", self.src), ("daddr", self.dst)):
            if addr is not None:
                packed = ipaddress.ip_address(addr).packed
                words = [int.from_bytes(packed[i:i + 4], "little") for i in range(0, len(packed), 4)]
                for i, w in enumerate(words):
                    getattr(f, field)[i] = w
        return f


def _port_nbo(port: int | None) -> int:
    return 0 if port is None else int.from_bytes(port.to_bytes(2, "big"), "little")


def next_part(run_dir: Path, source: str) -> str:
    """An unused part name ``<source>-<n>`` under samples/ and histograms/."""
    n = 1
    while any((Path(run_dir) / d / f"{source}-{n:06d}.parquet").exists() for d in ("samples", "histograms")):
        n += 1
    return f"{source}-{n:06d}"


class BpfRecorder:
    """Base of the one-way and RTT recorders: owns a RecordProgram, drains its ring from a thread."""

    source = ""
    placement = ""

    def __init__(self, flows: list[PacketFlow], *, events: bool = True, ring_pages: int = 1024,
                 max_stamps: int = 65536, max_events: int = 10_000_000):
        if not flows:
            raise ValueError("nothing to record: no flows")
        from ..kernel.record_program import MAX_FILTERS

        if len(flows) > MAX_FILTERS:
            raise ValueError(f"{len(flows)} flows; one recorder records at most {MAX_FILTERS}")
        self.flows = list(flows)
        self.events = events
        self._ring_pages = ring_pages
        self._max_stamps = max_stamps
        self._program = None
        self._chunks: list[np.ndarray] = []
        self._kept = 0
        self.max_events = max_events      # raw events kept in memory (32 bytes each); beyond: histograms only
        self.reader_dropped = 0           # events read but not kept (max_events reached): reported, not hidden
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._final_counters: dict[int, dict[str, int]] = {}
        self._final_hist: np.ndarray | None = None
        self._phase_driven = False
        self._follow: Phases | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        from ..kernel.record_program import RecordConfig, RecordProgram

        program = RecordProgram(RecordConfig(ring_pages=self._ring_pages, max_stamps=self._max_stamps))
        try:
            program.set_filters([f.to_filter(self.events) for f in self.flows])
            program.set_phase(0)
            self._attach(program)
        except BaseException:
            program.close()
            raise
        self._program = program
        self._stop.clear()
        self._thread = threading.Thread(target=self._drain, name=f"record-{self.source}", daemon=True)
        self._thread.start()

    def _attach(self, program) -> None:
        raise NotImplementedError

    def set_phase(self, name: str) -> None:
        """Histogram counts from now on go to phase ``name`` (raw samples are labelled by time)."""
        self._phase_driven = True
        if self._program is not None:
            self._program.set_phase(PHASES.index(name))

    def follow(self, phases: Phases) -> None:
        """Let the reader thread copy ``phases.current`` into the kernel (within ~50 ms of each mark), for
        callers that mark a Phases object and never call set_phase."""
        self._phase_driven = True
        self._follow = phases

    def stop(self) -> None:
        """Detach, read what is left, release the programs. Idempotent."""
        program, self._program = self._program, None
        if program is None:
            return
        try:
            program.detach_all()
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            for _ in range(1000):  # everything left, a batch at a time (a read takes at most MAX_BATCH)
                if not program.ring.pending_bytes() or not self._collect(program):
                    break
            self._final_counters = program.counters()
            self._final_hist = program.histograms()
        finally:
            program.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- reading --------------------------------------------------------------------------------------------
    def _drain(self) -> None:
        program = self._program
        current = None
        while not self._stop.is_set():
            if self._follow is not None and self._follow.current not in (None, current):
                current = self._follow.current
                program.set_phase(PHASES.index(current))
            program.ring.wait(0.05)
            self._collect(program)

    def _collect(self, program) -> int:
        """Read one batch into memory; returns how many events were read."""
        with self._lock:
            batch = program.ring.read() if program.ring is not None else None
            if batch is None or not len(batch):
                return 0
            room = self.max_events - self._kept
            read = len(batch)
            if len(batch) > room:
                self.reader_dropped += len(batch) - max(room, 0)
                batch = batch[:max(room, 0)]
            if len(batch):
                self._chunks.append(batch)
                self._kept += len(batch)
            return read

    def events_array(self) -> np.ndarray:
        """Every raw event so far (t_ns, latency_ns, rule, aux), in arrival order."""
        from ..kernel.ring import EVENT_DTYPE

        with self._lock:
            if not self._chunks:
                return np.empty(0, EVENT_DTYPE)
            if len(self._chunks) > 1:
                self._chunks = [np.concatenate(self._chunks)]
            return self._chunks[0]

    def counters(self) -> dict[int, dict[str, int]]:
        """Per flow index: stamped, stamp_full, matched, events, lost."""
        if self._program is not None:
            return self._program.counters()
        return dict(self._final_counters)

    def lost(self) -> int:
        """Events the ring could not take (kernel counter)."""
        return sum(c.get("lost", 0) for c in self.counters().values())

    def histograms(self) -> np.ndarray:
        """(flows, phases, buckets) counts from the kernel."""
        if self._program is not None:
            return self._program.histograms()[: len(self.flows)]
        if self._final_hist is None:
            return np.zeros((len(self.flows), len(PHASES), BUCKETS), np.uint64)
        return self._final_hist[: len(self.flows)]

    def histogram(self, flow_index: int, phase: str) -> Histogram:
        return Histogram(self.histograms()[flow_index, PHASES.index(phase)])

    def live(self) -> dict:
        """Figures for `status` while running: samples and lost so far, median of the latest samples."""
        with self._lock:  # the last chunk only: cheap at any run length
            recent = self._chunks[-1]["latency_ns"][-1000:] if self._chunks else np.empty(0)
            kept = self._kept
        return {"source": self.source, "samples": int(kept), "lost": self.lost() + self.reader_dropped,
                "recent_p50_ms": float(np.median(recent)) / 1e6 if len(recent) else None}

    # -- writing --------------------------------------------------------------------------------------------
    def write(self, run_dir: Path, phases: Phases) -> dict:
        run_dir = Path(run_dir)
        part = next_part(run_dir, self.source)
        ev = self.events_array()
        labels = np.array([f.label for f in self.flows], dtype=object)
        rule = np.minimum(ev["rule"], len(self.flows) - 1)
        n = write_samples(run_dir, part, phases, t_ns=ev["t_ns"], flow=labels[rule] if len(ev) else "",
                          source=self.source, latency_ns=ev["latency_ns"])
        # histogram phases are only right if someone told the kernel the phase: else leave them out
        hist_rows = self._write_histograms(run_dir, part) if self._phase_driven else 0
        counters = self.counters()
        per_flow = []
        for i, f in enumerate(self.flows):
            entry = {"flow": f.label, "rule_id": f.rule_id, "src": f.src, "dst": f.dst, "sport": f.sport,
                     "dport": f.dport, **{k: int(v) for k, v in counters.get(i, {}).items()}}
            for phase in PHASES if self._phase_driven else ():
                h = self.histogram(i, phase)
                if h.total:
                    p50, p99 = h.quantile([0.5, 0.99])
                    entry[f"{phase}_hist"] = {"count": h.total, "p50_ns": float(p50), "p99_ns": float(p99)}
            per_flow.append(entry)
        out = {"source": self.source, "placement": self.placement, "part": part, "samples": n,
               "events": int(len(ev)), "lost": self.lost() + self.reader_dropped, "ring_lost": self.lost(),
               "reader_dropped": self.reader_dropped, "histogram_rows": hist_rows, "flows": per_flow}
        if not self._phase_driven:
            out["histograms"] = "not written: phases were never set (Recording does it; else call follow(phases))"
        return out

    def _write_histograms(self, run_dir: Path, part: str) -> int:
        import pandas as pd

        hist = self.histograms()
        flow_i, phase_i, bucket = np.nonzero(hist)
        if not len(bucket):
            return 0
        low, high = bucket_bounds(bucket)
        df = pd.DataFrame({
            "source": pd.Categorical([self.source] * len(bucket)),
            "flow": pd.array([self.flows[i].label for i in flow_i], dtype="string"),
            "rule_id": np.array([-1 if self.flows[i].rule_id is None else self.flows[i].rule_id for i in flow_i],
                                np.int32),
            "phase": pd.Categorical(np.array(PHASES, dtype=object)[phase_i], categories=list(PHASES)),
            "bucket": bucket.astype(np.int32),
            "low_ns": low.astype(np.int64),
            "high_ns": high.astype(np.int64),
            "count": hist[flow_i, phase_i, bucket].astype(np.int64),
        })
        out = run_dir / "histograms"
        out.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out / f"{part}.parquet", index=False)
        return len(df)
