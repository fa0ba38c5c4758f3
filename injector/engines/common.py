"""What the engines share: privilege and interface checks, and the leased rules of a loaded classifier."""

from __future__ import annotations

import math
import os
import secrets
from typing import Callable

from ..errors import NotPermitted, Unsupported
from ..kernel import abi, clsact, rawnl, tc
from ..kernel.bpf import ClassifierConfig, ClassifierProgram
from ..kernel.owner import KernelOwner
from ..plan import Interface, Plan, PlannedRule
from ..kernel.rtnl import open_rtnl
from .rules import compile_rules


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        raise NotPermitted(f"chaos-inject needs root {why}; run it with sudo")


def interface_links(plan: Plan) -> dict[Interface, dict]:
    """Each interface of the plan as the kernel sees it; a missing one (or namespace) is Unsupported."""
    links: dict[Interface, dict] = {}
    for iface in plan.interfaces:
        try:
            info = tc.link_info(iface.name, iface.netns)
        except FileNotFoundError:
            raise Unsupported(f"network namespace {iface.netns!r} does not exist") from None
        if info is None:
            where = f" in netns {iface.netns}" if iface.netns else ""
            raise Unsupported(f"interface {iface.name!r} does not exist{where}")
        links[iface] = info
    return links


def replaceable_root(iface: Interface, info: dict, our_major: int) -> rawnl.Qdisc | None:
    """The interface's root qdisc, if we may replace it (and restore it byte for byte later).

    A root with children is refused: replacing it would destroy the operator's whole tree.
    """
    with rawnl.rtnl(iface.netns) as sock:
        qdiscs = sock.qdiscs(info["index"])
    root = next((q for q in qdiscs if q.parent == rawnl.TC_H_ROOT), None)
    if root is not None and root.handle >> 16 == our_major:
        raise Unsupported(f"{iface.name} already has a chaos-inject root qdisc (another run?); "
                          "see `chaos-inject status`")
    if root is not None and root.handle != 0:
        children = [q for q in qdiscs if q.parent not in (rawnl.TC_H_ROOT, rawnl.TC_H_INGRESS) and q is not root]
        if children:
            raise Unsupported(f"{iface.name} has a qdisc tree ({root.kind} with {len(children)} child "
                              "qdisc(s)); replacing it would destroy it: not done")
    return root


def root_entry(iface: Interface, ifindex: int, handle: int, previous: rawnl.Qdisc | None) -> dict:
    """Ledger entry for a root qdisc of ours; a kernel default root (handle 0) comes back by itself."""
    return {"kind": "root-qdisc", "netns": iface.netns, "ifname": iface.name, "ifindex": ifindex,
            "handle": handle,
            "previous": None if previous is None or previous.handle == 0 else {
                "handle": previous.handle, "kind": previous.kind, "attrs_hex": previous.config_attrs.hex()}}


def add_ifb(owner: KernelOwner, iface: Interface) -> tuple[Interface, int]:
    """An IFB device of ours next to ``iface`` (ledger entry first); up, and empty of anyone else's objects."""
    name = f"ci{secrets.token_hex(5)}"

    def make() -> None:
        with open_rtnl(iface.netns) as rtnl:
            rtnl.link("add", ifname=name, kind="ifb")

    owner.create({"kind": "link", "link_kind": "ifb", "netns": iface.netns, "ifname": name}, make)
    index = tc.link_index(name, iface.netns)
    assert index is not None
    with open_rtnl(iface.netns) as rtnl:
        rtnl.link("set", index=index, state="up")
    return Interface(name, iface.netns, how=f"IFB for {iface.name} ingress"), index


def redirect_ingress(owner: KernelOwner, iface: Interface, ifindex: int, prog_fd: int, filter_name: str,
                     to_ifindex: int) -> None:
    """Our plain classifier on ``iface``'s clsact ingress; what it matches, act_mirred hands to ``to_ifindex``."""
    where = {"netns": iface.netns, "ifname": iface.name, "ifindex": ifindex}
    with clsact.use(owner, iface.netns, iface.name, ifindex):  # shared clsact: see kernel/clsact.py
        prio = tc.free_prio(ifindex, "ingress", iface.netns)
        owner.create({"kind": "bpf-filter", **where, "hook": "ingress", "prio": prio, "name": filter_name},
                     lambda: tc.add_bpf_redirect_filter(ifindex, prio, prog_fd, filter_name, to_ifindex,
                                                        iface.netns))


