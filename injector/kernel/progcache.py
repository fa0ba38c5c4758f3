"""Compiled BPF programs cached on disk, loaded with bpf(2) directly: bcc's clang runs once per source, options
and kernel, not once per process.

A spec (``ProgramSpec``) is what bcc produced: each function's instructions with its map references blanked
out, and each map's definition. ``load_spec`` turns a spec into a ``LoadedProgram`` (fresh maps, programs
loaded against them, every fd owned by it): so every run still has maps of its own, exactly as with bcc.

The cache is one JSON file per key under ``/var/cache/chaos-inject/bpf`` (a file, never a kernel object: `sweep`
and `status` have nothing to find). Its name is the SHA-256 of everything the compiled bytes depend on: the
source and every header under bpf/include, the compile flags, the kernel headers bcc compiled against, bcc's
library, and the running kernel (release, version, BTF). A file whose recorded key differs from the one asked
for, whose payload digest does not match, that is not root's or that others may write, is not used. Writers
write a temporary file and rename it into place, so two concurrent first runs never leave a torn file.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import logging
import os
import platform
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..errors import Unsupported
from ..files import write_json_atomic
from .headers import ensure_bcc_kernel_source

log = logging.getLogger(__name__)

# CHAOS_INJECT_PROG_CACHE: another directory, or "off" (compile every time, as before the cache)
_SETTING = os.environ.get("CHAOS_INJECT_PROG_CACHE", "/var/cache/chaos-inject/bpf")
ENABLED = _SETTING != "off"
CACHE_ROOT = Path(_SETTING if ENABLED else "/var/cache/chaos-inject/bpf")
FORMAT = 2  # 2: a program type per function (sched_cls, raw tracepoint)
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
LIBBCC = Path("/usr/lib/x86_64-linux-gnu/libbcc.so.0")

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
        body["digest"] = _digest(body)
        return body

    @classmethod
    def from_json(cls, data: dict) -> "ProgramSpec":
        return cls(key=data["key"], license=str(data["license"]),
                   maps=tuple(MapSpec(**m) for m in data["maps"]),
                   functions=tuple(FunctionSpec(f["name"], base64.b64decode(f["insns"]),
                                                tuple((int(i), str(n)) for i, n in f["relocations"]),
                                                int(f["prog_type"]))
                                   for f in data["functions"]))


def _digest(body: dict) -> str:
    payload = {k: v for k, v in body.items() if k != "digest"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# -- the key ---------------------------------------------------------------------------------------------------
def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kernel_identity() -> dict[str, str]:
    """What identifies the running kernel: release, version string, and a digest of its BTF (memoised per boot
    in the cache directory, since hashing 5 MB of BTF costs ~10-30 ms)."""
    ident = {"release": platform.release(), "version": platform.version(), "machine": platform.machine()}
    if not BTF_PATH.exists():
        ident["btf"] = "none"
        return ident
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    memo = CACHE_ROOT / "kernel-identity.json"
    try:
        data = json.loads(memo.read_text())
        if boot_id and data.get("boot_id") == boot_id and data.get("release") == ident["release"] \
                and _trusted(memo):
            ident["btf"] = str(data["btf"])
            return ident
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    ident["btf"] = _file_sha(BTF_PATH)
    if boot_id:
        try:
            write_json_atomic(memo, {"boot_id": boot_id, "release": ident["release"], "btf": ident["btf"]},
                              dir_mode=0o755)
        except OSError as exc:
            log.debug("kernel identity not memoised: %s", exc)
    return ident


def cache_key(source: Path, include_dir: Path, cflags: list[str], functions: list[str],
              kernel: dict[str, str] | None = None) -> tuple[str, dict]:
    """(hex key, the fields it was made of). Every input the compiled bytes depend on is in it."""
    headers = ensure_bcc_kernel_source()
    autoconf = headers / "include/generated/autoconf.h"
    fields = {
        "format": FORMAT,
        "source": _file_sha(source),
        "includes": {p.name: _file_sha(p) for p in sorted(include_dir.glob("*.h"))},
        "cflags": list(cflags),
        "functions": list(functions),
        "kernel": kernel if kernel is not None else kernel_identity(),
        "kernel_headers": {"path": str(headers), "autoconf": _file_sha(autoconf) if autoconf.exists() else "none"},
        "bcc": _bcc_identity(),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest(), fields


def _bcc_identity() -> str:
    try:
        real = LIBBCC.resolve()
        st = real.stat()
        return f"{real.name}:{st.st_size}:{int(st.st_mtime)}"
    except OSError:
        return "unknown"


# -- the cache file --------------------------------------------------------------------------------------------
def _trusted(path: Path) -> bool:
    """Root's (or ours), and writable by no one else: we load what it says into the kernel."""
    st = path.stat()
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


def cache_path(key: str) -> Path:
    return CACHE_ROOT / f"{key}.json"


def read_cached(key: str) -> ProgramSpec | None:
    """The cached spec for ``key``, or None when there is none or it cannot be trusted (then it is recompiled)."""
    path = cache_path(key)
    try:
        if not (_trusted(path) and _trusted(path.parent)):
            log.warning("ignoring %s: not root's, or writable by others", path)
            return None
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or data.get("key") != key or data.get("digest") != _digest(data):
            log.warning("ignoring %s: its key or digest does not match", path)
            return None
        return ProgramSpec.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def write_cached(spec: ProgramSpec) -> None:
    """Atomically (temporary file, fsync, rename); a failure to write only costs the next run a compile."""
    try:
        CACHE_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_json_atomic(cache_path(spec.key), spec.to_json(), dir_mode=0o755)
        os.chmod(cache_path(spec.key), 0o644)
    except OSError as exc:
        log.warning("compiled program not cached (%s): the next run compiles again", exc)


