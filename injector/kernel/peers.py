"""The other end of a veth, found without an inventory (read-only netlink queries).

A veth's link message names its peer's ifindex (IFLA_LINK) and, when the peer lives in another namespace,
that namespace's id as seen from here (IFLA_LINK_NETNSID). pyroute2 has no query that maps a netns id to a
namespace, so the peer is found by looking at every named namespace (and the root one) for the veth whose
ifindex is our IFLA_LINK and whose own IFLA_LINK is our ifindex. More than one such interface (ifindexes repeat
across namespaces): ambiguous, so none is claimed.
"""

from __future__ import annotations

from .rtnl import NetlinkError, open_rtnl


def _veth_links(link) -> tuple[int, int] | None:
    """(own ifindex, peer ifindex) of a veth link message, else None."""
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    peer = link.get_attr("IFLA_LINK")
    if kind != "veth" or not peer:
        return None
    return link["index"], peer


def veth_peer(ifname: str, netns: str | None) -> tuple[str, str | None] | None:
    """(peer interface name, its namespace: None = the root one) of the veth ``ifname`` in ``netns``; None when
    it is not a veth, or its peer cannot be told apart."""
    from .netns import existing_namespaces

    try:
        with open_rtnl(netns) as rtnl:
            links = rtnl.get_links(ifname=ifname)
            ours = _veth_links(links[0]) if links else None
            elsewhere = ours is not None and links[0].get_attr("IFLA_LINK_NETNSID") is not None
    except (OSError, NetlinkError):
        return None
    if ours is None:
        return None
    index, peer_index = ours
    candidates = [n for n in [None, *existing_namespaces()] if (n != netns) == elsewhere]
    found = []
    for ns in candidates:
        try:
            with open_rtnl(ns) as rtnl:
                for link in rtnl.get_links(peer_index):
                    if _veth_links(link) == (peer_index, index):
                        found.append((link.get_attr("IFLA_IFNAME"), ns))
        except (OSError, NetlinkError):  # gone meanwhile, or no such ifindex there
            continue
    return found[0] if len(found) == 1 else None


__all__ = ["veth_peer"]
