"""The per-flow classifier program: compile (bcc), load, and read/write its maps.

This module and the rest of chaosinject.kernel are the only places that import bcc.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import Unsupported
from . import abi, bpf_loader, progcache
from .bpf_loader import bpf_syscall
from .headers import ensure_bcc_kernel_source

CLASSIFIER_SOURCE = abi.BPF_DIR / "classifier.bpf.c"
DEFAULT_MAX_RULES = 1024
MAX_SHAPES = 16

_compile_lock = threading.Lock()  # bcc's compiler is not re-entrant: one lock for every program we load

# bpf(2) itself, for what bcc does not wrap (BPF links, test runs)
BPF_PROG_TEST_RUN = 10
BPF_LINK_CREATE = 28


@dataclass(frozen=True)
class ClassifierConfig:
    """Load-time configuration, passed as cflags (never by editing C text)."""

    max_rules: int = DEFAULT_MAX_RULES
    l2_len: int = 14
    seed: int | None = None
    dup_mark: int = 0x40000000
    steer: bool = False  # netem engine: classify into our prio qdisc's classes instead of acting
    # exact-match flow cache in front of the shape walk; CHAOS_INJECT_FLOW_CACHE=off: the walk alone
    flow_cache: bool = field(default_factory=lambda: os.environ.get("CHAOS_INJECT_FLOW_CACHE", "on") != "off")
    max_flows: int = 16384
    hold: bool = False   # record each delayed packet's hold (classifier -> device transmit) from the kernel's clock
    hold_ring_pages: int = 1024  # 4 MiB: ~130,000 samples between two drains (one a lease)

    def cflags(self) -> list[str]:
        flags = [f"-I{abi.INCLUDE_DIR}", f"-DCI_MAX_RULES={self.max_rules}", f"-DCI_MAX_SHAPES={MAX_SHAPES}",
                 f"-DCI_L2_LEN={self.l2_len}", f"-DCI_DUP_MARK={self.dup_mark:#x}u", "-Wno-comment"]
        if self.steer:
            flags.append("-DCI_STEER=1")
        if self.flow_cache:
            flags.append("-DCI_FLOW_CACHE=1")
            flags.append(f"-DCI_MAX_FLOWS={self.max_flows}")
        if self.hold:
            flags += ["-DCI_HOLD=1", f"-DCI_HOLD_RING_PAGES={self.hold_ring_pages}"]
        if self.seed is not None:
            flags.append("-DCI_SEEDED=1")  # the seed itself goes into the seed map: one program for every seed
        return flags


def import_bcc():
    ensure_bcc_kernel_source()
    try:
        import bcc  # noqa: PLC0415 - bcc is optional until a program is loaded
    except ImportError as exc:
        raise Unsupported("bcc is not importable: install Debian's python3-bpfcc and use the system python "
                          "(or a venv made with --system-site-packages); `sudo make setup` does both") from exc
    return bcc


def load_bpf(source: Path, cflags: list[str], what: str):
    """Compile and load ``source`` (a .bpf.c under bpf/) with bcc; Unsupported naming ``what`` if it fails."""
    bcc = import_bcc()
    with _compile_lock:
        try:
            return bcc.BPF(src_file=str(source).encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise Unsupported(f"{what} did not compile or load: {exc}") from exc


class _TestRunAttr(ctypes.Structure):
    """union bpf_attr, the BPF_PROG_TEST_RUN member (include/uapi/linux/bpf.h)."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


@dataclass(frozen=True)
class ProgRun:
    """What BPF_PROG_TEST_RUN reports: mean ns per run (the kernel's own timing) and the return value."""

    mean_ns: int
    retval: int


