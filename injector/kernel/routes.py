"""Which interface a destination's packets leave by (a read-only route lookup)."""

from __future__ import annotations

import ipaddress

from ..errors import InvalidSpec
from .rtnl import NetlinkError, open_rtnl


def route_interface(destination: ipaddress.IPv4Address | ipaddress.IPv6Address, netns: str | None = None) -> str:
    try:
        with open_rtnl(netns) as rtnl:
            routes = rtnl.route("get", dst=str(destination))
            oif = routes[0].get_attr("RTA_OIF") if routes else None
            links = rtnl.get_links(oif) if oif else []
    except FileNotFoundError:
        raise InvalidSpec("network namespace does not exist", text=netns, field="netns") from None
    except NetlinkError as exc:
        raise InvalidSpec(f"no route to the destination ({exc.args[-1] if exc.args else exc})",
                          text=str(destination), field="flow") from None
    if not links:
        raise InvalidSpec("no route to the destination", text=str(destination), field="flow")
    return links[0].get_attr("IFLA_IFNAME")
