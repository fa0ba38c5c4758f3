"""One-way packet latency between two ends on this host (namespaces), measured in the kernel.

Each packet of a recorded flow is stamped as it leaves the sender's interface (tcx egress) under a key
(addresses, ports, IPv4 id or TCP sequence, length, first 8 payload bytes); the receiver looks the key up,
and the difference is one sample. Two receiving placements:

``tc``      tcx ingress of the receiver's interface: the wire and everything before it (qdiscs on the
            sender's egress: netem, EDT/fq). Blind to holds after the receiver's tc ingress.
``socket``  cgroup_skb ingress on a cgroup holding the receiving sockets: also sees what the receiver's
            netfilter (PREROUTING/INPUT: the userspace engine's ingress NFQUEUE) and IFB (netem/EDT ingress)
            hold. Sockets belong to the cgroup of the process that created them.

Neither placement sees the userspace engine's *egress* hold: it takes packets in the sender's OUTPUT hook,
before any tc hook (and re-sends a copy at release, which is when tc egress stamps it). There are no kprobes
or fentry on this kernel to stamp earlier. ``placement_sees`` states this per engine and hook, and the
summary prints "not measured" rather than a shift that is not there.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..plan import Interface
from .bpf_recorder import BpfRecorder, PacketFlow

PLACEMENTS = ("tc", "socket")


def placement_sees(engine: str, hook: str, placement: str) -> bool:
    """Whether latency recorded at ``placement`` includes what ``engine`` adds for a rule on ``hook``
    (``egress``: the flow's packets leaving its source; ``ingress``: replies arriving at the source)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
    if engine in ("ebpf", "fake"):
        return True  # drops and copies only: nothing is held, so there is nothing to miss
    if engine == "userspace":
        return hook == "ingress" and placement == "socket"
    if engine in ("netem", "edt"):
        return hook == "egress" or placement == "socket"  # ingress: IFB after tcx ingress
    return False


class OneWayRecorder(BpfRecorder):
    """Record one-way latency of ``flows`` sent from ``sender`` and received at ``receiver`` (tc placement)
    or by sockets of the cgroup ``cgroup`` (socket placement).

    >>> rec = OneWayRecorder([PacketFlow("a->b", "10.0.0.1", "10.0.0.2", dport=9000, protocol="udp")],
    ...                      sender=Interface("veth-a", "ns-a"), receiver=Interface("veth-b", "ns-b"))
    >>> with rec:                                 # doctest: +SKIP
    ...     send_traffic()
    >>> rec.events_array()["latency_ns"]          # doctest: +SKIP

    ``events=False`` records histograms only (for packet rates where raw events would be too many); at most
    ``max_events`` raw events (32 bytes each) are kept in memory, the rest only in the histograms (counted as
    ``reader_dropped``).
    """

    source = "oneway"

    def __init__(self, flows: list[PacketFlow], *, sender: Interface, receiver: Interface | None = None,
                 cgroup: str | os.PathLike[str] | None = None, events: bool = True, ring_pages: int = 1024,
                 max_stamps: int = 65536, tc_mode: str = "auto", max_events: int = 10_000_000):
        if (receiver is None) == (cgroup is None):
            raise ValueError("give the receiving end as exactly one of receiver= (an interface: tc placement) "
                             "or cgroup= (socket placement)")
        if cgroup is not None and not Path(cgroup, "cgroup.procs").exists():
            raise ValueError(f"{cgroup} is not a cgroup v2 directory")
        super().__init__(flows, events=events, ring_pages=ring_pages, max_stamps=max_stamps, max_events=max_events)
        self.sender = sender
        self.receiver = receiver
        self.cgroup = None if cgroup is None else Path(cgroup)
        self.placement = "tc" if receiver is not None else "socket"
        self.tc_mode = tc_mode  # auto: tcx links, cls_bpf on clsact where the kernel has no tcx (< 6.6)

    def _attach(self, program) -> None:
        # the matcher first: a packet stamped before the matcher exists would only age in the table
        if self.receiver is not None:
            program.attach_tc("cr_match_tc", self.receiver.name, self.receiver.netns, "ingress", mode=self.tc_mode)
        else:
            program.attach_cgroup("cr_match_sk", self.cgroup)
        self.attached_as = program.attach_tc("cr_stamp", self.sender.name, self.sender.netns, "egress",
                                             mode=self.tc_mode)

    def write(self, run_dir, phases) -> dict:
        out = super().write(run_dir, phases)
        out["sender"] = str(self.sender)
        out["receiver"] = str(self.receiver) if self.receiver else f"cgroup {self.cgroup}"
        out["tc_attach"] = getattr(self, "attached_as", None)  # tcx, or clsact on kernels without tcx
        return out
