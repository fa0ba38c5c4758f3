"""clsact qdiscs and cls_bpf filters over netlink (pyroute2). Reads, creates and deletes; never guesses."""

from __future__ import annotations

from dataclasses import dataclass

from .rtnl import NetlinkError, is_gone, open_rtnl

CLSACT_HANDLE = 0xFFFF0000
CLSACT_PARENT = 0xFFFFFFF1
PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
ETH_P_ALL = 0x0003


@dataclass(frozen=True)
class FilterInfo:
    hook: str
    prio: int
    handle: int
    kind: str
    name: str | None


def link_index(ifname: str, netns: str | None = None) -> int | None:
    with open_rtnl(netns) as rtnl:
        found = rtnl.link_lookup(ifname=ifname)
    return found[0] if found else None


def link_info(ifname: str, netns: str | None = None) -> dict | None:
    with open_rtnl(netns) as rtnl:
        found = rtnl.link_lookup(ifname=ifname)
        if not found:
            return None
        link = rtnl.get_links(found[0])[0]
        return {"index": link["index"], "ifname": ifname, "type": link["ifi_type"],
                "kind": (link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
                "up": bool(link["flags"] & 1), "mtu": int(link.get_attr("IFLA_MTU") or 0)}


def has_clsact(ifindex: int, netns: str | None = None) -> bool:
    with open_rtnl(netns) as rtnl:
        return any(q.get_attr("TCA_KIND") == "clsact" for q in rtnl.get_qdiscs(ifindex))


def add_clsact(ifindex: int, netns: str | None = None) -> None:
    with open_rtnl(netns) as rtnl:
        rtnl.tc("add", "clsact", ifindex)


def delete_clsact(ifindex: int, netns: str | None = None) -> None:
    with open_rtnl(netns) as rtnl:
        rtnl.tc("del", "clsact", ifindex)


def list_filters(ifindex: int, netns: str | None = None) -> list[FilterInfo]:
    out: list[FilterInfo] = []
    with open_rtnl(netns) as rtnl:
        for hook, parent in PARENTS.items():
            try:
                messages = rtnl.get_filters(ifindex, parent=parent)
            except NetlinkError as exc:
                if is_gone(exc):
                    continue
                raise
            for msg in messages:
                options = msg.get_attr("TCA_OPTIONS")
                if options is None:  # the per-priority header entry, not a filter
                    continue
                out.append(FilterInfo(
                    hook=hook, prio=msg["info"] >> 16, handle=msg["handle"], kind=msg.get_attr("TCA_KIND"),
                    name=options.get_attr("TCA_BPF_NAME") if msg.get_attr("TCA_KIND") == "bpf" else None))
    return out


def free_prio(ifindex: int, hook: str, netns: str | None = None, start: int = 1) -> int:
    """Lowest filter priority unused on this hook: ours runs first and passes unmatched packets on."""
    used = {f.prio for f in list_filters(ifindex, netns) if f.hook == hook}
    prio = start
    while prio in used:
        prio += 1
    return prio


def add_bpf_filter(ifindex: int, hook: str, prio: int, prog_fd: int, name: str, netns: str | None = None) -> None:
    with open_rtnl(netns) as rtnl:
        rtnl.tc("add-filter", "bpf", ifindex, ":1", fd=prog_fd, name=name, parent=PARENTS[hook], classid=1,
                direct_action=True, prio=prio, protocol=ETH_P_ALL)


def add_bpf_filter_at(ifindex: int, parent: int, prio: int, classid_major: int, prog_fd: int, name: str,
                      netns: str | None = None) -> None:
    """Our classifier on a classful qdisc of ours (netem engine): the program's skb->tc_classid gives the
    class minor, ``classid_major`` (the filter's classid) the major."""
    with open_rtnl(netns) as rtnl:
        rtnl.tc("add-filter", "bpf", ifindex, ":1", fd=prog_fd, name=name, parent=parent, classid=classid_major,
                direct_action=True, prio=prio, protocol=ETH_P_ALL)


def add_bpf_redirect_filter(ifindex: int, prio: int, prog_fd: int, name: str, to_ifindex: int,
                            netns: str | None = None) -> None:
    """Our classifier on clsact ingress, plain (not direct-action): packets it matches are redirected by
    act_mirred to the egress of ``to_ifindex`` (our IFB device)."""
    with open_rtnl(netns) as rtnl:
        rtnl.tc("add-filter", "bpf", ifindex, ":1", fd=prog_fd, name=name, parent=PARENTS["ingress"], classid=1,
                prio=prio, protocol=ETH_P_ALL,
                action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": to_ifindex})


def delete_bpf_filter(ifindex: int, hook: str, prio: int, name: str, netns: str | None = None) -> bool:
    """Delete the filter at ``prio`` only if it carries our ``name``. Returns whether one was deleted."""
    mine = [f for f in list_filters(ifindex, netns) if f.hook == hook and f.prio == prio and f.name == name]
    if not mine:
        return False
    with open_rtnl(netns) as rtnl:
        for found in mine:
            # kind, prio, protocol and handle name exactly one filter; without them the kernel
            # deletes every filter on the hook (pyroute2 leaves info = 0 when kind is missing)
            rtnl.tc("del-filter", "bpf", ifindex, handle=found.handle, parent=PARENTS[hook], prio=prio,
                    protocol=ETH_P_ALL)
    return True
