"""The per-flow classifier program: compile (bcc), load, and read/write its maps.

This module and the rest of chaosinject.kernel are the only places that import bcc.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import Unsupported
from . import abi
from .headers import ensure_bcc_kernel_source

CLASSIFIER_SOURCE = abi.BPF_DIR / "classifier.bpf.c"
DEFAULT_MAX_RULES = 1024
MAX_SHAPES = 16

_compile_lock = threading.Lock()  # bcc's compiler is not re-entrant: one lock for every program we load

# bpf(2) itself, for what bcc does not wrap (BPF links, test runs)
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
BPF_PROG_TEST_RUN = 10
BPF_LINK_CREATE = 28
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class ClassifierConfig:
    """Load-time configuration, passed as cflags (never by editing C text)."""

    max_rules: int = DEFAULT_MAX_RULES
    l2_len: int = 14
    seed: int | None = None
    dup_mark: int = 0x40000000
    steer: bool = False  # netem engine: classify into our prio qdisc's classes instead of acting
    hold: bool = False   # record each delayed packet's hold (classifier -> device transmit) from the kernel's clock
    hold_ring_pages: int = 1024  # 4 MiB: ~130,000 samples between two drains (one a lease)

    def cflags(self) -> list[str]:
        flags = [f"-I{abi.INCLUDE_DIR}", f"-DCI_MAX_RULES={self.max_rules}", f"-DCI_MAX_SHAPES={MAX_SHAPES}",
                 f"-DCI_L2_LEN={self.l2_len}", f"-DCI_DUP_MARK={self.dup_mark:#x}u", "-Wno-comment"]
        if self.steer:
            flags.append("-DCI_STEER=1")
        if self.hold:
            flags += ["-DCI_HOLD=1", f"-DCI_HOLD_RING_PAGES={self.hold_ring_pages}"]
        if self.seed is not None:
            flags.append(f"-DCI_SEED={self.seed & 0xFFFFFFFFFFFFFFFF:#x}ull")
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


def bpf_syscall(cmd: int, attr: ctypes.Structure | ctypes.Array, what: str) -> int:
    """bpf(cmd, &attr, sizeof attr); its result, or OSError naming ``what``."""
    if SYS_BPF is None:
        raise Unsupported(f"{what}: the bpf(2) syscall number of {platform.machine()} is not known here")
    ret = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


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
    """The hold samples of a classifier loaded with ``hold``: raw tracepoints attached (released with the BPF
    object: they are fd-held, nothing stays in the kernel when the process dies), the ring buffer drained
    into per-rule numpy arrays."""

    def __init__(self, bpf, ring_pages: int):
        from .ring import RingReader

        self._bpf = bpf
        bpf.attach_raw_tracepoint(tp=HOLD_XMIT_TRACEPOINT.encode(), fn_name=b"ci_hold_xmit")
        for tp in HOLD_FREE_TRACEPOINTS:
            bpf.attach_raw_tracepoint(tp=tp.encode(), fn_name=b"ci_hold_free")
        self._ring = RingReader(bpf[b"hold_events"].map_fd, ring_pages * mmap_pagesize())
        self._lost = bpf[b"hold_lost"]
        self._lock = threading.Lock()
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
        return int(sum(self._lost.getvalue(ctypes.c_int(0))))

    def close(self) -> None:
        with self._lock:
            ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()


def mmap_pagesize() -> int:
    import mmap

    return mmap.PAGESIZE


class ClassifierProgram:
    """A loaded classifier: two entry points (egress, ingress) sharing one set of maps."""

    def __init__(self, config: ClassifierConfig):
        bcc = import_bcc()
        self.config = config
        self.hold: HoldRecorder | None = None
        self._bpf = load_bpf(CLASSIFIER_SOURCE, config.cflags(), "the BPF classifier")
        try:
            names = ["ci_egress", "ci_ingress", "ci_ifb"] + ([] if config.steer else ["ci_ingress_match"])
            fds = {}
            for name in names:
                try:
                    fds[name] = self._bpf.load_func(name.encode(), bcc.BPF.SCHED_CLS).fd
                except Exception as exc:  # bcc raises bare Exception when the verifier refuses a program
                    raise Unsupported(f"the BPF classifier's {name} did not load on kernel {platform.release()}: "
                                      f"{exc}") from exc
            # on our IFB (netem: steer; EDT: act on ingress rules) and, for EDT, the plain ingress match
            self.prog_fds = {"egress": fds["ci_egress"], "ingress": fds["ci_ingress"], "ifb": fds["ci_ifb"]}
            if not config.steer:
                self.prog_fds["ingress_match"] = fds["ci_ingress_match"]
            self._rules = self._bpf[b"rules"]
            self._shapes = self._bpf[b"shapes"]
            self._shape_count = self._bpf[b"shape_count"]
            self._counters = self._bpf[b"counters"]
            self._state = self._bpf[b"rule_state"]
            self._jitter_table = self._bpf[b"jitter_table"]
            abi.check_sizes({
                "ci_rule_key": (abi.RuleKey, ctypes.sizeof(self._rules.Key)),
                "ci_rule": (abi.Rule, ctypes.sizeof(self._rules.Leaf)),
                "ci_shape": (abi.Shape, ctypes.sizeof(self._shapes.Leaf)),
                "ci_counters": (abi.Counters, ctypes.sizeof(self._counters.sLeaf)),  # per-CPU: one slot
                "ci_rule_state": (abi.RuleState, ctypes.sizeof(self._state.Leaf)),
            })
            if config.hold:
                try:
                    self.hold = HoldRecorder(self._bpf, config.hold_ring_pages)
                except Exception as exc:  # bcc raises bare Exception when an attach fails
                    raise Unsupported(f"the hold recording's raw tracepoints did not attach: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # -- maps ----------------------------------------------------------------------------------------------
    def set_shapes(self, shapes: list[abi.Shape]) -> None:
        if len(shapes) > MAX_SHAPES:
            raise Unsupported(f"{len(shapes)} match shapes; the classifier supports {MAX_SHAPES}")
        for index, shape in enumerate(shapes):
            self._shapes[ctypes.c_int(index)] = self._cast(shape, self._shapes.Leaf)
        self._shape_count[ctypes.c_int(0)] = ctypes.c_uint32(len(shapes))

    def set_jitter_table(self, table: bytes) -> None:
        """EDT jitter distribution: abi.JITTER_TABLE_SIZE packed s16 values (netem's table format)."""
        values = struct.unpack(f"={len(table) // 2}h", table)
        if len(values) != abi.JITTER_TABLE_SIZE:
            raise Unsupported(f"jitter table has {len(values)} entries, the classifier takes "
                              f"{abi.JITTER_TABLE_SIZE}")
        for index, value in enumerate(values):
            self._jitter_table[ctypes.c_int(index)] = ctypes.c_int16(value)

    def put_rules(self, rules: Iterable[tuple[abi.RuleKey, abi.Rule]]) -> None:
        for key, rule in rules:
            self._rules[self._cast(key, self._rules.Key)] = self._cast(rule, self._rules.Leaf)

    def delete_rule(self, key: abi.RuleKey) -> None:
        try:
            del self._rules[self._cast(key, self._rules.Key)]
        except KeyError:
            pass

    def rule_count(self) -> int:
        return sum(1 for _ in self._rules.keys())

    def counters(self, rule_id: int) -> dict[str, int]:
        per_cpu = self._counters.getvalue(ctypes.c_int(rule_id))
        return {name: sum(getattr(cpu, name) for cpu in per_cpu) for name in abi.COUNTER_FIELDS}

    @staticmethod
    def _cast(value: ctypes.Structure, target: type) -> ctypes.Structure:
        """Our ctypes mirror -> bcc's generated type (same bytes; sizes checked at load)."""
        return target.from_buffer_copy(bytes(value))

    # -- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        bpf, self._bpf = getattr(self, "_bpf", None), None
        hold, self.hold = getattr(self, "hold", None), None
        if hold is not None:
            hold.close()
        if bpf is not None:
            bpf.cleanup()

    def __del__(self) -> None:  # pragma: no cover - safety net; owners call close()
        if os.getpid() and getattr(self, "_bpf", None) is not None:
            try:
                self.close()
            except Exception:
                pass
