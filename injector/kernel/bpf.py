"""The per-flow classifier program: compile (bcc), load, and read/write its maps.

This module and the rest of injector.kernel are the only places that import bcc.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from dataclasses import dataclass
from typing import Iterable

from ..errors import Unsupported
from . import abi
from .headers import ensure_bcc_kernel_source

CLASSIFIER_SOURCE = abi.BPF_DIR / "classifier.bpf.c"
DEFAULT_MAX_RULES = 1024
MAX_SHAPES = 16

_compile_lock = threading.Lock()  # bcc's compiler is not re-entrant


@dataclass(frozen=True)
class ClassifierConfig:
    """Load-time configuration, passed as cflags (never by editing C text)."""

    max_rules: int = DEFAULT_MAX_RULES
    l2_len: int = 14
    seed: int | None = None
    dup_mark: int = 0x40000000
    steer: bool = False  # netem engine: classify into our prio qdisc's classes instead of acting

    def cflags(self) -> list[str]:
        flags = [f"-I{abi.INCLUDE_DIR}", f"-DCI_MAX_RULES={self.max_rules}", f"-DCI_MAX_SHAPES={MAX_SHAPES}",
                 f"-DCI_L2_LEN={self.l2_len}", f"-DCI_DUP_MARK={self.dup_mark:#x}u", "-Wno-comment"]
        if self.steer:
            flags.append("-DCI_STEER=1")
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


class ClassifierProgram:
    """A loaded classifier: two entry points (egress, ingress) sharing one set of maps."""

    def __init__(self, config: ClassifierConfig):
        bcc = import_bcc()
        self.config = config
        with _compile_lock:
            try:
                self._bpf = bcc.BPF(src_file=str(CLASSIFIER_SOURCE).encode(), cflags=config.cflags())
            except Exception as exc:  # bcc raises bare Exception on compile/load failure
                raise Unsupported(f"the BPF classifier did not compile or load: {exc}") from exc
        try:
            self.prog_fds = {
                "egress": self._bpf.load_func(b"ci_egress", bcc.BPF.SCHED_CLS).fd,
                "ingress": self._bpf.load_func(b"ci_ingress", bcc.BPF.SCHED_CLS).fd,
            }
            # on our IFB (netem: steer; EDT: act on ingress rules) and, for EDT, the plain ingress match
            self.prog_fds["ifb"] = self._bpf.load_func(b"ci_ifb", bcc.BPF.SCHED_CLS).fd
            if not config.steer:
                self.prog_fds["ingress_match"] = self._bpf.load_func(b"ci_ingress_match", bcc.BPF.SCHED_CLS).fd
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
        if bpf is not None:
            bpf.cleanup()

    def __del__(self) -> None:  # pragma: no cover - safety net; owners call close()
        if os.getpid() and getattr(self, "_bpf", None) is not None:
            try:
                self.close()
            except Exception:
                pass
