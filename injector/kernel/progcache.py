"""Compiled BPF programs cached on disk, loaded with bpf(2) directly: bcc's clang runs once per source, options
and kernel, not once per process.

A spec (``ProgramSpec``) is what bcc produced: each function's instructions with its map references blanked
out, and each map's definition. This room keys, stores and reads specs and turns a bcc module into one;
``kernel/bpf_loader.py`` loads a spec (fresh maps, programs loaded against them, every fd owned by the
``LoadedProgram``): so every run still has maps of its own, exactly as with bcc.

The cache is one JSON file per key under ``/var/cache/chaos-inject/bpf`` (a file, never a kernel object: `sweep`
and `status` have nothing to find). Its name is the SHA-256 of everything the compiled bytes depend on: the
source and every header under bpf/include, the compile flags, the kernel headers bcc compiled against, bcc's
library, and the running kernel (release, version, BTF). A file whose recorded key differs from the one asked
for, whose payload digest does not match, that is not root's or that others may write, is not used. Writers
write a temporary file and rename it into place, so two concurrent first runs never leave a torn file.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import struct
from pathlib import Path

from ..errors import Unsupported
from ..files import write_json_atomic
from .bpf_loader import (BPF_PROG_TYPE_SCHED_CLS, BPF_PSEUDO_MAP_FD, CALL, FORMAT, LD_IMM64, FunctionSpec,
                          LoadedProgram, MapSpec, ProgramSpec, load_spec, map_info, spec_digest)
from .headers import ensure_bcc_kernel_source

log = logging.getLogger(__name__)

# CHAOS_INJECT_PROG_CACHE: another directory, or "off" (compile every time, as before the cache)
_SETTING = os.environ.get("CHAOS_INJECT_PROG_CACHE", "/var/cache/chaos-inject/bpf")
ENABLED = _SETTING != "off"
CACHE_ROOT = Path(_SETTING if ENABLED else "/var/cache/chaos-inject/bpf")
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
LIBBCC = Path("/usr/lib/x86_64-linux-gnu/libbcc.so.0")



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
        if data.get("format") != FORMAT or data.get("key") != key or data.get("digest") != spec_digest(data):
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
