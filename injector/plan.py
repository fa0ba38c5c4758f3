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
    fault_index: int = 0        # into Plan.faults


@dataclass(frozen=True)
class Plan:
    run_id: str
    flows: tuple[FlowSpec, ...]
    faults: tuple[FaultSpec, ...]   # distinct faults; each rule names its own by index
    direction: str
    rules: tuple[PlannedRule, ...]
    duration_ns: int
    lease_ns: int
    seed: int | None
    engine: str = "ebpf"

    @property
    def fault(self) -> FaultSpec:
        """The run's fault when it has one (the CLI's case); see ``faults`` and ``fault_of``."""
        if len(self.faults) != 1:
            raise ValueError("this plan has several faults: use plan.faults / plan.fault_of(rule)")
        return self.faults[0]

    def fault_of(self, rule: PlannedRule) -> FaultSpec:
        return self.faults[rule.fault_index]

    def features(self) -> set[str]:
        return {feature for fault in self.faults for feature in fault.features()}

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
            "fault: " + "; ".join(f"#{i} {f.describe()}" if len(self.faults) > 1 else f.describe()
                                  for i, f in enumerate(self.faults)),
            f"flows: {', '.join(f.text or str(f) for f in self.flows)}  (direction {self.direction})",
            "objects to create (removed in reverse order at the end):",
        ]
        for iface in self.interfaces:
            lines.append(f"  on {iface}  [{iface.how}]")
            hooks = self.hooks_for(iface)
            for line in _objects(self.engine, hooks, self.run_id):
                lines.append(f"    {line}")
        lines.append(f"rules ({len(self.rules)}):")
        for rule in self.rules:
            fault = f"   fault #{rule.fault_index}" if len(self.faults) > 1 else ""
            lines.append(f"  #{rule.rule_id:<3d} {rule.match}   on {rule.interface.name}{fault}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id, "engine": self.engine, "direction": self.direction,
            "flows": [f.text or str(f) for f in self.flows], "faults": [f.to_dict() for f in self.faults],
            "duration_ns": self.duration_ns, "lease_ns": self.lease_ns, "seed": self.seed,
            "rules": [{"id": r.rule_id, "flow": r.flow, "interface": r.interface.name, "netns": r.interface.netns,
                       "match": str(r.match), "fault": r.fault_index} for r in self.rules],
        }


def _objects(engine: str, hooks: tuple[str, ...], run_id: str) -> list[str]:
    """What each engine creates on an interface (shown by --dry-run and at start)."""
    clsact = ("clsact qdisc (only if the interface has none; an operator's is shared and never removed, "
              "one chaos-inject made goes with its last user)")
    filters = [f"cls_bpf filter on {hook}, name chaos-inject:{run_id}" for hook in hooks]
    if engine == "ebpf":
        return [clsact, *filters, "BPF classifier bpf/classifier.bpf.c (maps: rules, shapes, counters, state)"]
    if engine == "netem":
        out = []
        if "egress" in hooks:
            out += ["prio root c1a0: replacing the root qdisc (restored byte for byte at the end), one netem leaf "
                    "per fault, the classifier as its filter (steer mode)"]
        if "ingress" in hooks:
            out += ["IFB device ci<hex> with the same prio/netem tree", clsact,
                    f"cls_bpf filter on ingress + mirred redirect to the IFB, name chaos-inject:{run_id}"]
        return out
    if engine == "edt":
        return ["fq root c1c0: replacing the root qdisc (restored byte for byte at the end)", clsact, *filters,
                "BPF classifier with departure times (skb->tstamp)"]
    if engine == "userspace":
        return [f"nftables table inet chaos_inject_{run_id.replace('-', '_')}: the flow's packets to NFQUEUE "
                "(bypass: they pass if the injector dies)", "a thread of this process holding them"]
    return ["(objects depend on the engine chosen at run time)"]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def validate_timing(duration_ns: int, lease_ns: int) -> None:
    if duration_ns <= 0:
        raise InvalidSpec("a fault needs a positive --duration", field="duration")
    if lease_ns < MIN_LEASE_NS:
        raise InvalidSpec(f"lease must be at least {format_duration_ns(MIN_LEASE_NS)}",
                          text=format_duration_ns(lease_ns), field="lease")


def build_plan(flows: list[tuple[FlowSpec, Interface]] | list[tuple[FlowSpec, Interface, FaultSpec]],
               fault: FaultSpec | None = None, *, direction: str = "egress",
               duration_ns: int, lease_ns: int = DEFAULT_LEASE_NS, seed: int | None = None,
               run_id: str | None = None, max_rules: int = 1024, engine: str = "ebpf") -> Plan:
    """Expand flows into exact match rules (one per family x address pair x port x hook).

    Each target is (flow, interface) with the run's ``fault``, or (flow, interface, fault) with its own.
    """
    if direction not in DIRECTIONS:
        raise InvalidSpec(f"direction must be one of {', '.join(DIRECTIONS)}", text=direction, field="direction")
    if not flows:
        raise InvalidSpec("at least one --flow is needed", field="flow")
    validate_timing(duration_ns, lease_ns)
    if seed is not None and not 0 <= seed < 2**64:
        raise InvalidSpec("seed must be an integer in [0, 2^64)", text=str(seed), field="seed")
    hooks = ("egress", "ingress") if direction == "both" else (direction,)
    rules: list[PlannedRule] = []
    faults: list[FaultSpec] = []
    seen_matches: dict[RuleMatch, str] = {}
    for target in flows:
        flow, interface = target[0], target[1]
        flow_fault = target[2] if len(target) > 2 else fault  # type: ignore[misc]
        if flow_fault is None:
            raise InvalidSpec(f"no fault given for flow {flow.text or flow}", field="fault")
        if flow_fault not in faults:
            faults.append(flow_fault)
        for match in _expand(flow, hooks):
            if match in seen_matches:
                raise InvalidSpec(f"flows {seen_matches[match]!r} and {flow.text or flow!r} both match "
                                  f"{match}; a packet can have one fault", field="flow")
            seen_matches[match] = flow.text or str(flow)
            rules.append(PlannedRule(rule_id=len(rules), flow=flow.text or str(flow), interface=interface,
                                     match=match, fault_index=faults.index(flow_fault)))
    if len(rules) > max_rules:
        raise InvalidSpec(f"the flows expand to {len(rules)} rules; at most {max_rules} per run", field="flow")
    return Plan(run_id=run_id or new_run_id(), flows=tuple(t[0] for t in flows), faults=tuple(faults),
                direction=direction,
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