def median_ranks_95(n: int) -> tuple[int, int] | None:
    """1-based ranks (l, u) of the distribution-free 95 % interval of the median of n samples (order statistics:
    l - 1 is the largest k with P(Binomial(n, 1/2) <= k) <= 2.5 %, u = n + 1 - l), or None below 6 samples.
    Exact up to 1000 samples, the normal approximation with continuity correction beyond (within one rank of
    exact there). No scipy: this runs on a run's lease-renewal path, where importing the statistics package
    took tens of seconds under QEMU TCG and let the lease lapse."""
    if n < 6:
        return None
    a2 = 0.025
    if n <= 1000:
        pmf, cdf, k = 0.5 ** n, 0.0, -1
        while cdf + pmf <= a2:      # P(B <= k + 1) still within the tail
            cdf += pmf
            k += 1
            pmf *= (n - k) / (k + 1)
        lo = k + 1
    else:
        lo = math.floor(n / 2 - 0.5 - 1.959963984540054 * math.sqrt(n) / 2) + 1
    return (lo, n + 1 - lo) if lo >= 1 else None


def hold_stats(holds) -> dict[str, int]:
    """Counters of the achieved hold per packet (ns, sorted or not): median, p99, min, max, the sample count and
    the 95 % distribution-free interval of the median (order statistics; none below the 6 samples it needs)."""
    import numpy as np

    ordered = np.sort(np.asarray(holds, dtype=np.int64))
    n = len(ordered)
    if not n:
        return {}
    out = {"delay_samples": n, "delay_p50_ns": int(np.quantile(ordered, 0.5)),
           "delay_p99_ns": int(np.quantile(ordered, 0.99)), "delay_min_ns": int(ordered[0]),
           "delay_max_ns": int(ordered[-1])}
    ranks = median_ranks_95(n)
    if ranks is not None:
        out.update(delay_p50_ci_low_ns=int(ordered[ranks[0] - 1]), delay_p50_ci_high_ns=int(ordered[ranks[1] - 1]))
    return out


MIN_RULES = 64   # the rules map is sized for at least this many: plans up to it share one compiled program


def classifier_config(rules: int, *, seed: int | None, hold: bool, steer: bool = False,
                      l2_len: int = 14) -> ClassifierConfig:
    """The classifier's options for a plan of ``rules`` rules: the one place the engines (and the cache's
    warm-up, engines/warm.py) derive them, so a warmed program is the one a fault loads."""
    return ClassifierConfig(max_rules=max(MIN_RULES, rules), l2_len=l2_len, seed=seed, steer=steer, hold=hold)


def load_classifier(config: ClassifierConfig) -> tuple[ClassifierProgram, str | None]:
    """The classifier, with the hold recording when asked and this kernel can; else without it, and why not."""
    from dataclasses import replace

    from ..kernel.bpf import hold_unsupported_reason

    if not config.hold:
        return ClassifierProgram(config), None
    why = hold_unsupported_reason()
    if why is None:
        try:
            return ClassifierProgram(config), None
        except Unsupported as exc:  # the fault is served all the same; only its measurement is missing
            why = f"the hold per packet is not measured: {exc}"
    import logging

    logging.getLogger(__name__).warning("%s", why)
    return ClassifierProgram(replace(config, hold=False)), why


class LeasedRules:
    """The plan's rules in a loaded classifier, renewed as one lease; the program is owned by ``owner``.

    With ``config.hold`` the classifier also records each delayed packet's hold in the kernel (from our classifier
    to the device's transmit: kernel/bpf.py HoldRecorder); its ring is drained at every renewal and the counters
    carry the achieved hold (delay_p50_ns, ...), ``delay_kernel_measured`` = 1. ``hold_note`` says why not."""

    def __init__(self, plan: Plan, owner: KernelOwner, config: ClassifierConfig, expires_ns: int,
                 adjust: Callable[[PlannedRule, abi.Rule], None] | None = None):
        self.program, self.hold_note = load_classifier(config)
        owner.callback(self.program.close)
        shapes, self.entries = compile_rules(plan.rules, plan.faults, expires_ns)
        if adjust:
            for planned, (_, rule) in zip(plan.rules, self.entries):
                adjust(planned, rule)
        self.program.set_shapes(shapes)
        self.program.put_rules(self.entries)  # rules live before any filter attaches: no half state

    def renew(self, expires_ns: int) -> None:
        for _, rule in self.entries:
            rule.expires_ns = expires_ns
        self.program.refresh_rules(self.entries)  # values only: cached flow verdicts stay valid
        if self.program.hold is not None:
            self.program.hold.drain()    # once a lease: the ring never has to hold more than a lease's packets

    def counters(self) -> dict[int, dict[str, int]]:
        out = {rule.id: self.program.counters(rule.id) for _, rule in self.entries}
        hold = self.program.hold
        if hold is not None:
            lost = hold.lost()
            for _, rule in self.entries:
                if rule.flags & abi.F_DELAY:
                    row = out[rule.id]
                    row.update(hold_stats(hold.samples(rule.id)), delay_kernel_measured=1,
                               delay_samples_lost=lost)
                    row["delay_samples_seen"] = hold.seen.get(rule.id, 0)
        return out
