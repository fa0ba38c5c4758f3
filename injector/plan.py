"""Specs -> a plan: where to attach, which rules, for how long. Pure: no kernel access.

Direction is seen from the flow's source: ``egress`` faults SRC->DST packets as they leave the source's
interface; ``ingress`` faults the DST->SRC replies as they arrive there; ``both`` does both.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidSpec
from .spec.fault import FaultSpec
from .spec.flow import PROTOCOL_NUMBERS, FlowSpec, IPNetwork
from .spec.units import format_duration_ns

Direction = Literal["egress", "ingress", "both"]
DIRECTIONS: tuple[str, ...] = ("egress", "ingress", "both")
MIN_LEASE_NS = 200_000_000
DEFAULT_LEASE_NS = 3_000_000_000


@dataclass(frozen=True)
class Interface:
    """Where a flow's packets are seen: an interface in a namespace (None: the injector's own)."""

    name: str
    netns: str | None = None
    how: str = "named"  # how it was chosen: named | inventory | route to X

    def __str__(self) -> str:
        return f"{self.name} (netns {self.netns})" if self.netns else self.name


@dataclass(frozen=True)
class RuleMatch:
    hook: str                   # egress | ingress
    family: int                 # 4 | 6
    protocol: int               # 0 = any
    src: IPNetwork | None       # None = any address
    dst: IPNetwork | None
    sport: int | None           # None = any port
    dport: int | None

    def __str__(self) -> str:
        proto = {0: "ip", 6: "tcp", 17: "udp"}.get(self.protocol, str(self.protocol))
        def side(net: IPNetwork | None, port: int | None) -> str:
            text = "*" if net is None else (str(net.network_address) if net.prefixlen == net.max_prefixlen
                                             else str(net))
            if net is not None and net.version == 6 and port:
                text = f"[{text}]"
            return f"{text}:{port}" if port else text
        return f"{self.hook:7s} {proto}{self.family if self.protocol == 0 else ''} " \
               f"{side(self.src, self.sport)} -> {side(self.dst, self.dport)}"


@dataclass(frozen=True)
class PlannedRule:
    rule_id: int
    flow: str
    interface: Interface
    match: RuleMatch


@dataclass(frozen=True)
class Plan:
    run_id: str
    flows: tuple[FlowSpec, ...]
    fault: FaultSpec
    direction: str
    rules: tuple[PlannedRule, ...]
    duration_ns: int
    lease_ns: int
    seed: int | None
    engine: str = "ebpf"

    @property
    def interfaces(self) -> tuple[Interface, ...]:
        seen: dict[Interface, None] = {}
        for rule in self.rules:
            seen.setdefault(rule.interface, None)
        return tuple(seen)

    def hooks_for(self, interface: Interface) -> tuple[str, ...]:
        return tuple(sorted({r.match.hook for r in self.rules if r.interface == interface}))

    def describe(self) -> str:
        lines = [
            f"run {self.run_id}: engine {self.engine}, duration {format_duration_ns(self.duration_ns)}, "
            f"lease {format_duration_ns(self.lease_ns)}, seed {self.seed if self.seed is not None else 'random'}",
            f"fault: {self.fault.describe()}",
            f"flows: {', '.join(f.text or str(f) for f in self.flows)}  (direction {self.direction})",
            "objects to create (removed in reverse order at the end):",
        ]
        for iface in self.interfaces:
            lines.append(f"  on {iface}  [{iface.how}]")
            lines.append("    clsact qdisc (only if the interface has none; an existing one is shared, never removed)")
            for hook in self.hooks_for(iface):
                lines.append(f"    cls_bpf filter on {hook}, direct-action, name chaos-inject:{self.run_id}")
        lines.append("  BPF classifier bpf/classifier.bpf.c with maps rules/shapes/counters/rule_state")
        lines.append(f"rules ({len(self.rules)}):")
        for rule in self.rules:
            lines.append(f"  #{rule.rule_id:<3d} {rule.match}   on {rule.interface.name}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id, "engine": self.engine, "direction": self.direction,
            "flows": [f.text or str(f) for f in self.flows], "fault": self.fault.to_dict(),
            "duration_ns": self.duration_ns, "lease_ns": self.lease_ns, "seed": self.seed,
            "rules": [{"id": r.rule_id, "flow": r.flow, "interface": r.interface.name, "netns": r.interface.netns,
                       "match": str(r.match)} for r in self.rules],
        }


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def validate_timing(duration_ns: int, lease_ns: int) -> None:
    if duration_ns <= 0:
        raise InvalidSpec("a fault needs a positive --duration", field="duration")
    if lease_ns < MIN_LEASE_NS:
        raise InvalidSpec(f"lease must be at least {format_duration_ns(MIN_LEASE_NS)}",
                          text=format_duration_ns(lease_ns), field="lease")


def build_plan(flows: list[tuple[FlowSpec, Interface]], fault: FaultSpec, *, direction: str = "egress",
               duration_ns: int, lease_ns: int = DEFAULT_LEASE_NS, seed: int | None = None,
               run_id: str | None = None, max_rules: int = 1024, engine: str = "ebpf") -> Plan:
    """Expand flows into exact match rules (one per family x address pair x port x hook)."""
    if direction not in DIRECTIONS:
        raise InvalidSpec(f"direction must be one of {', '.join(DIRECTIONS)}", text=direction, field="direction")
    if not flows:
        raise InvalidSpec("at least one --flow is needed", field="flow")
    validate_timing(duration_ns, lease_ns)
    if seed is not None and not 0 <= seed < 2**64:
        raise InvalidSpec("seed must be an integer in [0, 2^64)", text=str(seed), field="seed")
    hooks = ("egress", "ingress") if direction == "both" else (direction,)
    rules: list[PlannedRule] = []
    for flow, interface in flows:
        for match in _expand(flow, hooks):
            rules.append(PlannedRule(rule_id=len(rules), flow=flow.text or str(flow), interface=interface,
                                     match=match))
    if len(rules) > max_rules:
        raise InvalidSpec(f"the flows expand to {len(rules)} rules; at most {max_rules} per run", field="flow")
    return Plan(run_id=run_id or new_run_id(), flows=tuple(f for f, _ in flows), fault=fault, direction=direction,
                rules=tuple(rules), duration_ns=duration_ns, lease_ns=lease_ns, seed=seed, engine=engine)


def _expand(flow: FlowSpec, hooks: tuple[str, ...]) -> list[RuleMatch]:
    protocols = [PROTOCOL_NUMBERS[flow.protocol]] if flow.protocol else [0]
    out: list[RuleMatch] = []
    seen: set[RuleMatch] = set()
    for family in flow.families:
        srcs = [n for n in flow.src.networks if n.version == family] or [None]
        dsts = [n for n in flow.dst.networks if n.version == family] or [None]
        sports = list(flow.src.ports) or [None]
        dports = list(flow.dst.ports) or [None]
        for hook in hooks:
            for proto in protocols:
                for src in srcs:
                    for dst in dsts:
                        for sport in sports:
                            for dport in dports:
                                if hook == "egress":
                                    match = RuleMatch(hook, family, proto, src, dst, sport, dport)
                                else:  # the replies, as they arrive at the source
                                    match = RuleMatch(hook, family, proto, dst, src, dport, sport)
                                if match not in seen:
                                    seen.add(match)
                                    out.append(match)
    return out
