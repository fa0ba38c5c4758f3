"""eBPF engine: loss, burst loss, partition, corruption and duplication inside one cls_bpf classifier."""

from __future__ import annotations

from typing import Callable

from ..errors import ApplyFailed, Unsupported
from ..kernel import clsact, tc
from ..kernel.rtnl import NetlinkError
from ..kernel.bpf import MAX_SHAPES, ClassifierProgram
from .common import LeasedRules, classifier_config, interface_links, require_root
from ..kernel.owner import KernelOwner
from ..plan import Interface, Plan
from .rules import compile_rules
from .features import EBPF_FEATURES

ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 65534
L2_LEN_BY_TYPE = {ARPHRD_ETHER: 14, ARPHRD_LOOPBACK: 14, ARPHRD_NONE: 0}


def _step(what: str, fn: Callable[..., None], *args: object) -> Callable[[], None]:
    """One kernel change; a netlink refusal becomes ApplyFailed naming the change (the owner undoes the rest)."""
    def run() -> None:
        try:
            fn(*args)
        except NetlinkError as exc:
            raise ApplyFailed(f"{what} failed: {exc}") from exc
    return run


class EbpfEngine:
    name = "ebpf"
    features = EBPF_FEATURES

    def __init__(self) -> None:
        self._rules: LeasedRules | None = None

    # -- before any change -------------------------------------------------------------------------------
    def check(self, plan: Plan) -> dict[Interface, dict]:
        return self._links(plan)

    def _links(self, plan: Plan) -> dict[Interface, dict]:
        """What the classifier itself needs (subclasses' check() adds theirs; apply() does not repeat it)."""
        require_root("(CAP_NET_ADMIN and CAP_BPF) to attach classifiers")
        unserved = sorted(plan.features() - self.features)
        if unserved:
            raise Unsupported(f"the {self.name} engine does not serve {', '.join(unserved)} "
                              "(see `chaos-inject doctor`)")
        links = interface_links(plan)
        for iface, info in links.items():
            if info["type"] not in L2_LEN_BY_TYPE:
                raise Unsupported(f"interface {iface.name}: link type {info['type']} is not supported "
                                  "(Ethernet, loopback and raw-IP devices are)")
        l2 = {L2_LEN_BY_TYPE[info["type"]] for info in links.values()}
        if len(l2) > 1:
            raise Unsupported("one run cannot mix Ethernet and raw-IP interfaces; split it into two runs")
        shapes, _ = compile_rules(plan.rules, plan.faults, 0)
        if len(shapes) > MAX_SHAPES:
            raise Unsupported(f"the flows need {len(shapes)} match shapes; the classifier has {MAX_SHAPES}")
        return links

    # -- apply -------------------------------------------------------------------------------------------
    def apply(self, plan: Plan, owner: KernelOwner, expires_ns: int) -> None:
        links = self._links(plan)
        l2_len = L2_LEN_BY_TYPE[next(iter(links.values()))["type"]]
        self._rules = rules = LeasedRules(plan, owner, classifier_config(
            len(plan.rules), l2_len=l2_len, seed=plan.seed,
            hold=any(f.delay_ns for f in plan.faults)), expires_ns)   # EDT: the hold each packet got
        self._prepare(rules.program, plan)
        filter_name = f"chaos-inject:{plan.run_id}"
        for iface, info in links.items():
            ifindex = info["index"]
            # the clsact is shared with other runs and recorders: made (marked) if missing, its use recorded, and
            # our filters attached under the clsact lock, so no concurrent release removes it meanwhile
            with clsact.use(owner, iface.netns, iface.name, ifindex):
                for hook in plan.hooks_for(iface):
                    self._attach(owner, iface, ifindex, hook, rules.program, filter_name)

    def _attach(self, owner: KernelOwner, iface: Interface, ifindex: int, hook: str, program: ClassifierProgram,
                filter_name: str) -> None:
        """The classifier, direct-action, on the interface's clsact ``hook``."""
        where = {"netns": iface.netns, "ifname": iface.name, "ifindex": ifindex}
        prio = tc.free_prio(ifindex, hook, iface.netns)
        owner.create({"kind": "bpf-filter", **where, "hook": hook, "prio": prio, "name": filter_name},
                     _step(f"attaching the classifier on {iface} {hook}", tc.add_bpf_filter, ifindex, hook, prio,
                           program.prog_fds[hook], filter_name, iface.netns))

    def _prepare(self, program: ClassifierProgram, plan: Plan) -> None:
        """Fill any further maps before the classifier sees a packet (EDT: the jitter table)."""

    def renew(self, expires_ns: int) -> None:
        assert self._rules is not None
        self._rules.renew(expires_ns)

    def counters(self) -> dict[int, dict[str, int]]:
        assert self._rules is not None
        return self._rules.counters()

    @property
    def program(self) -> ClassifierProgram | None:
        return self._rules.program if self._rules else None
