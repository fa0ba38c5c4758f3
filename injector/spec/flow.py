"""Flow specs: ``SRC->DST[/tcp|/udp]``, each side an inventory name or a literal address.

A side is one of::

    *            any address          *:5432          any address, port 5432
    api          inventory name       api:8080        name with an explicit port
    10.0.0.2     IPv4 address         10.0.0.2:5432   IPv4 with port
    10.0.0.0/24  IPv4 CIDR            10.0.0.0/24:53  CIDR with port
    fd00::2      IPv6 address         [fd00::2]:5432  IPv6 with port
    fd00::/64    IPv6 CIDR            [fd00::/64]:53  IPv6 CIDR with port

An inventory name on the destination side carries the host's listening ports (``db`` -> port 5432);
on the source side it means the host, any port (clients use ephemeral ports).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import InvalidSpec
from .inventory import NAME_RE, Inventory

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Protocol = Literal["tcp", "udp"]
PROTOCOL_NUMBERS: dict[str, int] = {"tcp": 6, "udp": 17}

_PROTO_SUFFIX_RE = re.compile(r"/(tcp|udp)$", re.IGNORECASE)
_BRACKETED_RE = re.compile(r"^\[([^\]]+)\](?::(\d+))?$")
_PORT_RE = re.compile(r"^\d{1,5}$")


@dataclass(frozen=True)
class Endpoint:
    """One side of a flow. Empty ``networks`` means any address; empty ``ports`` any port."""

    networks: tuple[IPNetwork, ...] = ()
    ports: tuple[int, ...] = ()
    name: str | None = None
    netns: str | None = None
    interface: str | None = None

    @property
    def any_address(self) -> bool:
        return not self.networks

    @property
    def families(self) -> frozenset[int]:
        return frozenset(net.version for net in self.networks)

    def __str__(self) -> str:
        if self.name:
            base = self.name
        elif self.networks:
            base = ",".join(str(n) if n.prefixlen != n.max_prefixlen else str(n.network_address)
                            for n in self.networks)
        else:
            base = "*"
        return f"{base}:{','.join(map(str, self.ports))}" if self.ports else base


@dataclass(frozen=True)
class FlowSpec:
    src: Endpoint
    dst: Endpoint
    protocol: Protocol | None = None
    text: str = ""

    @property
    def families(self) -> tuple[int, ...]:
        """IP versions this flow can match: those both sides admit."""
        src = self.src.families or frozenset({4, 6})
        dst = self.dst.families or frozenset({4, 6})
        return tuple(sorted(src & dst))

    def __str__(self) -> str:
        proto = f"/{self.protocol}" if self.protocol else ""
        return f"{self.src}->{self.dst}{proto}"


def parse_flow(text: str, inventory: Inventory | None = None) -> FlowSpec:
    """Parse ``SRC->DST[/proto]``; names are looked up in ``inventory``. Raises InvalidSpec."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSpec("empty flow; expected SRC->DST, e.g. 'api->db' or '10.0.0.1->10.0.0.2:5432/tcp'",
                          text=text if isinstance(text, str) else repr(text), field="flow")
    from .shellsafe import cut_flow_message, looks_cut

    if looks_cut(text):
        raise InvalidSpec(cut_flow_message(text), field="flow")
    raw = text.strip()
    protocol: Protocol | None = None
    suffix = _PROTO_SUFFIX_RE.search(raw)
    if suffix:
        protocol = suffix.group(1).lower()  # type: ignore[assignment]
        raw = raw[: suffix.start()]
    parts = raw.split("->")
    if len(parts) != 2:
        raise InvalidSpec("a flow has exactly one '->' between source and destination", text=text, field="flow")
    inventory = inventory or Inventory()
    src = _parse_side(parts[0].strip(), inventory, role="source", whole=text)
    dst = _parse_side(parts[1].strip(), inventory, role="destination", whole=text)
    flow = FlowSpec(src=src, dst=dst, protocol=protocol, text=text.strip())
    if not flow.families:
        raise InvalidSpec("source and destination are of different IP versions; no packet can match",
                          text=text, field="flow")
    return flow


def _parse_side(side: str, inventory: Inventory, *, role: str, whole: str) -> Endpoint:
    if not side:
        raise InvalidSpec(f"missing {role}", text=whole, field="flow")
    bracketed = _BRACKETED_RE.match(side)
    if bracketed:
        network = _parse_network(bracketed.group(1), whole, want_version=6)
        ports = (_parse_port(bracketed.group(2), whole),) if bracketed.group(2) else ()
        return Endpoint(networks=(network,), ports=ports)
    host_part, port_part = side, None
    if side.count(":") == 1:  # IPv4, name or '*' with a port (IPv6 without brackets has 2+ colons)
        host_part, port_part = side.split(":")
    ports = (_parse_port(port_part, whole),) if port_part is not None else ()
    if host_part == "*":
        return Endpoint(ports=ports)
    if ":" in host_part or _looks_numeric(host_part):
        return Endpoint(networks=(_parse_network(host_part, whole),), ports=ports)
    if NAME_RE.match(host_part):
        host = inventory.get(host_part)
        networks = tuple(ipaddress.ip_network(addr) for addr in host.addresses)
        if not ports and role == "destination":
            ports = host.ports
        return Endpoint(networks=networks, ports=ports, name=host.name, netns=host.netns,
                        interface=host.interface)
    raise InvalidSpec(f"{role} is neither '*', an inventory name, nor an IP address/CIDR", text=host_part,
                      field="flow")


def _looks_numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or "/" in text)


def _parse_network(text: str, whole: str, want_version: int | None = None) -> IPNetwork:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        hint = " (host bits set: did you mean the network address?)" if "host bits" in str(exc) else ""
        raise InvalidSpec(f"not an IP address or CIDR{hint}", text=text, field="flow") from None
    if want_version and network.version != want_version:
        raise InvalidSpec("brackets are for IPv6 addresses: write IPv4 as 10.0.0.1:80", text=text, field="flow")
    return network


def _parse_port(text: str, whole: str) -> int:
    if not _PORT_RE.match(text or "") or not 1 <= int(text) <= 65535:
        raise InvalidSpec("port must be a number 1-65535", text=text, field="flow")
    return int(text)
