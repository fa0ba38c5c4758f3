"""Which packets the userspace engine takes, and on which NFQUEUE queue: the faults it serves, the namespaces
of a plan, the queue numbers of a run and their length, the nftables steer rules, and each rule's seed.

Pure functions of the plan: ``engines/userspace.py`` binds the queues and creates the tables from them.
"""

from __future__ import annotations

import hashlib

from ..errors import InvalidSpec
from ..kernel import nftables as nft
from ..plan import Plan, PlannedRule
from ..spec.fault import FaultSpec

RESEND_MARK = 0x63686169     # fwmark ("chai") of our re-sent egress copies: our rules let them pass
QUEUE_BASE = 0x8000          # queue numbers 32768..65535, offset by a hash of the run id


def check_fault(fault: FaultSpec) -> None:
    """The userspace engine delays only: any other netem feature, or no delay, is refused here."""
    unserved = []
    if fault.partition:
        unserved.append("--partition")
    if fault.loss_ratio or fault.loss_burst or fault.loss_state:
        unserved.append("--loss" if fault.loss_ratio else "--loss-burst" if fault.loss_burst else "--loss-state")
    if fault.corrupt_ratio:
        unserved.append("--corrupt")
    if fault.duplicate_ratio:
        unserved.append("--duplicate")
    if fault.reorder_ratio:
        unserved.append("--reorder")
    if fault.rate_bps:
        unserved.append("--rate")
    if unserved:
        raise InvalidSpec(f"the userspace engine serves --delay, --jitter, --distribution and --correlation only, "
                          f"not {', '.join(unserved)} (use the ebpf engine for loss, partition, corruption and "
                          "duplication)", field="engine")
    if not fault.delay_ns:
        raise InvalidSpec("the userspace engine needs --delay", field="delay")


def plan_namespaces(plan: Plan) -> list[str | None]:
    """The namespaces of the plan's interfaces, in order, once each (None: the host's)."""
    seen: dict[str | None, None] = {}
    for iface in plan.interfaces:
        seen.setdefault(iface.netns, None)
    return list(seen)


def queue_base(run_id: str) -> int:
    """Where a run's queue numbers start (a hash of the run id): two runs rarely collide."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:2], "big") & 0x7FFF


def queue_number(base: int, index: int) -> int:
    """The queue of the rule at ``index``, in 32768..65535."""
    return QUEUE_BASE + ((base + index) & 0x7FFF)


def queue_maxlen(fault: FaultSpec) -> int:
    """Room for 20,000 packets/s over the longest delay we draw (at least 4096, at most 1M)."""
    longest_s = (fault.delay_ns + 4 * fault.jitter_ns) / 1e9
    return int(min(max(4096, 20_000 * longest_s), 1 << 20))


def rule_seed(root: int, rule: PlannedRule) -> int:
    """The rule's own seed from the run's: its delays repeat with the run's seed."""
    return int.from_bytes(hashlib.sha256(f"{root}:{rule.rule_id}".encode()).digest()[:8], "big")


def steer_rules(plan: Plan, netns: str | None, base: int, copy_egress: bool = True) -> list[nft.SteerRule]:
    """One nftables rule per planned rule in ``netns``, to queue ``base + index``; egress copies skip our mark."""
    out = []
    for index, rule in enumerate(r for r in plan.rules if r.interface.netns == netns):
        m = rule.match
        copy = copy_egress and m.hook == "egress"
        out.append(nft.SteerRule(hook=m.hook, ifname=rule.interface.name, family=m.family, protocol=m.protocol,
                                src=m.src, dst=m.dst, sport=m.sport, dport=m.dport,
                                queue=queue_number(base, index), skip_mark=RESEND_MARK if copy else None))
    return out


def where(netns: str | None) -> str:
    """`` in netns X`` for messages ('' for the host's namespace)."""
    return f" in netns {netns}" if netns else ""
