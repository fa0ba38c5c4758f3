"""TCP round-trip samples of targeted flows via sock_ops ``BPF_SOCK_OPS_RTT_CB``, on a cgroup.

The sock_ops program is attached (as a BPF link) to a cgroup holding the client (or server) process; for
connections of a recorded flow it switches the RTT callback on when they are established, and each RTT
measurement the TCP stack makes becomes a sample: the measured RTT of that ACK (kernels >= 6.10 pass it;
older ones give the smoothed RTT) with the smoothed RTT (µs) kept beside it (event field ``aux``).
Works across hosts: only the local end needs to be in the cgroup. Only connections established while the
recorder runs are sampled (the callback is switched on at establishment; an older connection has no hook
that would let us switch it on).
"""

from __future__ import annotations

import os
from pathlib import Path

from .bpf_recorder import BpfRecorder, PacketFlow


class RttRecorder(BpfRecorder):
    """Record TCP RTT samples of ``flows`` (src = the connecting side) for sockets of ``cgroup``.

    >>> with RttRecorder([PacketFlow("api->db", "10.0.0.1", "10.0.0.2", dport=5432, protocol="tcp")],
    ...                  cgroup="/sys/fs/cgroup/unified/my-client") as rec:     # doctest: +SKIP
    ...     run_client()
    """

    source = "rtt"
    placement = "sock_ops"

    def __init__(self, flows: list[PacketFlow], *, cgroup: str | os.PathLike[str], events: bool = True,
                 ring_pages: int = 256):
        for f in flows:
            if f.protocol not in (None, "tcp", 6):
                raise ValueError(f"flow {f.label!r}: RTT samples come from TCP only")
        flows = [PacketFlow(f.label, f.src, f.dst, f.sport, f.dport, "tcp", f.rule_id) for f in flows]
        if not Path(cgroup, "cgroup.procs").exists():
            raise ValueError(f"{cgroup} is not a cgroup v2 directory")
        super().__init__(flows, events=events, ring_pages=ring_pages, max_stamps=16)
        self.cgroup = Path(cgroup)

    def _attach(self, program) -> None:
        program.attach_cgroup("cr_sockops", self.cgroup)

    def write(self, run_dir, phases) -> dict:
        out = super().write(run_dir, phases)
        out["cgroup"] = str(self.cgroup)
        return out
