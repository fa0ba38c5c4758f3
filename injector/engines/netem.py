"""netem engine: the classifier steers a flow's packets into a class of our prio root whose leaf is netem.

Tree on the interface while a run lasts (handle C1A0: is ours)::

    prio C1A0: (root, replaces the previous root, which is restored byte for byte at the end)
      bands 1-3   the default path, pfifo_fast's priomap: every unmatched packet, no added delay
      band  4+i   netem C1A1+i: with the plan's fault i (delay, jitter + distribution, correlation, loss
                  random/GE, duplicate, corrupt, reorder, rate; limit sized from rate x delay)
      filter      our cls_bpf classifier (steer mode): matched + lease valid -> C1A0:4+i, else the default path

Ingress faults: our classifier on the interface's clsact ingress redirects matched packets to an IFB device of
ours, whose root is the same tree (its filter runs ci_ifb); the IFB then hands them back to the stack.

If the injector dies, the rules' leases expire and every packet takes the default path; `sweep` restores the
previous root qdisc and removes the IFB from the ledger.
"""

from __future__ import annotations

from ..errors import ApplyFailed, Unsupported
from ..kernel import rawnl, tc
from ..kernel.netem import DEFAULT_BANDS, netem_attrs, prio_attrs
from ..kernel.owner import KernelOwner
from ..kernel.rawnl import TC_H_ROOT
from ..plan import Interface, Plan
from .common import (LeasedRules, add_ifb, classifier_config, interface_links, redirect_ingress, replaceable_root,
                     require_root, root_entry)

QDISC_MAJOR = 0xC1A0
ROOT_HANDLE = QDISC_MAJOR << 16
FAULT_MINOR = DEFAULT_BANDS + 1
MAX_FAULTS = 16 - DEFAULT_BANDS  # prio has at most 16 bands
L2_LEN = 14


def netem_handle(fault_index: int) -> int:
    return (QDISC_MAJOR + 1 + fault_index) << 16


class NetemEngine:
    name = "netem"

    def __init__(self) -> None:
        self._rules: LeasedRules | None = None
        self._links: dict[Interface, dict] = {}
        self._first_rule_of_fault: dict[int, int] = {}
        self._trees: list[tuple[str | None, int]] = []  # (netns, ifindex) of every device with our tree

    def check(self, plan: Plan) -> dict[Interface, dict]:
        require_root("to replace qdiscs")
        if len(plan.faults) > MAX_FAULTS:
            raise Unsupported(f"netem engine: at most {MAX_FAULTS} different faults per run")
        if any(r.match.hook == "ingress" for r in plan.rules):
            from ..kernel.probe import probe

            if not probe().ifb:
                raise Unsupported("netem engine: ingress faults need IFB devices (ifb), which this kernel lacks")
        links = interface_links(plan)
        for iface, info in links.items():
            if info["type"] not in (1, 772):
                raise Unsupported(f"netem engine: interface {iface.name} is not Ethernet-like")
            info["previous_root"] = None
            if "egress" in plan.hooks_for(iface):  # ingress only: the interface's root qdisc is not touched
                info["previous_root"] = replaceable_root(iface, info, QDISC_MAJOR)
        return links

    def apply(self, plan: Plan, owner: KernelOwner, expires_ns: int) -> None:
        self._links = self.check(plan)

        def steer(planned, rule) -> None:
            # skb->tc_classid holds 16 bits: the minor; the filter's classid supplies our major
            rule.classid = FAULT_MINOR + planned.fault_index

        self._rules = rules = LeasedRules(plan, owner, classifier_config(
            len(plan.rules), l2_len=L2_LEN, seed=plan.seed, steer=True,
            hold=any(f.delay_ns for f in plan.faults)), expires_ns, steer)
        self._first_rule_of_fault = {}
        for planned in plan.rules:
            self._first_rule_of_fault.setdefault(planned.fault_index, planned.rule_id)
        filter_name = f"chaos-inject:{plan.run_id}"
        self._trees = []
        for iface, info in self._links.items():
            ifindex, previous = info["index"], info["previous_root"]
            hooks = plan.hooks_for(iface)
            if "egress" in hooks:
                owner.create(root_entry(iface, ifindex, ROOT_HANDLE, previous),
                             lambda: self._replace_root(iface, ifindex, len(plan.faults)))
                self._build_tree(iface, ifindex, plan, rules.program.prog_fds["egress"], filter_name)
            if "ingress" in hooks:
                self._ingress_through_ifb(iface, ifindex, plan, owner, rules, filter_name)

    def _ingress_through_ifb(self, iface: Interface, ifindex: int, plan: Plan, owner: KernelOwner,
                             rules: LeasedRules, filter_name: str) -> None:
        """Matched arriving packets are redirected to an IFB device of ours, whose root is the same tree."""
        ifb, ifb_index = add_ifb(owner, iface)
        with rawnl.rtnl(iface.netns) as sock:  # a new IFB: nothing of anyone's to keep; it goes with the link
            sock.add_qdisc(ifb_index, TC_H_ROOT, ROOT_HANDLE, prio_attrs(DEFAULT_BANDS + len(plan.faults)),
                           replace=True)
        self._build_tree(ifb, ifb_index, plan, rules.program.prog_fds["ifb"], filter_name)
        redirect_ingress(owner, iface, ifindex, rules.program.prog_fds["ingress"], filter_name, ifb_index)

    def _build_tree(self, iface: Interface, ifindex: int, plan: Plan, prog_fd: int, filter_name: str) -> None:
        """netem leaves (one per fault) and our steering filter under our prio root; they go with the root."""
        try:
            with rawnl.rtnl(iface.netns) as sock:
                for index, fault in enumerate(plan.faults):
                    sock.add_qdisc(ifindex, ROOT_HANDLE | (FAULT_MINOR + index), netem_handle(index),
                                   netem_attrs(fault))
            tc.add_bpf_filter_at(ifindex, ROOT_HANDLE, 1, ROOT_HANDLE, prog_fd, filter_name, iface.netns)
        except OSError as exc:
            raise ApplyFailed(f"building the netem tree on {iface} failed: {exc}") from exc
        self._trees.append((iface.netns, ifindex))

    @staticmethod
    def _replace_root(iface: Interface, ifindex: int, faults: int) -> None:
        try:
            with rawnl.rtnl(iface.netns) as sock:
                sock.add_qdisc(ifindex, TC_H_ROOT, ROOT_HANDLE, prio_attrs(DEFAULT_BANDS + faults), replace=True)
        except OSError as exc:
            raise ApplyFailed(f"replacing the root qdisc of {iface} failed: {exc}") from exc

    def renew(self, expires_ns: int) -> None:
        assert self._rules is not None
        self._rules.renew(expires_ns)

    def counters(self) -> dict[int, dict[str, int]]:
        assert self._rules is not None
        out = self._rules.counters()
        for ctr in out.values():
            ctr["dropped_packets"] = 0
            for unmeasured in ("corrupted_packets", "duplicated_packets"):  # netem does not count them
                ctr.pop(unmeasured, None)
        # a netem leaf's drops (random or burst loss) are booked on the first rule of its fault
        for netns, ifindex in self._trees:
            with rawnl.rtnl(netns) as sock:
                leaves = {q.handle: q for q in sock.qdiscs(ifindex)}
            for fault_index, rule_id in self._first_rule_of_fault.items():
                leaf = leaves.get(netem_handle(fault_index))
                out[rule_id]["dropped_packets"] += leaf.stats.get("drops", 0) if leaf else 0
        return out
