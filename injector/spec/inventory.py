"""Inventory: names (api, db) -> addresses, service ports and where their traffic leaves (netns, interface)."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import InvalidSpec

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
# the netns lab (`chaos-inject lab up`) writes the second while it is up and removes it with `lab down`
DEFAULT_PATHS = (Path("/etc/chaos-inject/inventory.toml"), Path("/run/chaos-inject/lab/inventory.toml"))
INVENTORY_ENV = "CHAOS_INJECT_INVENTORY"


@dataclass(frozen=True)
class Host:
    name: str
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    ports: tuple[int, ...] = ()          # listening ports: used when the host is a flow's destination
    netns: str | None = None             # network namespace its traffic leaves from (None: this one)
    interface: str | None = None         # interface in that namespace (None: found by route lookup)
    labels: Mapping[str, str] = field(default_factory=dict)   # labels = {app = "api"} (Chaos Mesh / FIS tags)
    restart: str | None = None           # shell command bringing its service back after a kill (in its netns)

    def matches(self, selector: Mapping[str, str]) -> bool:
        """Every key=value of ``selector`` is among the host's labels (Kubernetes matchLabels semantics)."""
        return all(self.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Inventory:
    hosts: Mapping[str, Host] = field(default_factory=dict)
    source: str | None = None

    def select(self, labels: Mapping[str, str]) -> list[Host]:
        """Hosts carrying every label of ``labels`` (sorted by name); an empty selector selects none."""
        if not labels:
            return []
        return [self.hosts[n] for n in sorted(self.hosts) if self.hosts[n].matches(labels)]

    def get(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            where = f" in {self.source}" if self.source else ""
            raise InvalidSpec(f"unknown name{where}; known names: {known}", text=name, field="flow") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | None = None) -> "Inventory":
        hosts_data = data.get("hosts", {})
        if not isinstance(hosts_data, Mapping):
            raise InvalidSpec("[hosts] must be a table of tables", field=f"{source or 'inventory'}: hosts")
        unknown_top = set(data) - {"hosts"}
        if unknown_top:
            raise InvalidSpec(f"unknown top-level keys {sorted(unknown_top)}", field=source or "inventory")
        hosts = {name: _parse_host(name, entry, source) for name, entry in hosts_data.items()}
        return cls(hosts=hosts, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Inventory":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InvalidSpec("inventory file not found", text=str(path), field="inventory") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidSpec(f"not valid TOML: {exc}", text=str(path), field="inventory") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def discover(cls, explicit: str | None = None) -> "Inventory":
        """--inventory, else $CHAOS_INJECT_INVENTORY, else /etc/chaos-inject/inventory.toml, else the netns lab's
        /run/chaos-inject/lab/inventory.toml, else empty."""
        if explicit:
            return cls.load(explicit)
        if os.environ.get(INVENTORY_ENV):
            return cls.load(os.environ[INVENTORY_ENV])
        for candidate in DEFAULT_PATHS:
            if candidate.exists():
                return cls.load(candidate)
        return cls()


def _parse_host(name: str, entry: Any, source: str | None) -> Host:
    where = f"{source or 'inventory'}: hosts.{name}"
    if not NAME_RE.match(name):
        raise InvalidSpec("host names start with a letter and use letters, digits, _ . -", text=name, field=where)
    if not isinstance(entry, Mapping):
        raise InvalidSpec("must be a table", field=where)
    unknown = set(entry) - {"addresses", "ports", "netns", "interface", "labels", "tags", "restart"}
    if unknown:
        raise InvalidSpec(f"unknown keys {sorted(unknown)}", field=where)
    raw_addresses = entry.get("addresses")
    if not isinstance(raw_addresses, list) or not raw_addresses:
        raise InvalidSpec("'addresses' must be a non-empty list of IP addresses", field=where)
    addresses = []
    for raw in raw_addresses:
        try:
            addresses.append(ipaddress.ip_address(str(raw)))
        except ValueError:
            raise InvalidSpec("not an IP address", text=str(raw), field=f"{where}.addresses") from None
    ports = entry.get("ports", [])
    if not isinstance(ports, list) or not all(isinstance(p, int) and 1 <= p <= 65535 for p in ports):
        raise InvalidSpec("'ports' must be a list of port numbers 1-65535", text=str(ports), field=where)
    for key in ("netns", "interface"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key]):
            raise InvalidSpec(f"'{key}' must be a non-empty string", field=where)
    if "restart" in entry and (not isinstance(entry["restart"], str) or not entry["restart"].strip()):
        raise InvalidSpec("'restart' must be a non-empty shell command", field=where)
    labels: dict[str, str] = {}
    for key in ("labels", "tags"):          # tags: FIS's word for the same thing; both merge
        raw = entry.get(key, {})
        if not isinstance(raw, Mapping) or not all(isinstance(k, str) and k and isinstance(v, str)
                                                   for k, v in raw.items()):
            raise InvalidSpec(f"'{key}' must be a table of strings, e.g. {key} = {{app = \"api\"}}",
                              text=str(raw), field=f"{where}.{key}")
        for k, v in raw.items():
            if labels.get(k, v) != v:
                raise InvalidSpec(f"labels and tags give {k!r} two values", text=f"{labels[k]!r} / {v!r}",
                                  field=where)
            labels[k] = v
    return Host(name=name, addresses=tuple(addresses), ports=tuple(ports),
                netns=entry.get("netns"), interface=entry.get("interface"), labels=MappingProxyType(labels),
                restart=entry.get("restart"))
