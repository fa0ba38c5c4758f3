"""netem and prio qdisc options, encoded as the kernel reads them (include/uapi/linux/pkt_sched.h)."""

from __future__ import annotations

import math
import struct
from functools import lru_cache
from pathlib import Path

from ..spec.fault import FaultSpec
from .rawnl import NLA_F_NESTED, TCA_KIND, TCA_OPTIONS, nla

TCA_NETEM_CORR, TCA_NETEM_DELAY_DIST, TCA_NETEM_REORDER, TCA_NETEM_CORRUPT = 1, 2, 3, 4
TCA_NETEM_LOSS, TCA_NETEM_RATE, TCA_NETEM_RATE64 = 5, 6, 8
TCA_NETEM_LATENCY64, TCA_NETEM_JITTER64 = 10, 11
NETEM_LOSS_GI, NETEM_LOSS_GE = 1, 2
PSCHED_SHIFT = 6          # legacy 32-bit latency/jitter fields count 64 ns ticks
U32_MAX = 0xFFFFFFFF
DIST_DIRS = (Path("/usr/lib/x86_64-linux-gnu/tc"), Path("/usr/lib/tc"), Path("/usr/lib64/tc"))
DEFAULT_PRIOMAP = bytes([1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])  # pfifo_fast's, for the default bands
DEFAULT_BANDS = 3
ASSUMED_MAX_PPS = 100_000  # sizing of netem's queue when no rate is given


def prob_u32(ratio: float) -> int:
    return min(U32_MAX, max(0, round(ratio * U32_MAX)))


@lru_cache(maxsize=None)
def distribution_table(name: str) -> bytes:
    """iproute2's netem table (normal, pareto, paretonormal) as packed s16 values."""
    for directory in DIST_DIRS:
        path = directory / f"{name}.dist"
        if path.exists():
            values = [int(tok) for line in path.read_text().splitlines()
                      for tok in line.split("#", 1)[0].split()]
            return struct.pack(f"={len(values)}h", *values)
    raise FileNotFoundError(f"netem distribution table {name}.dist not found (iproute2 ships it)")


def netem_limit(fault: FaultSpec) -> int:
    """Packets netem may hold: enough for the delay at the flow's possible rate, so none is dropped for space."""
    hold_s = (fault.delay_ns + 4 * fault.jitter_ns) / 1e9
    pps = fault.rate_bps / 8 / 64 if fault.rate_bps else ASSUMED_MAX_PPS
    return max(1000, math.ceil(hold_s * pps * 1.5))


def netem_attrs(fault: FaultSpec) -> bytes:
    """TCA_KIND + TCA_OPTIONS for a netem qdisc serving ``fault`` (every feature FaultSpec has)."""
    latency_ticks = min(U32_MAX, fault.delay_ns >> PSCHED_SHIFT)
    jitter_ticks = min(U32_MAX, fault.jitter_ns >> PSCHED_SHIFT)
    gap = 1 if fault.reorder_ratio else 0
    loss = 1.0 if fault.partition else fault.loss_ratio
    qopt = struct.pack("=IIIIII", latency_ticks, netem_limit(fault), prob_u32(loss), gap,
                       prob_u32(fault.duplicate_ratio), jitter_ticks)
    extra = b""
    if fault.delay_correlation_ratio:
        extra += nla(TCA_NETEM_CORR, struct.pack("=III", prob_u32(fault.delay_correlation_ratio), 0, 0))
    if fault.jitter_ns and fault.distribution and fault.distribution != "uniform":
        extra += nla(TCA_NETEM_DELAY_DIST, distribution_table(fault.distribution))
    if fault.reorder_ratio:
        extra += nla(TCA_NETEM_REORDER, struct.pack("=II", prob_u32(fault.reorder_ratio), 0))
    if fault.corrupt_ratio:
        extra += nla(TCA_NETEM_CORRUPT, struct.pack("=II", prob_u32(fault.corrupt_ratio), 0))
    if fault.loss_burst:
        ge = fault.loss_burst
        # the kernel takes h = P(no loss in the bad state); users give netem's "1-h"
        model = struct.pack("=IIII", prob_u32(ge.p), prob_u32(ge.r), prob_u32(1.0 - ge.bad_loss_ratio),
                            prob_u32(ge.good_loss_ratio))
        extra += nla(TCA_NETEM_LOSS | NLA_F_NESTED, nla(NETEM_LOSS_GE, model))
    if fault.loss_state:
        gi = fault.loss_state  # struct tc_netem_gimodel: p13, p31, p32, p14, p23
        model = struct.pack("=IIIII", prob_u32(gi.p13), prob_u32(gi.p31), prob_u32(gi.p32), prob_u32(gi.p14),
                            prob_u32(gi.p23))
        extra += nla(TCA_NETEM_LOSS | NLA_F_NESTED, nla(NETEM_LOSS_GI, model))
    if fault.rate_bps:
        rate_bytes = fault.rate_bps // 8
        extra += nla(TCA_NETEM_RATE, struct.pack("=IiIi", min(rate_bytes, U32_MAX), 0, 0, 0))
        if rate_bytes >= U32_MAX:
            extra += nla(TCA_NETEM_RATE64, struct.pack("=Q", rate_bytes))
    if fault.delay_ns:
        extra += nla(TCA_NETEM_LATENCY64, struct.pack("=q", fault.delay_ns))
    if fault.jitter_ns:
        extra += nla(TCA_NETEM_JITTER64, struct.pack("=q", fault.jitter_ns))
    return nla(TCA_KIND, b"netem\0") + nla(TCA_OPTIONS, qopt + extra)


def prio_attrs(bands: int) -> bytes:
    """A prio qdisc: bands 0-2 are the default path (pfifo_fast's priomap), higher bands hold netem leaves."""
    return nla(TCA_KIND, b"prio\0") + nla(TCA_OPTIONS, struct.pack("=i16s", bands, DEFAULT_PRIOMAP))
