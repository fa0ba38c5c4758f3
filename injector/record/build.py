"""Recorders for a set of flows: the one builder behind the CLI's ``--record`` (flows from a plan's rules,
runrecord.py) and an experiment's ``record`` block (flows from its lists, experiment.py).

One recorder loads one copy of bpf/record.bpf.c, whose filter map holds ``MAX_FLOWS`` flows. One-way flows
are split over as many recorders as they need (each pair of ends has its own programs anyway); TCP RTT has
one sock_ops recorder on the cgroup, so more RTT flows than its map holds is an error, raised before any
recorder is built (nothing attached, nothing changed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import InvalidSpec
from ..kernel.record_program import MAX_FILTERS  # ctypes only: importable without bcc or root
from ..plan import Interface
from .bpf_recorder import PacketFlow
from .oneway import OneWayRecorder
from .rtt import RttRecorder

MAX_FLOWS = MAX_FILTERS


def rtt_flows(flows: list[PacketFlow], *, field: str) -> list[PacketFlow]:
    """The RTT flows one sock_ops recorder takes: a flow that is another's mirror (src and dst swapped, same
    label: the two directions of one fault) is left out, since the program matches a connection either way
    round and counts it under the first. More than MAX_FLOWS left: InvalidSpec naming the limit."""
    kept: list[PacketFlow] = []
    seen: set[tuple] = set()
    for f in flows:
        key = (f.label, f.src, f.dst, f.sport, f.dport)
        if key in seen:
            continue
        seen.update({key, (f.label, f.dst, f.src, f.dport, f.sport)})
        kept.append(f)
    if len(kept) > MAX_FLOWS:
        raise InvalidSpec(f"{len(kept)} address/port pairs to record TCP RTT for; one RTT recorder (its sock_ops "
                          f"program's filter map) holds at most {MAX_FLOWS}: name fewer hosts or ports", field=field)
    return kept


def build_recorders(oneway: Mapping[tuple[Interface, Interface | None], list[PacketFlow]], rtt: list[PacketFlow],
                    *, cgroup: str | os.PathLike[str] | None, rtt_field: str,
                    rtt_cgroup: str | os.PathLike[str] | None = None) -> list:
    """One-way recorders per (sender, receiver) interface pair, at most MAX_FLOWS flows each (receiver None:
    the socket placement, on ``cgroup``), and one RTT recorder on ``rtt_cgroup`` (default ``cgroup``) for
    ``rtt``. Built, not started."""
    rtt = rtt_flows(rtt, field=rtt_field) if rtt else []
    recorders: list = []
    for (sender, receiver), flows in oneway.items():
        for i in range(0, len(flows), MAX_FLOWS):
            chunk = flows[i:i + MAX_FLOWS]
            if receiver is not None:
                recorders.append(OneWayRecorder(chunk, sender=sender, receiver=receiver))
            else:
                recorders.append(OneWayRecorder(chunk, sender=sender, cgroup=cgroup))
    if rtt:
        recorders.append(RttRecorder(rtt, cgroup=rtt_cgroup if rtt_cgroup is not None else cgroup))
    return recorders


__all__ = ["MAX_FLOWS", "build_recorders", "rtt_flows"]
