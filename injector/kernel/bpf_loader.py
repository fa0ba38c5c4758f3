"""BPF programs and maps through bpf(2) directly, without bcc: a compiled program as data (``ProgramSpec``: each
function's instructions with its map references blanked out, each map's definition, and its JSON form), and
``load_spec``, which creates fresh maps, loads the functions against them and owns every fd (``LoadedProgram``);
raw tracepoint attachment; one map's lookups and updates (``BpfMap``).

``kernel/progcache.py`` keys and stores the specs that bcc compiled; this room only loads them.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import platform
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..errors import Unsupported

FORMAT = 2  # 2: a program type per function (sched_cls, raw tracepoint)
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
BPF_PROG_LOAD = 5
BPF_EXIST = 2
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_RAW_TRACEPOINT_OPEN = 17
PERCPU_MAP_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
BPF_PSEUDO_MAP_FD = 1
LD_IMM64 = 0x18
CALL = 0x85



# -- specs -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapSpec:
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    insns: bytes                        # map references zeroed
    relocations: tuple[tuple[int, str], ...]  # (instruction index of an ld_imm64, map name)
    prog_type: int = BPF_PROG_TYPE_SCHED_CLS


@dataclass(frozen=True)
class ProgramSpec:
    key: str
    license: str
    maps: tuple[MapSpec, ...]
    functions: tuple[FunctionSpec, ...]

    def to_json(self) -> dict:
        body = {"format": FORMAT, "key": self.key, "license": self.license,
                "maps": [vars(m) for m in self.maps],
                "functions": [{"name": f.name, "prog_type": f.prog_type,
                               "insns": base64.b64encode(f.insns).decode(),
                               "relocations": [list(r) for r in f.relocations]} for f in self.functions]}
        body["digest"] = spec_digest(body)
        return body

    @classmethod
    def from_json(cls, data: dict) -> "ProgramSpec":
        return cls(key=data["key"], license=str(data["license"]),
                   maps=tuple(MapSpec(**m) for m in data["maps"]),
                   functions=tuple(FunctionSpec(f["name"], base64.b64decode(f["insns"]),
                                                tuple((int(i), str(n)) for i, n in f["relocations"]),
                                                int(f["prog_type"]))
                                   for f in data["functions"]))


def spec_digest(body: dict) -> str:
    """SHA-256 of a spec's JSON form without its own ``digest`` field: a torn or edited file does not match."""
    payload = {k: v for k, v in body.items() if k != "digest"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# -- bpf(2) ----------------------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())


def bpf_syscall(cmd: int, attr: ctypes.Structure | ctypes.Array, what: str) -> int:
    """bpf(cmd, &attr, sizeof attr); its result, or OSError naming ``what``."""
    if SYS_BPF is None:
        raise Unsupported(f"{what}: the bpf(2) syscall number of {platform.machine()} is not known here")
    ret = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * 16), ("_rest", ctypes.c_uint8 * 64)]


class _MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32), ("_rest", ctypes.c_uint8 * 64)]


