"""The fleet plan (pure, no I/O): group flows expanded to the hosts that carry them, blast radius over hosts.

``web->db:5432/tcp`` on an inventory where web = {w1, w2} and db = {d1, d2} gives w1 the flows
``w1->d1:5432/tcp`` and ``w1->d2:5432/tcp`` (as addresses) and w2 the same from its own address: a fault is
carried by the flow's source host (egress leaves there; ingress faults the replies arriving there). The source
must therefore be a group or host of the inventory; the destination may also be an address, a CIDR or ``*``.

Blast radius: ``percent`` (FIS ``PERCENT(n)``: ceil(n % of the group), at least one) or ``count``
(FIS ``COUNT(n)``) picks hosts of each source group with a seeded generator; the same seed picks the same hosts.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import InvalidSpec
from ..spec import Inventory, parse_flow
from ..spec.inventory import NAME_RE
from .inventory import FleetInventory

_PROTO_RE = re.compile(r"/(tcp|udp)$", re.IGNORECASE)
_NAME_PORT_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,62})(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class HostChoice:
    """Which hosts of a source group were chosen, and why."""
    group: str
    members: tuple[str, ...]
    chosen: tuple[str, ...]
    why: str

    def describe(self) -> str:
        left = [h for h in self.members if h not in self.chosen]
        return (f"{self.group}: {self.why} -> {', '.join(self.chosen)}"
                + (f" (not: {', '.join(left)})" if left else ""))


@dataclass(frozen=True)
class FleetPlan:
    """Per host (inventory name), the flow texts its own chaos-inject gets; and the blast-radius choices."""
    assignments: Mapping[str, tuple[str, ...]]
    choices: tuple[HostChoice, ...] = ()
    flows: tuple[str, ...] = ()                       # as the user wrote them
    addresses: Mapping[str, str] = field(default_factory=dict)   # host -> the address Ansible reaches

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted(self.assignments))

    def describe(self) -> str:
        lines = [f"fleet plan: {len(self.assignments)} host(s) carry the fault of {', '.join(self.flows)}"]
        for host in self.hosts:
            where = f" ({self.addresses[host]})" if host in self.addresses else ""
            lines.append(f"  {host}{where}:")
            lines += [f"    --flow '{text}'" for text in self.assignments[host]]
        if self.choices:
            lines.append("blast radius over hosts:")
            lines += [f"  {c.describe()}" for c in self.choices]
        return "\n".join(lines)


def select_hosts(group: str, members: tuple[str, ...], *, percent: float | None = None, count: int | None = None,
                 seed: int | None = None) -> HostChoice:
    """Seeded choice of hosts of one group: ceil(percent %) (at least one) or ``count``; all without either."""
    members = tuple(sorted(members))
    if percent is not None and count is not None:
        raise InvalidSpec("give --percent or --count, not both", field="count")
    if percent is None and count is None:
        return HostChoice(group, members, members, f"all {len(members)} host(s)")
    if count is not None:
        if count < 1:
            raise InvalidSpec("count must be at least 1", text=str(count), field="count")
        keep = min(count, len(members))
        why = f"COUNT({count}) of {len(members)}" + (" (all there are)" if count >= len(members) else "")
    else:
        keep = max(1, math.ceil(len(members) * percent / 100 - 1e-9))
        why = f"PERCENT({percent:g}) of {len(members)} = ceil({len(members) * percent / 100:g}) -> {keep}"
    rng = random.Random(f"{seed}/{group}")    # per group: adding a flow does not change another group's choice
    chosen = tuple(sorted(rng.sample(members, keep)))
    return HostChoice(group, members, chosen, why + f", seed {seed}")


def parse_count(value) -> int:
    text = str(value).strip()
    if text.upper().startswith("COUNT(") and text.endswith(")"):
        text = text[6:-1]
    try:
        return int(text)
    except ValueError:
        raise InvalidSpec("count must be a whole number, e.g. 2 or COUNT(2)", text=str(value),
                          field="count") from None


def _format(address, port: int | None) -> str:
    text = str(address)
    if port is None:
        return text
    return f"[{text}]:{port}" if address.version == 6 else f"{text}:{port}"


def build_fleet_plan(flows: list[str], inventory: FleetInventory, *, percent: float | None = None,
                     count: int | None = None, seed: int | None = None) -> FleetPlan:
    """Expand group flows to per-host literal flows; each is checked by the flow parser. Raises InvalidSpec."""
    if not flows:
        raise InvalidSpec("no flow: give --flow 'GROUP->GROUP'", field="flow")
    assignments: dict[str, list[str]] = {}
    choices: dict[str, HostChoice] = {}
    empty = Inventory()
    for text in flows:
        body, proto = text.strip(), ""
        found = _PROTO_RE.search(body)
        if found:
            body, proto = body[:found.start()], "/" + found.group(1).lower()
        if body.count("->") != 1:
            raise InvalidSpec("a flow is SRC->DST (quote it: --flow 'web->db')", text=text, field="flow")
        src_text, dst_text = (side.strip() for side in body.split("->"))
        src = _NAME_PORT_RE.match(src_text)
        if not src or not inventory.knows(src.group("name")):
            raise InvalidSpec("on a fleet the flow's source is a group or host of the inventory: the fault runs "
                              f"on those hosts (groups: {', '.join(sorted(inventory.groups)) or 'none'})",
                              text=text, field="flow")
        src_name, src_port = src.group("name"), src.group("port")
        members = inventory.members(src_name)
        if src_name not in choices:
            choices[src_name] = select_hosts(src_name, members, percent=percent, count=count, seed=seed)
        sources = choices[src_name].chosen
        dst = _NAME_PORT_RE.match(dst_text)
        if dst and inventory.knows(dst.group("name")):
            destinations = []
            for name in inventory.members(dst.group("name")):
                host = inventory.hosts[name]
                ports = [int(dst.group("port"))] if dst.group("port") else list(host.ports) or [None]
                destinations += [(name, a, p) for a in host.addresses for p in ports]
        elif dst and NAME_RE.match(dst.group("name")) and not _is_address(dst.group("name")):
            raise InvalidSpec(f"{dst.group('name')!r} is not a group or host of the inventory", text=text,
                              field="flow")
        else:
            destinations = [(None, dst_text, None)]      # an address, a CIDR or '*', as written
        for name in sources:
            host = inventory.hosts[name]
            out = assignments.setdefault(name, [])
            for address in host.addresses:
                src_side = _format(address, int(src_port) if src_port else None)
                for dst_name, dst_address, port in destinations:
                    if dst_name == name:
                        continue                              # a host in both groups: not to itself
                    if not isinstance(dst_address, str):
                        if dst_address.version != address.version:
                            continue
                        dst_side = _format(dst_address, port)
                    else:
                        dst_side = dst_address
                    flow = f"{src_side}->{dst_side}{proto}"
                    parse_flow(flow, empty)                   # bad input is refused here, before any host
                    if flow not in out:
                        out.append(flow)
    empty_hosts = sorted(h for h, f in assignments.items() if not f)
    if empty_hosts:
        raise InvalidSpec("these hosts would carry no flow (only themselves or another IP version on the other "
                          "side)", text=", ".join(empty_hosts), field="flow")
    return FleetPlan(assignments={h: tuple(f) for h, f in assignments.items()},
                     choices=tuple(c for c in choices.values() if c.chosen != c.members or percent or count),
                     flows=tuple(flows),
                     addresses={h: str(inventory.hosts[h].vars.get("ansible_host", inventory.hosts[h].address))
                                for h in assignments})


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
