"""Recording programs (bpf/record.bpf.c): load, attach through BPF links, read the ring buffer and histograms.

Attachments are BPF links (tcx on an interface, cgroup_skb / sock_ops on a cgroup): the kernel detaches a
link when its last fd closes, so nothing of ours stays attached if the process dies, even by SIGKILL. Kernels
before 6.6 have no tcx: there the tc programs go into cls_bpf filters on clsact, owned by a KernelOwner of
the recording (its ledger lets `chaos-inject sweep` remove them after a SIGKILL).

The ring buffer is read by mapping it ourselves (the kernel's layout: a consumer-position page we write,
then a producer-position page and the data area mapped twice in a row, so a record that wraps is contiguous
in memory). Every record here has the same size, so a batch of them is one numpy structured array: no
Python call per event.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Unsupported
from . import abi
from .abi import HIST_BUCKETS, RECORD_PHASES
from .bpf import BPF_LINK_CREATE, bpf_syscall, import_bcc, load_bpf, prog_test_run
from .ring import RingReader  # the ring reader lives in ring.py (the classifier's hold uses it too)

RECORD_SOURCE = abi.BPF_DIR / "record.bpf.c"
MAX_FILTERS = 16
PHASES = len(RECORD_PHASES)    # the histogram map's phase index (record_abi.h)

F_EVENTS = 1

# bpf(2) link attach types
BPF_CGROUP_INET_INGRESS = 0
BPF_CGROUP_SOCK_OPS = 3
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47

class Filter(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint8), ("proto", ctypes.c_uint8), ("sport", ctypes.c_uint16),
                ("dport", ctypes.c_uint16), ("flags", ctypes.c_uint16), ("saddr", ctypes.c_uint32 * 4),
                ("daddr", ctypes.c_uint32 * 4)]


class Counters(ctypes.Structure):
    _fields_ = [("stamped", ctypes.c_uint64), ("stamp_full", ctypes.c_uint64), ("matched", ctypes.c_uint64),
                ("events", ctypes.c_uint64), ("lost", ctypes.c_uint64)]


COUNTER_FIELDS = tuple(name for name, _ in Counters._fields_)

def _bpf_link_create(prog_fd: int, target: int, attach_type: int) -> int:
    attr = (ctypes.c_uint8 * 64)()
    struct.pack_into("=IIII", attr, 0, prog_fd, target, attach_type, 0)
    return bpf_syscall(BPF_LINK_CREATE, attr, f"BPF_LINK_CREATE (attach type {attach_type})")


@dataclass(frozen=True)
class RecordConfig:
    """Load-time configuration, passed as cflags."""

    ring_pages: int = 1024           # 4 MiB: ~130,000 events of slack for the reader
    max_stamps: int = 65536
    l2_len: int = 14

    def __post_init__(self) -> None:
        if self.ring_pages < 1 or self.ring_pages & (self.ring_pages - 1):
            raise ValueError(f"ring_pages must be a power of two, not {self.ring_pages}")

    def cflags(self) -> list[str]:
        return [f"-I{abi.INCLUDE_DIR}", f"-DCR_RING_PAGES={self.ring_pages}", f"-DCR_MAX_STAMPS={self.max_stamps}",
                f"-DCR_L2_LEN={self.l2_len}", "-Wno-comment"]


class RecordProgram:
    """A loaded copy of bpf/record.bpf.c: its maps, and the links attaching its programs."""

    def __init__(self, config: RecordConfig = RecordConfig()):
        self._bcc = import_bcc()
        self.config = config
        self._links: list[int] = []
        self._owner = None  # a KernelOwner, only for the clsact fallback
        self._fds: dict[str, int] = {}
        self.ring: RingReader | None = None
        self._hist_map: mmap.mmap | None = None
        self._bpf = load_bpf(RECORD_SOURCE, config.cflags(), "the recording BPF programs")
        try:
            self._filters = self._bpf[b"filters"]
            self._phase = self._bpf[b"phase"]
            self._counters = self._bpf[b"counters"]
            abi.check_sizes({"cr_filter": (Filter, ctypes.sizeof(self._filters.Leaf)),
                             "cr_counters": (Counters, ctypes.sizeof(self._counters.sLeaf))})
            ring_fd = self._bpf[b"events"].map_fd
            self.ring = RingReader(ring_fd, config.ring_pages * mmap.PAGESIZE)
            hist_bytes = MAX_FILTERS * PHASES * HIST_BUCKETS * 8
            self._hist_map = mmap.mmap(self._bpf[b"hist"].map_fd, _round_page(hist_bytes), mmap.MAP_SHARED,
                                       mmap.PROT_READ, offset=0)
            self._hist_bytes = hist_bytes
        except BaseException:
            self.close()
            raise

    def prog_fd(self, name: str) -> int:
        if name not in self._fds:
            kinds = {"cr_stamp": "SCHED_CLS", "cr_match_tc": "SCHED_CLS", "cr_match_sk": "CGROUP_SKB",
                     "cr_sockops": "SOCK_OPS", "cr_bench_event": "SCHED_CLS", "cr_bench_hist": "SCHED_CLS",
                     "cr_bench_clock": "SCHED_CLS", "cr_bench_event_batch": "SCHED_CLS"}
            kind = getattr(self._bcc.BPF, kinds[name])
            try:
                self._fds[name] = self._bpf.load_func(name.encode(), kind).fd
            except Exception as exc:
                raise Unsupported(f"the recording program {name} did not load: {exc}") from exc
        return self._fds[name]

    def prog_ids(self) -> list[int]:
        """Kernel ids of the programs loaded so far (what `bpftool prog show` lists)."""
        return [prog_id_of_fd(fd) for fd in self._fds.values()]

    # -- configuration --------------------------------------------------------------------------------------
    def set_filters(self, filters: list[Filter]) -> None:
        if len(filters) > MAX_FILTERS:
            raise ValueError(f"{len(filters)} flows to record; one recorder takes at most {MAX_FILTERS}")
        for index in range(MAX_FILTERS):
            f = filters[index] if index < len(filters) else Filter()
            self._filters[ctypes.c_int(index)] = self._filters.Leaf.from_buffer_copy(bytes(f))

    def set_phase(self, index: int) -> None:
        self._phase[ctypes.c_int(0)] = ctypes.c_uint32(index)

    # -- attachments (BPF links: gone when closed or when the process dies) ---------------------------------
    def attach_tc(self, program: str, ifname: str, netns: str | None, hook: str, *, mode: str = "auto") -> str:
        """Attach at tc ``hook``: a tcx link (kernels >= 6.6; runs before every cls_bpf filter), else
        (``auto`` on older kernels, or ``mode="clsact"``) a cls_bpf filter of ours at the lowest free priority,
        owned through a ledger so `chaos-inject sweep` removes it if we die. Returns the mode used."""
        from .netns import in_netns

        if mode not in ("auto", "tcx", "clsact"):
            raise ValueError(f"mode must be auto, tcx or clsact, not {mode!r}")
        attach = {"egress": BPF_TCX_EGRESS, "ingress": BPF_TCX_INGRESS}[hook]
        fd = self.prog_fd(program)
        with in_netns(netns):
            ifindex = socket_if_nametoindex(ifname)
            if mode != "clsact":
                try:
                    self._links.append(_bpf_link_create(fd, ifindex, attach))
                    return "tcx"
                except OSError as exc:
                    # EINVAL: the kernel does not know the tcx attach types; anything else is a real failure
                    if mode == "tcx" or exc.errno != errno.EINVAL:
                        raise Unsupported(f"cannot attach {program} to {ifname} {hook} (tcx link): {exc}") from exc
        self._attach_clsact(fd, ifname, ifindex, netns, hook)
        return "clsact"

    def _attach_clsact(self, fd: int, ifname: str, ifindex: int, netns: str | None, hook: str) -> None:
        import secrets

        from . import clsact, tc
        from .owner import KernelOwner

        if self._owner is None:
            owner = KernelOwner(f"record-{secrets.token_hex(4)}", meta={"kind": "recording"}, handle_signals=False)
            owner.__enter__()
            self._owner = owner
        where = {"netns": netns, "ifname": ifname, "ifindex": ifindex}
        with clsact.use(self._owner, netns, ifname, ifindex):  # shared with runs: see kernel/clsact.py
            prio = tc.free_prio(ifindex, hook, netns)
            name = f"chaos-inject-rec:{self._owner.run_id}"
            self._owner.create({"kind": "bpf-filter", **where, "hook": hook, "prio": prio, "name": name},
                               lambda: tc.add_bpf_filter(ifindex, hook, prio, fd, name, netns))

    def attach_cgroup(self, program: str, cgroup: str | os.PathLike[str]) -> None:
        attach = {"cr_match_sk": BPF_CGROUP_INET_INGRESS, "cr_sockops": BPF_CGROUP_SOCK_OPS}[program]
        fd = self.prog_fd(program)
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._links.append(_bpf_link_create(fd, cg, attach))
        except OSError as exc:
            raise Unsupported(f"cannot attach {program} to cgroup {cgroup}: {exc}") from exc
        finally:
            os.close(cg)

    def detach_all(self) -> None:
        while self._links:
            os.close(self._links.pop())
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.__exit__(None, None, None)  # filters (and a clsact we made) removed, ledger deleted

    # -- reading --------------------------------------------------------------------------------------------
    def counters(self) -> dict[int, dict[str, int]]:
        out = {}
        for rule in range(MAX_FILTERS):
            per_cpu = self._counters.getvalue(ctypes.c_int(rule))
            total = {name: sum(getattr(cpu, name) for cpu in per_cpu) for name in COUNTER_FIELDS}
            if any(total.values()):
                out[rule] = total
        return out

    def histograms(self) -> np.ndarray:
        """Copy of the in-kernel histograms, shape (filters, phases, buckets), uint64 counts."""
        raw = np.frombuffer(self._hist_map, np.uint64, count=self._hist_bytes // 8).copy()
        return raw.reshape(MAX_FILTERS, PHASES, HIST_BUCKETS)

    def test_run(self, program: str, repeat: int) -> int:
        """Run a benchmark program ``repeat`` times in the kernel (BPF_PROG_TEST_RUN); mean ns per run."""
        return prog_test_run(self.prog_fd(program), bytes(64), repeat).mean_ns

    # -- lifetime -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.detach_all()
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self._hist_map is not None:
            self._hist_map.close()
            self._hist_map = None
        bpf, self._bpf = getattr(self, "_bpf", None), None
        if bpf is not None:
            bpf.cleanup()


def prog_id_of_fd(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise ValueError(f"fd {fd} is not a BPF program")


def socket_if_nametoindex(ifname: str) -> int:
    import socket

    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise Unsupported(f"no interface {ifname!r} here") from exc


def _round_page(n: int) -> int:
    return (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE


# -- cgroups ------------------------------------------------------------------------------------------------
def cgroup2_root() -> Path:
    """Mount point of the cgroup v2 hierarchy (unified or hybrid layout)."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    raise Unsupported("no cgroup v2 hierarchy is mounted (needed for socket-side and sock_ops recording)")


class Cgroup:
    """A cgroup v2 directory made by us; ``close`` moves its processes back to the parent and removes it."""

    def __init__(self, name: str):
        self.path = cgroup2_root() / name
        os.mkdir(self.path)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def close(self) -> None:
        if not self.path.exists():
            return
        for pid in self.pids():  # only processes we (or our children) put here
            try:
                (self.path.parent / "cgroup.procs").write_text(f"{pid}\n")
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
        os.rmdir(self.path)

    def __enter__(self) -> "Cgroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
