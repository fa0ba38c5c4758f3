"""Throwaway network namespaces joined by veth pairs, for the demo, the lab and the host tests.

Everything made here is removed by ``Topology.close()`` (also on failure half-way through creation).
The namespaces get addresses of their own and no route anywhere else.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from .rtnl import NetlinkError, entered_netns, netns_module, open_rtnl

_netns = netns_module()

IFA_F_NODAD = 0x02  # skip IPv6 duplicate address detection: our own private link, addresses usable at once
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20


def create_namespace(name: str) -> None:
    """Make network namespace ``name`` (what `ip netns add` does), from a thread of this process.

    Not pyroute2's ``netns.create``: it forks a helper process that finishes the namespace even when we are
    killed -9 half-way, possibly after `sweep` looked for it (the kill -9 soak left a probe namespace that way).
    A thread dies with the process; the worst a kill leaves is the empty mount point, which removing the
    namespace (``netns.remove``: unmount, unlink) also clears. The thread alone enters the new namespace
    (unshare(CLONE_NEWNET) is per thread) and ends right after.
    """
    failure: list[BaseException] = []

    def make() -> None:
        try:
            _create_in_this_thread(name)
        except BaseException as exc:   # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=make, name=f"create-netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _create_in_this_thread(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}", name)

    run_dir = _netns.NETNS_RUN_DIR
    os.makedirs(run_dir, exist_ok=True)
    # /run/netns a shared mount, so a namespace bound there is seen in every mount namespace (as iproute2 does)
    if libc.mount(b"", run_dir.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
        check(libc.mount(run_dir.encode(), run_dir.encode(), b"none", MS_BIND | MS_REC, None), "bind " + run_dir)
        check(libc.mount(b"", run_dir.encode(), b"none", MS_SHARED | MS_REC, None), "share " + run_dir)
    path = os.path.join(run_dir, name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))   # EEXIST: the name is taken
    try:
        check(libc.unshare(CLONE_NEWNET), "unshare")
        check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None), "bind " + path)
    except BaseException:
        os.unlink(path)
        raise


@dataclass(frozen=True)
class Link:
    """One end of a veth pair: interface ``ifname`` in namespace ``netns`` with its addresses."""

    netns: str
    ifname: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface


@dataclass
class Topology:
    """Namespaces and veth pairs created by us; ``close`` removes exactly those.

    With an ``owner`` (a KernelOwner: a command's, not a test's) each namespace and veth is ledgered before it
    is made and the owner removes them (its close, or `sweep` after a kill); ``close`` then has nothing to do."""

    namespaces: list[str] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)
    owner: Any = None

    def add_namespace(self, name: str) -> str:
        if self.owner is not None:
            self.owner.create({"kind": "netns", "name": name}, lambda: create_namespace(name))
        else:
            create_namespace(name)
            self.namespaces.append(name)
        with open_rtnl(name) as rtnl:
            rtnl.link("set", index=rtnl.link_lookup(ifname="lo")[0], state="up")
        return name

    def connect(self, a: str, b: str, subnet_v4: str, subnet_v6: str, *, gso_max_segs: int | None = None
                ) -> tuple[Link, Link]:
        """A veth pair between namespaces a and b, addresses .1 (a) and .2 (b) of each subnet."""
        tag = secrets.token_hex(3)
        name_a, name_b = f"ci{tag}a", f"ci{tag}b"
        v4, v6 = ipaddress.ip_network(subnet_v4), ipaddress.ip_network(subnet_v6)
        def add_veth() -> None:
            rtnl.link("add", ifname=name_a, kind="veth", peer={"ifname": name_b, "net_ns_fd": b})

        with open_rtnl() as rtnl:
            if self.owner is not None:   # made in this namespace, then moved: a kill between leaves it here
                self.owner.create({"kind": "link", "link_kind": "veth", "ifname": name_a}, add_veth)
            else:
                add_veth()
            try:
                rtnl.link("set", index=rtnl.link_lookup(ifname=name_a)[0], net_ns_fd=a)
            except BaseException:
                rtnl.link("del", index=rtnl.link_lookup(ifname=name_a)[0])
                raise
        ends = []
        for ns, ifname, host in ((a, name_a, 1), (b, name_b, 2)):
            link = Link(netns=ns, ifname=ifname,
                        ipv4=ipaddress.ip_interface(f"{v4.network_address + host}/{v4.prefixlen}"),
                        ipv6=ipaddress.ip_interface(f"{v6.network_address + host}/{v6.prefixlen}"))
            with open_rtnl(ns) as rtnl:
                index = rtnl.link_lookup(ifname=ifname)[0]
                rtnl.addr("add", index=index, address=str(link.ipv4.ip), prefixlen=v4.prefixlen)
                rtnl.addr("add", index=index, address=str(link.ipv6.ip), prefixlen=v6.prefixlen, flags=IFA_F_NODAD)
                if gso_max_segs is not None:
                    rtnl.link("set", index=index, gso_max_segs=gso_max_segs)
                rtnl.link("set", index=index, state="up")
            self.links[f"{ns}:{ifname}"] = link
            ends.append(link)
        return ends[0], ends[1]

    def add_address(self, link: Link, address: str) -> None:
        """A further address on one of our links (e.g. an untargeted address in a test)."""
        iface = ipaddress.ip_interface(address)
        with open_rtnl(link.netns) as rtnl:
            index = rtnl.link_lookup(ifname=link.ifname)[0]
            rtnl.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                      **({"flags": IFA_F_NODAD} if iface.version == 6 else {}))

    def close(self) -> None:
        """Remove our namespaces (their veths go with them)."""
        errors = []
        while self.namespaces:
            name = self.namespaces.pop()
            try:
                _netns.remove(name)
            except (OSError, NetlinkError) as exc:
                if name in _netns.listnetns():
                    errors.append((name, exc))
        self.links.clear()
        if errors:
            raise RuntimeError(f"could not remove namespaces: {errors}")

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


in_netns = entered_netns


def socket_in(netns: str | None, family: int, kind: int) -> socket.socket:
    with in_netns(netns):
        return socket.socket(family, kind)


def existing_namespaces() -> list[str]:
    return list(_netns.listnetns())
