"""Netlink sockets, in the root namespace or a named one. The only pyroute2 entry point."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2 import netns as _netns
from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["NetlinkError", "open_rtnl", "is_gone"]


@contextlib.contextmanager
def open_rtnl(netns: str | None = None) -> Iterator[IPRoute]:
    """A netlink socket opened inside ``netns``: the socket keeps its namespace after we switch back.

    (pyroute2's NetNS proxies through a helper process, where our BPF program fds do not exist.)
    Raises FileNotFoundError if the namespace does not exist.
    """
    if netns:
        _netns.pushns(netns)
        try:
            sock = IPRoute()
        finally:
            _netns.popns()
    else:
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
