"""ctypes mirror of bpf/include/chaos_abi.h. Sizes are checked against the loaded maps' at load time."""

from __future__ import annotations

import ctypes
import ipaddress
from importlib import resources
from pathlib import Path

# bpf/ is the package chaosinject.bpf (its C sources are package data): found in an install and a checkout alike
BPF_DIR = Path(str(resources.files("chaosinject.bpf")))
INCLUDE_DIR = BPF_DIR / "include"

HOOK_EGRESS = 0
HOOK_INGRESS = 1
HOOKS = {"egress": HOOK_EGRESS, "ingress": HOOK_INGRESS}

F_PARTITION = 1 << 0
F_LOSS = 1 << 1
F_GEMODEL = 1 << 2
F_CORRUPT = 1 << 3
F_DUPLICATE = 1 << 4
F_DELAY = 1 << 5
DIST_UNIFORM, DIST_TABLE = 0, 1
JITTER_TABLE_SIZE = 4096
JITTER_TABLE_SCALE = 8192

PROB_ONE = 1 << 32

# bpf/include/record_abi.h: the recorders' histogram layout and phase index (record/histogram.py and
# record/store.py build on these; the kernel floor owns them, so kernel/record_program.py needs no import upward)
RECORD_PHASES = ("baseline", "fault", "recovery")      # CR_PHASES, in this order
HIST_SUB_BITS = 7                                      # CR_HIST_SUB_BITS
HIST_MAX_MSB = 39                                      # CR_HIST_MAX_MSB
HIST_BUCKETS = (HIST_MAX_MSB - HIST_SUB_BITS + 2) * (1 << HIST_SUB_BITS)   # CR_HIST_BUCKETS


class RuleKey(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("hook", ctypes.c_uint8),
        ("shape", ctypes.c_uint8),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("saddr", ctypes.c_uint32 * 4),
        ("daddr", ctypes.c_uint32 * 4),
    ]


class Shape(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_uint8),
        ("hook", ctypes.c_uint8),
        ("match_proto", ctypes.c_uint8),
        ("match_sport", ctypes.c_uint8),
        ("match_dport", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 3),
        ("smask", ctypes.c_uint32 * 4),
        ("dmask", ctypes.c_uint32 * 4),
    ]


class Rule(ctypes.Structure):
    _fields_ = [
        ("expires_ns", ctypes.c_uint64),
        ("id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("loss_threshold", ctypes.c_uint64),
        ("corrupt_threshold", ctypes.c_uint64),
        ("duplicate_threshold", ctypes.c_uint64),
        ("ge_p_threshold", ctypes.c_uint64),
        ("ge_r_threshold", ctypes.c_uint64),
        ("ge_bad_loss_threshold", ctypes.c_uint64),
        ("ge_good_loss_threshold", ctypes.c_uint64),
        ("classid", ctypes.c_uint32),
        ("jitter_dist", ctypes.c_uint32),
        ("delay_ns", ctypes.c_uint64),
        ("jitter_ns", ctypes.c_uint64),
    ]


class FlowKey(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("hook", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("saddr", ctypes.c_uint32 * 4),
        ("daddr", ctypes.c_uint32 * 4),
    ]


class Flow(ctypes.Structure):
    _fields_ = [("generation", ctypes.c_uint64), ("rule_id", ctypes.c_uint32), ("found", ctypes.c_uint32)]


class Counters(ctypes.Structure):
    _fields_ = [
        ("matched_packets", ctypes.c_uint64),
        ("matched_bytes", ctypes.c_uint64),
        ("dropped_packets", ctypes.c_uint64),
        ("dropped_bytes", ctypes.c_uint64),
        ("corrupted_packets", ctypes.c_uint64),
        ("duplicated_packets", ctypes.c_uint64),
        ("expired_packets", ctypes.c_uint64),
        ("delayed_packets", ctypes.c_uint64),
    ]


COUNTER_FIELDS = tuple(name for name, _ in Counters._fields_ if not name.startswith("_"))


class RuleState(ctypes.Structure):
    _fields_ = [("draws", ctypes.c_uint64), ("ge_bad", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                ("last_departure_ns", ctypes.c_uint64)]


def probability_threshold(ratio: float) -> int:
    """P -> threshold over a 32-bit draw; 1.0 maps to 2^32 so 'always' is exact."""
    return min(PROB_ONE, max(0, round(ratio * PROB_ONE)))


def address_words(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[int]:
    """Address as the four native-endian u32 words the kernel sees in network byte order memory."""
    raw = address.packed.ljust(16, b"\0")
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4)]


def port_be(port: int) -> int:
    """Port as the u16 the BPF program reads from the packet (network order in native memory)."""
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def check_sizes(pairs: dict[str, tuple[type, int]]) -> None:
    """Assert the ctypes mirrors match the compiled program's view of each struct."""
    for name, (ours, theirs) in pairs.items():
        if ctypes.sizeof(ours) != theirs:
            raise AssertionError(f"ABI mismatch for {name}: Python {ctypes.sizeof(ours)} bytes, BPF {theirs}")