def cached_files() -> list[Path]:
    return sorted(CACHE_ROOT.glob("*.json")) if CACHE_ROOT.is_dir() else []


# -- compile with bcc ------------------------------------------------------------------------------------------
def spec_from_bcc(bpf, key: str, functions: list[str], prog_types: dict[str, int] | None = None) -> ProgramSpec:
    """Read a compiled bcc module back as a spec: its instructions (map fds replaced by relocations) and the
    kernel's own description of each of its maps. Unsupported if the code references anything but its maps."""
    from bcc.libbcc import lib  # noqa: PLC0415 - bcc only when compiling

    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    maps, by_fd = [], {}
    for index in range(lib.bpf_num_tables(bpf.module)):
        name = lib.bpf_table_name(bpf.module, index)
        fd = lib.bpf_table_fd(bpf.module, name)
        info = map_info(fd)
        spec = MapSpec(name.decode(), info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)
        maps.append(spec)
        by_fd[fd] = spec.name
    out = []
    for fname in functions:
        insns = bytearray(bpf.dump_func(fname.encode()))
        relocations = []
        i = 0
        while i < len(insns) // 8:
            op, regs, _, imm = struct.unpack_from("<BBhi", insns, i * 8)
            src = regs >> 4
            if op == LD_IMM64:
                if src == BPF_PSEUDO_MAP_FD:
                    if imm not in by_fd:
                        raise Unsupported(f"{fname}: instruction {i} references fd {imm}, not one of its maps")
                    relocations.append((i, by_fd[imm]))
                    struct.pack_into("<i", insns, i * 8 + 4, 0)
                elif src != 0:
                    raise Unsupported(f"{fname}: instruction {i} is an ld_imm64 of kind {src} (not cacheable)")
                i += 2
                continue
            if op == CALL and src not in (0, 1):
                raise Unsupported(f"{fname}: instruction {i} calls a kernel function (not cacheable)")
            i += 1
        out.append(FunctionSpec(fname, bytes(insns), tuple(relocations),
                                (prog_types or {}).get(fname, BPF_PROG_TYPE_SCHED_CLS)))
    return ProgramSpec(key, "GPL", tuple(maps), tuple(out))


# -- bpf(2) ----------------------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
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
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading a map's description")
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
            _bpf(BPF_MAP_LOOKUP_ELEM, attr, f"reading map {self.spec.name}")
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
        _bpf(BPF_MAP_UPDATE_ELEM, attr, f"writing map {self.spec.name}")

    def delete(self, key: bytes) -> bool:
        attr, _kbuf, _ = self._attr(key, ctypes.create_string_buffer(1))
        attr.value = 0  # the kernel refuses fields past ``key`` that are not zero
        try:
            _bpf(BPF_MAP_DELETE_ELEM, attr, f"deleting from map {self.spec.name}")
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
                _bpf(BPF_MAP_GET_NEXT_KEY, attr, f"listing map {self.spec.name}")
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
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"attaching to raw tracepoint {tracepoint}")


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
        return _bpf(BPF_PROG_LOAD, attr, f"{what}: loading {f.name} on kernel {platform.release()}")
    except OSError as exc:
        # again with the verifier's log, to say why
        log_buf = ctypes.create_string_buffer(1 << 20)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log_buf), ctypes.addressof(log_buf)
        try:
            return _bpf(BPF_PROG_LOAD, attr, f"{what}: loading {f.name} on kernel {platform.release()}")
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
            fd = _bpf(BPF_MAP_CREATE, attr, f"{what}: creating map {m.name}")
            stack.callback(_fd_closer(fd))
            maps[m.name] = BpfMap(fd, m)
        loaded = LoadedProgram(spec, maps, what)
        stack.callback(loaded.close)
        for name in eager if eager is not None else [spec.functions[0].name]:
            loaded._fds[name] = _load_function(loaded._functions[name], maps, spec, what)
        stack.pop_all()
        return loaded


# -- the one entry point ---------------------------------------------------------------------------------------
def load_program(source: Path, include_dir: Path, cflags: list[str], functions: list[str], what: str,
                 compile_with, prog_types: dict[str, int] | None = None) -> LoadedProgram:
    """``functions`` of ``source`` loaded as sched_cls programs (or the type ``prog_types`` names for a
    function) with maps of their own: from the cache when
    it holds this key, else compiled by ``compile_with(source, cflags, what)`` (a bcc module) and then cached
    (only once it has loaded). A cached spec the kernel refuses is compiled again and replaced."""
    typed = [f"{name}:{kind}" for name, kind in sorted((prog_types or {}).items())]
    key, _ = cache_key(source, include_dir, cflags, functions + typed)
    spec = read_cached(key) if ENABLED else None
    if spec is not None:
        try:
            return load_spec(spec, what)
        except OSError as exc:
            log.warning("cached %s did not load (%s): compiling it again", what, exc)
    bpf = compile_with(source, cflags, what)
    try:
        spec = spec_from_bcc(bpf, key, functions, prog_types)
    finally:
        bpf.cleanup()
    try:
        loaded = load_spec(spec, what)
    except OSError as exc:
        raise Unsupported(f"{what} did not load: {exc}") from exc
    if ENABLED:
        write_cached(spec)
    return loaded