def prog_test_run(prog_fd: int, packet: bytes, repeat: int) -> ProgRun:
    """Run a loaded program ``repeat`` times on ``packet`` in the kernel (BPF_PROG_TEST_RUN): benchmarks and
    tests drive programs this way without traffic."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)  # room for a program that grows the packet
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(packet), data_in=ctypes.addressof(data_in),
                        data_size_out=len(data_out), data_out=ctypes.addressof(data_out), repeat=repeat)
    bpf_syscall(BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return ProgRun(attr.duration, ctypes.c_int32(attr.retval).value)


class _ProgramFds(Mapping):
    """hook -> program fd; a program is loaded (verified) the first time its fd is asked for."""

    def __init__(self, loaded: bpf_loader.LoadedProgram, hooks: dict[str, str]):
        self._loaded, self._hooks = loaded, hooks

    def __getitem__(self, hook: str) -> int:
        return self._loaded.prog_fd(self._hooks[hook])

    def __iter__(self):
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)


# raw tracepoints of the hold recording: the sample ends when the device takes the skb; an skb freed untransmitted
# drops its start (its address may come back as another skb)
HOLD_XMIT_TRACEPOINT = "net_dev_start_xmit"
HOLD_FREE_TRACEPOINTS = ("kfree_skb", "consume_skb")
HOLD_MIN_KERNEL = (5, 8)        # BPF ring buffers
HOLD_KEEP = 200_000             # samples kept per rule: beyond it every other one is dropped (uniform thinning)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    import re

    m = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def hold_unsupported_reason(release: str | None = None) -> str | None:
    """Why this kernel cannot record holds per packet (None: it can)."""
    if kernel_version(release) < HOLD_MIN_KERNEL:
        return (f"kernel {release or platform.release()} has no BPF ring buffer (Linux 5.8+): the hold per "
                "packet is not measured")
    return None


class HoldRecorder:
    """The hold samples of a classifier loaded with ``hold``: raw tracepoints attached (each held by an fd of
    ours, closed by ``close``: nothing stays in the kernel when the process dies), the ring buffer drained
    into per-rule numpy arrays."""

    def __init__(self, loaded: bpf_loader.LoadedProgram, ring_pages: int):
        from .ring import RingReader

        self._lock = threading.Lock()
        self._attachments: list[int] = []
        self._ring = None
        try:
            xmit, free = loaded.prog_fd("ci_hold_xmit"), loaded.prog_fd("ci_hold_free")
            self._attachments.append(bpf_loader.attach_raw_tracepoint(xmit, HOLD_XMIT_TRACEPOINT))
            for tp in HOLD_FREE_TRACEPOINTS:
                self._attachments.append(bpf_loader.attach_raw_tracepoint(free, tp))
            self._ring = RingReader(loaded.maps["hold_events"].fd, ring_pages * mmap_pagesize())
        except BaseException:
            self.close()
            raise
        self._lost = loaded.maps["hold_lost"]
        self._holds: dict[int, list] = {}
        self.seen: dict[int, int] = {}

    def drain(self) -> None:
        import numpy as np

        with self._lock:
            if self._ring is None:
                return
            while True:
                ev = self._ring.read()
                if not len(ev):
                    break
                rules = ev["rule"]
                for rule in np.unique(rules):
                    part = ev["latency_ns"][rules == rule].astype(np.int64)
                    r = int(rule)
                    self.seen[r] = self.seen.get(r, 0) + len(part)
                    chunks = self._holds.setdefault(r, [])
                    chunks.append(part)
                    if sum(len(c) for c in chunks) > HOLD_KEEP:
                        self._holds[r] = [np.concatenate(chunks)[::2]]

    def samples(self, rule_id: int):
        import numpy as np

        self.drain()
        with self._lock:
            chunks = self._holds.get(rule_id)
            return np.concatenate(chunks) if chunks else np.empty(0, np.int64)

    def lost(self) -> int:
        return sum(struct.unpack("=Q", raw)[0] for raw in self._lost.lookup_percpu(struct.pack("=I", 0)))

    def close(self) -> None:
        with self._lock:
            ring, self._ring = self._ring, None
            attachments, self._attachments = self._attachments, []
        if ring is not None:
            ring.close()
        for fd in attachments:
            os.close(fd)


def mmap_pagesize() -> int:
    import mmap

    return mmap.PAGESIZE


class ClassifierProgram:
    """A loaded classifier: its entry points (egress, ingress, ifb, ingress_match) sharing one set of maps.

    The compiled program comes from the on-disk cache (kernel/progcache.py) when its key matches, else bcc
    compiles it once and the cache keeps it; either way this process gets maps of its own."""

    def __init__(self, config: ClassifierConfig):
        self.config = config
        self._loaded = None
        self.hold: HoldRecorder | None = None
        functions = ["ci_egress", "ci_ingress", "ci_ifb"] + ([] if config.steer else ["ci_ingress_match"])
        prog_types = {}
        if config.hold:
            prog_types = {"ci_hold_xmit": bpf_loader.BPF_PROG_TYPE_RAW_TRACEPOINT,
                          "ci_hold_free": bpf_loader.BPF_PROG_TYPE_RAW_TRACEPOINT}
            functions += list(prog_types)
        self._loaded = progcache.load_program(CLASSIFIER_SOURCE, abi.INCLUDE_DIR, config.cflags(), functions,
                                              "the BPF classifier", compile_with=load_bpf, prog_types=prog_types)
        try:
            hooks = {"egress": "ci_egress", "ingress": "ci_ingress", "ifb": "ci_ifb"}
            if not config.steer:
                hooks["ingress_match"] = "ci_ingress_match"
            self.prog_fds = _ProgramFds(self._loaded, hooks)
            maps = self._loaded.maps
            self._rules, self._shapes, self._shape_count = maps["rules"], maps["shapes"], maps["shape_count"]
            self._counters, self._state, self._jitter_table = maps["counters"], maps["rule_state"], maps["jitter_table"]
            self._rule_by_id, self._generation = maps["rule_by_id"], maps["generation"]
            self.flow_cache = maps.get("flows")
            if config.seed is not None:
                maps["seed"].update(self._index(0), struct.pack("=Q", config.seed & 0xFFFFFFFFFFFFFFFF))
            sizes = {
                "ci_rule_key": (abi.RuleKey, self._rules.spec.key_size),
                "ci_rule": (abi.Rule, self._rules.spec.value_size),
                "ci_rule (by id)": (abi.Rule, self._rule_by_id.spec.value_size),
                "ci_shape": (abi.Shape, self._shapes.spec.value_size),
                "ci_counters": (abi.Counters, self._counters.spec.value_size),  # per-CPU: one slot
                "ci_rule_state": (abi.RuleState, self._state.spec.value_size),
            }
            if self.flow_cache is not None:
                sizes["ci_flow_key"] = (abi.FlowKey, self.flow_cache.spec.key_size)
                sizes["ci_flow"] = (abi.Flow, self.flow_cache.spec.value_size)
            abi.check_sizes(sizes)
            if config.hold:
                try:
                    self.hold = HoldRecorder(self._loaded, config.hold_ring_pages)
                except (OSError, Unsupported) as exc:
                    raise Unsupported(f"the hold recording's raw tracepoints did not attach on kernel "
                                      f"{platform.release()}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # -- maps ----------------------------------------------------------------------------------------------
    @staticmethod
    def _index(i: int) -> bytes:
        return struct.pack("=I", i)

    def _bump_generation(self) -> None:
        """Every cached flow verdict made before this is stale: the next packet of each flow walks the shapes
        again. Called after each change of which rules exist (not after a renewal, which changes values only)."""
        raw = self._generation.lookup(self._index(0)) or bytes(8)
        self._generation.update(self._index(0), struct.pack("=Q", struct.unpack("=Q", raw)[0] + 1))

    def set_shapes(self, shapes: list[abi.Shape]) -> None:
        if len(shapes) > MAX_SHAPES:
            raise Unsupported(f"{len(shapes)} match shapes; the classifier supports {MAX_SHAPES}")
        for index, shape in enumerate(shapes):
            self._shapes.update(self._index(index), bytes(shape))
        self._shape_count.update(self._index(0), self._index(len(shapes)))
        self._bump_generation()

    def set_jitter_table(self, table: bytes) -> None:
        """EDT jitter distribution: abi.JITTER_TABLE_SIZE packed s16 values (netem's table format)."""
        values = struct.unpack(f"={len(table) // 2}h", table)
        if len(values) != abi.JITTER_TABLE_SIZE:
            raise Unsupported(f"jitter table has {len(values)} entries, the classifier takes "
                              f"{abi.JITTER_TABLE_SIZE}")
        for index, value in enumerate(values):
            self._jitter_table.update(self._index(index), struct.pack("=h", value))

    def put_rules(self, rules: Iterable[tuple[abi.RuleKey, abi.Rule]]) -> None:
        """Add or replace rules (the by-id copy first, so a packet that finds the key finds its rule)."""
        for key, rule in rules:
            self._rule_by_id.update(self._index(rule.id), bytes(rule))
            self._rules.update(bytes(key), bytes(rule))
        self._bump_generation()

    def refresh_rules(self, rules: Iterable[tuple[abi.RuleKey, abi.Rule]]) -> None:
        """New values (a renewed expiry) for rules that exist already: cached flow verdicts stay valid, since
        they name the rule by id and its values are read per packet. A rule that is gone is not re-added."""
        for key, rule in rules:
            try:
                self._rules.update(bytes(key), bytes(rule), bpf_loader.BPF_EXIST)
            except FileNotFoundError:
                continue
            self._rule_by_id.update(self._index(rule.id), bytes(rule))

    def delete_rule(self, key: abi.RuleKey) -> None:
        raw = self._rules.lookup(bytes(key))
        if raw is None:
            return
        rule = abi.Rule.from_buffer_copy(raw)
        self._rules.delete(bytes(key))
        self._rule_by_id.update(self._index(rule.id), bytes(abi.Rule(id=rule.id)))  # expired: matches nothing
        self._bump_generation()

    def rule_count(self) -> int:
        return len(self._rules.keys())

    def counters(self, rule_id: int) -> dict[str, int]:
        per_cpu = [abi.Counters.from_buffer_copy(raw) for raw in self._counters.lookup_percpu(self._index(rule_id))]
        return {name: sum(getattr(cpu, name) for cpu in per_cpu) for name in abi.COUNTER_FIELDS}

    def cached_flows(self) -> int:
        """Flows with a cached verdict (tests and benchmarks)."""
        return len(self.flow_cache.keys()) if self.flow_cache is not None else 0

    # -- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        hold, self.hold = getattr(self, "hold", None), None
        if hold is not None:
            hold.close()
        loaded, self._loaded = getattr(self, "_loaded", None), None
        if loaded is not None:
            loaded.close()

    def __del__(self) -> None:  # pragma: no cover - safety net; owners call close()
        if getattr(self, "_loaded", None) is not None:
            try:
                self.close()
            except Exception:
                pass
