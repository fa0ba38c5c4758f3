"""An Ansible inventory (YAML, INI, a folder: whatever ansible-core reads) as the fleet's hosts and groups.

Parsed by ansible-core's own InventoryManager, so groups, children, ``ansible_host``, host and group variables
mean what they mean to ``ansible-playbook``. A host's addresses: ``chaos_inject_addresses`` (a list), else
``ansible_host``, else its name; each an IP address or a name resolved here. ``chaos_inject_ports`` lists the
ports a host listens on (a flow to it then means those ports, as in the TOML inventory).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import InvalidSpec, Unsupported

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IMPLICIT_GROUPS = ("all", "ungrouped")


@dataclass(frozen=True)
class FleetHost:
    name: str                                   # inventory_hostname
    addresses: tuple[IPAddress, ...]
    groups: tuple[str, ...] = ()                # every group it belongs to, parents included (not all/ungrouped)
    ports: tuple[int, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> IPAddress:
        return self.addresses[0]


@dataclass(frozen=True)
class FleetInventory:
    hosts: Mapping[str, FleetHost]
    groups: Mapping[str, tuple[str, ...]]       # group -> its hosts (children's hosts included), sorted
    source: str | None = None

    def members(self, name: str) -> tuple[str, ...]:
        """The hosts a name means: a group's hosts, or the host itself. Unknown names are an error."""
        if name in self.groups:
            return self.groups[name]
        if name in self.hosts:
            return (name,)
        raise InvalidSpec(f"not a group or host of the inventory {self.source or ''}; groups: "
                          f"{', '.join(sorted(self.groups)) or 'none'}; hosts: {', '.join(sorted(self.hosts))}",
                          text=name, field="flow")

    def knows(self, name: str) -> bool:
        return name in self.groups or name in self.hosts


def _addresses(name: str, hostvars: Mapping[str, Any], source: str) -> tuple[IPAddress, ...]:
    raw = hostvars.get("chaos_inject_addresses")
    if raw is None:
        raw = [hostvars.get("ansible_host", name)]
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not raw:
        raise InvalidSpec("chaos_inject_addresses must be a non-empty list", text=str(raw),
                          field=f"{source}: {name}")
    out: list[IPAddress] = []
    for item in raw:
        text = str(item)
        try:
            out.append(ipaddress.ip_address(text))
            continue
        except ValueError:
            pass
        try:  # a DNS name: its addresses, in the resolver's order
            infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise InvalidSpec(f"cannot resolve {text!r} to an address ({exc.strerror}); give ansible_host an IP",
                              text=text, field=f"{source}: {name}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if address not in out:
                out.append(address)
    return tuple(out)


def _ports(name: str, hostvars: Mapping[str, Any], source: str) -> tuple[int, ...]:
    raw = hostvars.get("chaos_inject_ports", [])
    if isinstance(raw, int):
        raw = [raw]
    try:
        ports = tuple(int(p) for p in raw)
    except (TypeError, ValueError):
        ports = ()
        raw = f"{raw!r} (not numbers)"
    if not all(1 <= p <= 65535 for p in ports) or (raw and not ports):
        raise InvalidSpec("chaos_inject_ports must be a list of port numbers 1-65535", text=str(raw),
                          field=f"{source}: {name}")
    return ports


def load_inventory(path: str | os.PathLike[str]) -> FleetInventory:
    """Read an Ansible inventory with ansible-core. Raises InvalidSpec (missing or unparsable file, bad host
    variables) or Unsupported (ansible-core not installed: pip install 'chaos-inject[fleet]')."""
    source = str(path)
    if not os.path.exists(source):
        raise InvalidSpec("inventory file not found", text=source, field="inventory")
    try:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.utils.vars import combine_vars
    except ImportError:
        raise Unsupported("the fleet needs ansible-core: pip install 'chaos-inject[fleet]' (make setup does)") \
            from None
    from ansible import constants as C

    # an unparsable source is a warning to ansible (and an empty inventory); to us it is bad input
    saved = C.INVENTORY_UNPARSED_IS_FAILED, C.INVENTORY_ANY_UNPARSED_IS_FAILED
    C.INVENTORY_UNPARSED_IS_FAILED = C.INVENTORY_ANY_UNPARSED_IS_FAILED = True
    try:
        manager = InventoryManager(loader=DataLoader(), sources=[source])
    except Exception as exc:  # noqa: BLE001 - AnsibleError and friends: the file is bad input
        raise InvalidSpec(f"not an Ansible inventory: {str(exc).splitlines()[0]}", text=source,
                          field="inventory") from None
    finally:
        C.INVENTORY_UNPARSED_IS_FAILED, C.INVENTORY_ANY_UNPARSED_IS_FAILED = saved
    hosts: dict[str, FleetHost] = {}
    for host in manager.get_hosts():
        hostvars: dict[str, Any] = {}
        for group in sorted(host.get_groups(), key=lambda g: (g.depth, g.priority, g.name)):
            hostvars = combine_vars(hostvars, group.get_vars())
        hostvars = combine_vars(hostvars, host.get_vars())
        groups = tuple(sorted(g.name for g in host.get_groups() if g.name not in IMPLICIT_GROUPS))
        plain = {k: v for k, v in hostvars.items() if not k.startswith("ansible_ssh_pass")}
        hosts[host.name] = FleetHost(name=host.name, addresses=_addresses(host.name, hostvars, source),
                                     groups=groups, ports=_ports(host.name, hostvars, source),
                                     vars=MappingProxyType(plain))
    if not hosts:
        raise InvalidSpec("the inventory has no hosts", text=source, field="inventory")
    groups = {name: tuple(sorted(h.name for h in group.get_hosts()))
              for name, group in manager.groups.items() if name not in IMPLICIT_GROUPS}
    clash = sorted(set(groups) & set(hosts))
    if clash:
        raise InvalidSpec("a name is both a group and a host; flows could not tell which is meant",
                          text=", ".join(clash), field="inventory")
    return FleetInventory(hosts=MappingProxyType(hosts), groups=MappingProxyType(groups), source=source)
