"""netem engine: the classifier steers a flow's packets into a class of our prio root whose leaf is netem.

Tree on the interface while a run lasts (handle C1A0: is ours)::

    prio C1A0: (root, replaces the previous root, which is restored byte for byte at the end)
      bands 1-3   the default path, pfifo_fast's priomap: every unmatched packet, no added delay
      band  4     netem with the fault (delay, jitter + distribution, correlation, loss random/GE,
                  duplicate, corrupt, reorder, rate; limit sized from rate x delay)
      filter      our cls_bpf classifier (steer mode): matched + lease valid -> C1A0:4, else the default path

If the injector dies, the rules' leases expire and every packet takes the default path; `sweep` restores the
previous root qdisc from the ledger.
"""

from __future__ import annotations

import os

from ..errors import ApplyFailed, NotPermitted, Unsupported
from ..kernel import rawnl, tc
from ..kernel.bpf import ClassifierConfig, ClassifierProgram
from ..kernel.netem import DEFAULT_BANDS, netem_attrs, prio_attrs
from ..kernel.owner import KernelOwner
from ..kernel.rawnl import TC_H_INGRESS, TC_H_ROOT
from ..plan import Interface, Plan
from .rules import compile_rules

QDISC_MAJOR = 0xC1A0
ROOT_HANDLE = QDISC_MAJOR << 16
FAULT_MINOR = DEFAULT_BANDS + 1
NETEM_HANDLE = (QDISC_MAJOR + 1) << 16
L2_LEN = 14


class NetemEngine:
    name = "netem"

    def __init__(self) -> None:
        self._program: ClassifierProgram | None = None
        self._entries: list = []
        self._links: dict[Interface, dict] = {}

    def check(self, plan: Plan) -> dict[Interface, dict]:
        if os.geteuid() != 0:
            raise NotPermitted("chaos-inject needs root to replace qdiscs; run it with sudo")
        if "ingress" in {r.match.hook for r in plan.rules}:
            raise Unsupported("netem engine: ingress faults (through an IFB device) are not built yet; "
                              "use --direction egress")
        links: dict[Interface, dict] = {}
        for iface in plan.interfaces:
            info = tc.link_info(iface.name, iface.netns)
            if info is None:
                raise Unsupported(f"interface {iface.name!r} does not exist"
                                  + (f" in netns {iface.netns}" if iface.netns else ""))
            if info["type"] not in (1, 772):
                raise Unsupported(f"netem engine: interface {iface.name} is not Ethernet-like")
            with rawnl.rtnl(iface.netns) as sock:
                qdiscs = sock.qdiscs(info["index"])
            root = next((q for q in qdiscs if q.parent == TC_H_ROOT), None)
            if root is not None and root.handle >> 16 == QDISC_MAJOR:
                raise Unsupported(f"{iface.name} already has a chaos-inject root qdisc (another run?); "
                                  "see `chaos-inject status`")
            if root is not None and root.handle != 0:
                children = [q for q in qdiscs if q.parent not in (TC_H_ROOT, TC_H_INGRESS) and q is not root]
                if children:
                    raise Unsupported(f"{iface.name} has a qdisc tree ({root.kind} with {len(children)} child "
                                      "qdisc(s)); replacing it would destroy it: not done")
            info["previous_root"] = root
            links[iface] = info
        return links

    def apply(self, plan: Plan, owner: KernelOwner, expires_ns: int) -> None:
        self._links = self.check(plan)
        program = ClassifierProgram(ClassifierConfig(max_rules=max(64, len(plan.rules)), l2_len=L2_LEN,
                                                     seed=plan.seed, steer=True))
        owner.callback(program.close)
        self._program = program
        shapes, entries = compile_rules(plan.rules, plan.fault, expires_ns)
        for _, rule in entries:
            rule.classid = ROOT_HANDLE | FAULT_MINOR
        program.set_shapes(shapes)
        program.put_rules(entries)
        self._entries = entries
        for iface, info in self._links.items():
            ifindex, previous = info["index"], info["previous_root"]
            entry = {"kind": "root-qdisc", "netns": iface.netns, "ifname": iface.name, "ifindex": ifindex,
                     "handle": ROOT_HANDLE,
                     "previous": None if previous is None or previous.handle == 0 else {
                         "handle": previous.handle, "kind": previous.kind,
                         "attrs_hex": previous.config_attrs.hex()}}
            owner.create(entry, lambda: self._replace_root(iface, ifindex))
            # children of our root: they go with it, so they need no ledger entries of their own
            try:
                with rawnl.rtnl(iface.netns) as sock:
                    sock.add_qdisc(ifindex, ROOT_HANDLE | FAULT_MINOR, NETEM_HANDLE, netem_attrs(plan.fault))
                tc.add_bpf_filter_at(ifindex, ROOT_HANDLE, 1, program.prog_fds["egress"],
                                     f"chaos-inject:{plan.run_id}", iface.netns)
            except OSError as exc:
                raise ApplyFailed(f"building the netem tree on {iface} failed: {exc}") from exc

    @staticmethod
    def _replace_root(iface: Interface, ifindex: int) -> None:
        try:
            with rawnl.rtnl(iface.netns) as sock:
                sock.add_qdisc(ifindex, TC_H_ROOT, ROOT_HANDLE, prio_attrs(DEFAULT_BANDS + 1), replace=True)
        except OSError as exc:
            raise ApplyFailed(f"replacing the root qdisc of {iface} failed: {exc}") from exc

    def renew(self, expires_ns: int) -> None:
        assert self._program is not None
        for _, rule in self._entries:
            rule.expires_ns = expires_ns
        self._program.put_rules(self._entries)

    def counters(self) -> dict[int, dict[str, int]]:
        assert self._program is not None
        out = {rule.id: self._program.counters(rule.id) for _, rule in self._entries}
        # netem's own drops (random or burst loss) belong to the rules that fed it; one fault per run
        drops = 0
        for iface, info in self._links.items():
            with rawnl.rtnl(iface.netns) as sock:
                leaf = next((q for q in sock.qdiscs(info["index"]) if q.handle == NETEM_HANDLE), None)
            drops += leaf.stats.get("drops", 0) if leaf else 0
        first = min(out) if out else None
        for rule_id, ctr in out.items():
            ctr["dropped_packets"] = drops if rule_id == first else 0
            for unmeasured in ("corrupted_packets", "duplicated_packets"):  # netem does not count them
                ctr.pop(unmeasured, None)
        return out
