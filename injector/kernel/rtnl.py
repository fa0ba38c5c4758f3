"""Netlink sockets, in the root namespace or a named one. The only pyroute2 entry point."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2 import netns as _netns
from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["NetlinkError", "entered_netns", "open_rtnl", "is_gone"]


@contextlib.contextmanager
def entered_netns(name: str | None) -> Iterator[None]:
    """This thread inside namespace ``name`` for the block; sockets made here stay bound to it.

    Raises FileNotFoundError for a namespace that does not exist (pyroute2's setns would create it).
    """
    if not name:
        yield
        return
    if not os.path.exists(os.path.join(_netns.NETNS_RUN_DIR, name)):
        raise FileNotFoundError(f"network namespace {name!r} does not exist")
    _netns.pushns(name)
    try:
        yield
    finally:
        _netns.popns()


@contextlib.contextmanager
def open_rtnl(netns: str | None = None) -> Iterator[IPRoute]:
    """A netlink socket opened inside ``netns``: the socket keeps its namespace after we switch back.

    (pyroute2's NetNS proxies through a helper process, where our BPF program fds do not exist.)
    Raises FileNotFoundError if the namespace does not exist.
    """
    with entered_netns(netns):
        sock = IPRoute()
    try:
        yield sock
    finally:
        sock.close()


def is_gone(exc: BaseException) -> bool:
    """The object (or its interface / namespace) no longer exists: undo has nothing left to do."""
    code = getattr(exc, "code", None)
    if isinstance(exc, NetlinkError) and code in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
        return True
    return isinstance(exc, FileNotFoundError)