class MapInfo(ctypes.Structure):
    """struct bpf_map_info (its first fields)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("_rest", ctypes.c_uint8 * 64)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf_syscall(BPF_OBJ_GET_INFO_BY_FD, attr, "reading a map's description")
    return info


def possible_cpus() -> int:
    """Number of possible CPUs (the per-CPU maps' value count), from /sys/devices/system/cpu/possible."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


class BpfMap:
    """One map by fd: bytes in, bytes out (callers convert through the ABI mirror)."""

    def __init__(self, fd: int, spec: MapSpec):
        self.fd = fd
        self.spec = spec
        self.percpu = spec.map_type in PERCPU_MAP_TYPES
        self.cpus = possible_cpus() if self.percpu else 1
        self.slot = (spec.value_size + 7) // 8 * 8 if self.percpu else spec.value_size

    def _attr(self, key: bytes, value=None, flags: int = 0) -> tuple[_MapElemAttr, ctypes.Array, ctypes.Array]:
        if len(key) != self.spec.key_size:
            raise ValueError(f"map {self.spec.name}: key of {len(key)} bytes, the map's is {self.spec.key_size}")
        kbuf = ctypes.create_string_buffer(key, len(key))
        vbuf = ctypes.create_string_buffer(self.slot * self.cpus) if value is None else value
        return (_MapElemAttr(map_fd=self.fd, key=ctypes.addressof(kbuf), value=ctypes.addressof(vbuf), flags=flags),
                kbuf, vbuf)

    def lookup(self, key: bytes) -> bytes | None:
        attr, _kbuf, vbuf = self._attr(key)
        try:
            bpf_syscall(BPF_MAP_LOOKUP_ELEM, attr, f"reading map {self.spec.name}")
        except FileNotFoundError:
            return None
        return vbuf.raw

    def lookup_percpu(self, key: bytes) -> list[bytes]:
        raw = self.lookup(key)
        if raw is None:
            return []
        return [raw[i * self.slot:i * self.slot + self.spec.value_size] for i in range(self.cpus)]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        """Write ``key`` -> ``value``; flags BPF_EXIST (2): only if the key is there (FileNotFoundError if not)."""
        if len(value) != self.spec.value_size or self.percpu:
            raise ValueError(f"map {self.spec.name}: value of {len(value)} bytes, the map's is "
                             f"{self.spec.value_size}{' (per-CPU maps are not written from here)' if self.percpu else ''}")
        vbuf = ctypes.create_string_buffer(value, len(value))
        attr, _kbuf, _ = self._attr(key, vbuf, flags)
        bpf_syscall(BPF_MAP_UPDATE_ELEM, attr, f"writing map {self.spec.name}")

    def delete(self, key: bytes) -> bool:
        attr, _kbuf, _ = self._attr(key, ctypes.create_string_buffer(1))
        attr.value = 0  # the kernel refuses fields past ``key`` that are not zero
        try:
            bpf_syscall(BPF_MAP_DELETE_ELEM, attr, f"deleting from map {self.spec.name}")
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        nxt = ctypes.create_string_buffer(self.spec.key_size)
        prev = None
        while True:
            kbuf = ctypes.create_string_buffer(prev, self.spec.key_size) if prev is not None else None
            attr = _MapElemAttr(map_fd=self.fd, key=ctypes.addressof(kbuf) if kbuf is not None else 0,
                                value=ctypes.addressof(nxt))
            try:
                bpf_syscall(BPF_MAP_GET_NEXT_KEY, attr, f"listing map {self.spec.name}")
            except FileNotFoundError:
                return out
            prev = nxt.raw
            out.append(prev)


class LoadedProgram:
    """Maps made from one spec, and its programs loaded against them: the first at once (so a spec the kernel
    refuses is found while it can still be recompiled), the others when first asked for (each costs a verifier
    run, and most engines attach one or two of the four). ``close`` releases every fd; the kernel frees what
    nothing else (such as an attached filter) still holds."""

    def __init__(self, spec: ProgramSpec, maps: dict[str, BpfMap], what: str):
        self.spec = spec
        self.maps = maps
        self.what = what
        self._fds: dict[str, int] = {}
        self._functions = {f.name: f for f in spec.functions}

    def prog_fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            if name not in self._functions:
                raise KeyError(name)
            try:
                fd = _load_function(self._functions[name], self.maps, self.spec, self.what)
            except OSError as exc:
                raise Unsupported(f"{self.what}: {exc}") from exc
            self._fds[name] = fd
        return fd

    @property
    def prog_fds(self) -> dict[str, int]:
        """The programs loaded so far."""
        return dict(self._fds)

    def close(self) -> None:
        fds = [*self._fds.values(), *(m.fd for m in self.maps.values())]
        self._fds, self.maps = {}, {}
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class _RawTracepointAttr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


def attach_raw_tracepoint(prog_fd: int, tracepoint: str) -> int:
    """BPF_RAW_TRACEPOINT_OPEN: a raw tracepoint program attached to ``tracepoint``; closing the returned fd
    detaches it (nothing stays in the kernel when the process dies)."""
    name = ctypes.create_string_buffer(tracepoint.encode())
    attr = _RawTracepointAttr(name=ctypes.addressof(name), prog_fd=prog_fd)
    return bpf_syscall(BPF_RAW_TRACEPOINT_OPEN, attr, f"attaching to raw tracepoint {tracepoint}")


def _fd_closer(fd: int):
    def close() -> None:
        os.close(fd)
    return close


def _load_function(f: FunctionSpec, maps: dict[str, BpfMap], spec: ProgramSpec, what: str) -> int:
    insns = bytearray(f.insns)
    for index, name in f.relocations:
        regs = insns[index * 8 + 1]
        insns[index * 8 + 1] = (regs & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)
        struct.pack_into("<i", insns, index * 8 + 4, maps[name].fd)
    buf = (ctypes.c_char * len(insns)).from_buffer(insns)
    license_buf = ctypes.create_string_buffer(spec.license.encode())
    attr = _ProgLoadAttr(prog_type=f.prog_type, insn_cnt=len(insns) // 8, insns=ctypes.addressof(buf),
                         license=ctypes.addressof(license_buf), prog_name=f.name.encode()[:15])
    try:
        return bpf_syscall(BPF_PROG_LOAD, attr, f"{what}: loading {f.name} on kernel {platform.release()}")
    except OSError as exc:
        # again with the verifier's log, to say why
        log_buf = ctypes.create_string_buffer(1 << 20)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log_buf), ctypes.addressof(log_buf)
        try:
            return bpf_syscall(BPF_PROG_LOAD, attr, f"{what}: loading {f.name} on kernel {platform.release()}")
        except OSError:
            tail = log_buf.value.decode(errors="replace").strip().splitlines()[-3:]
            raise OSError(exc.errno, f"{exc.strerror}; verifier: {' / '.join(tail)}") from exc


def load_spec(spec: ProgramSpec, what: str, eager: list[str] | None = None) -> LoadedProgram:
    """Fresh maps for this process, and the ``eager`` functions (default: the first) loaded against them.
    Half-made: everything closed, OSError."""
    with ExitStack() as stack:
        maps: dict[str, BpfMap] = {}
        for m in spec.maps:
            attr = _MapCreateAttr(map_type=m.map_type, key_size=m.key_size, value_size=m.value_size,
                                  max_entries=m.max_entries, map_flags=m.flags, map_name=m.name.encode()[:15])
            fd = bpf_syscall(BPF_MAP_CREATE, attr, f"{what}: creating map {m.name}")
            stack.callback(_fd_closer(fd))
            maps[m.name] = BpfMap(fd, m)
        loaded = LoadedProgram(spec, maps, what)
        stack.callback(loaded.close)
        for name in eager if eager is not None else [spec.functions[0].name]:
            loaded._fds[name] = _load_function(loaded._functions[name], maps, spec, what)
        stack.pop_all()
        return loaded
