"""EDT engine: delay and jitter decided in the classifier (skb->tstamp, "earliest departure time"), held by an
sch_fq root of ours; loss, corruption and duplication as in the eBPF engine, in the same pass.

The previous root qdisc is snapshotted and restored byte for byte (ledger entry, also for `sweep`). fq's
horizon is sized to the longest requested delay (packets beyond it are capped, not dropped) and its limits to
the delay at a high packet rate, so nothing is dropped for space. Jitter is drawn from a distribution table in
a map (netem's tables), seeded like every other decision, and departures never go backwards within a rule, so
a flow is not reordered. fq holds packets on the way out, so ingress faults go through an IFB device of ours
(a plain match filter + mirred on the interface's ingress; on the IFB, the classifier acts on the ingress rules and
an fq root holds them). If the injector dies the rules' leases expire and packets leave at once.
"""

from __future__ import annotations

import math
import struct

from ..errors import ApplyFailed, Unsupported
from ..kernel import rawnl
from ..kernel.netem import ASSUMED_MAX_PPS, distribution_table
from ..kernel.owner import KernelOwner
from ..kernel.rawnl import TC_H_ROOT, nla
from ..plan import Plan
from ..kernel import tc
from .common import add_ifb, redirect_ingress, replaceable_root, root_entry
from .ebpf import EbpfEngine
from .features import EDT_FEATURES

FQ_MAJOR = 0xC1C0
FQ_HANDLE = FQ_MAJOR << 16
TCA_FQ_PLIMIT, TCA_FQ_FLOW_PLIMIT, TCA_FQ_HORIZON, TCA_FQ_HORIZON_DROP = 1, 2, 14, 15


def fq_attrs(plan: Plan) -> bytes:
    hold_ns = max(f.delay_ns + 4 * f.jitter_ns for f in plan.faults)
    limit = max(10_000, math.ceil(hold_ns / 1e9 * ASSUMED_MAX_PPS * 1.5))
    horizon_us = max(10_000_000, 2 * hold_ns // 1000)
    options = (nla(TCA_FQ_PLIMIT, struct.pack("=I", limit)) + nla(TCA_FQ_FLOW_PLIMIT, struct.pack("=I", limit))
               + nla(TCA_FQ_HORIZON, struct.pack("=I", min(horizon_us, 0xFFFFFFFF)))
               + nla(TCA_FQ_HORIZON_DROP, struct.pack("=B", 0)))
    return nla(rawnl.TCA_KIND, b"fq\0") + nla(rawnl.TCA_OPTIONS, options)


class EdtEngine(EbpfEngine):
    name = "edt"
    features = EDT_FEATURES

    def check(self, plan: Plan):
        if any(r.match.hook == "ingress" for r in plan.rules):
            from ..kernel.probe import probe

            if any(plan.fault_of(r).duplicate_ratio for r in plan.rules if r.match.hook == "ingress"):
                raise Unsupported("the EDT engine does not duplicate ingress packets; use the netem engine")
            if not probe().ifb:
                raise Unsupported("the EDT engine needs IFB devices (ifb) for ingress faults")
        tables = {f.distribution for f in plan.faults if f.jitter_ns and f.distribution not in (None, "uniform")}
        if len(tables) > 1:
            raise Unsupported("the EDT engine takes one jitter distribution per run")
        links = super().check(plan)
        for iface, info in links.items():
            info["previous_root"] = None
            if "egress" in plan.hooks_for(iface):  # ingress only: the interface's root qdisc is not touched
                info["previous_root"] = replaceable_root(iface, info, FQ_MAJOR)
        return links

    def apply(self, plan: Plan, owner: KernelOwner, expires_ns: int) -> None:
        links = self.check(plan)
        self._plan = plan
        for iface, info in links.items():
            if "egress" in plan.hooks_for(iface):
                ifindex = info["index"]
                owner.create(root_entry(iface, ifindex, FQ_HANDLE, info["previous_root"]),
                             lambda: self._replace_root(iface, ifindex, plan))
        super().apply(plan, owner, expires_ns)

    def _attach(self, owner: KernelOwner, iface, ifindex: int, hook: str, program, filter_name: str) -> None:
        if hook == "egress":
            return super()._attach(owner, iface, ifindex, hook, program, filter_name)
        ifb, ifb_index = add_ifb(owner, iface)
        self._replace_root(ifb, ifb_index, self._plan)  # a new IFB: its qdiscs go with it
        tc.add_clsact(ifb_index, ifb.netns)
        tc.add_bpf_filter(ifb_index, "egress", 1, program.prog_fds["ifb"], filter_name, ifb.netns)
        redirect_ingress(owner, iface, ifindex, program.prog_fds["ingress_match"], filter_name, ifb_index)

    def _prepare(self, program, plan: Plan) -> None:
        tables = {f.distribution for f in plan.faults if f.jitter_ns and f.distribution not in (None, "uniform")}
        if tables:
            program.set_jitter_table(distribution_table(tables.pop()))

    @staticmethod
    def _replace_root(iface, ifindex: int, plan: Plan) -> None:
        try:
            with rawnl.rtnl(iface.netns) as sock:
                sock.add_qdisc(ifindex, TC_H_ROOT, FQ_HANDLE, fq_attrs(plan), replace=True)
        except OSError as exc:
            raise ApplyFailed(f"replacing the root qdisc of {iface} with fq failed: {exc}") from exc
