"""Where each flow's packets are seen: --interface, the inventory, or a route lookup (read-only)."""

from __future__ import annotations

from .errors import InvalidSpec
from .plan import Interface
from .spec.flow import FlowSpec


def resolve_interface(flow: FlowSpec, interface: str | None = None, netns: str | None = None) -> Interface:
    namespace = netns or flow.src.netns
    if interface:
        return Interface(interface, namespace, how="named with --interface")
    if flow.src.interface:
        return Interface(flow.src.interface, namespace, how=f"inventory entry {flow.src.name}")
    if not flow.dst.networks:
        raise InvalidSpec("the destination is '*', so there is no route to look up; name the interface with "
                          "--interface", text=flow.text, field="flow")
    from .kernel.routes import route_interface  # read-only netlink query

    destination = flow.dst.networks[0].network_address
    return Interface(route_interface(destination, namespace), namespace, how=f"route to {destination}")
