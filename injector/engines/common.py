"""What the engines share: privilege and interface checks, and the leased rules of a loaded classifier."""

from __future__ import annotations

import os
from typing import Callable

from ..errors import NotPermitted, Unsupported
from ..kernel import abi, tc
from ..kernel.bpf import ClassifierConfig, ClassifierProgram
from ..kernel.owner import KernelOwner
from ..plan import Interface, Plan, PlannedRule
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


class LeasedRules:
    """The plan's rules in a loaded classifier, renewed as one lease; the program is owned by ``owner``."""

    def __init__(self, plan: Plan, owner: KernelOwner, config: ClassifierConfig, expires_ns: int,
                 adjust: Callable[[PlannedRule, abi.Rule], None] | None = None):
        self.program = ClassifierProgram(config)
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
        self.program.put_rules(self.entries)

    def counters(self) -> dict[int, dict[str, int]]:
        return {rule.id: self.program.counters(rule.id) for _, rule in self.entries}
