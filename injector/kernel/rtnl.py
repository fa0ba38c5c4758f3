"""Netlink sockets, in the root namespace or a named one. The only pyroute2 entry point."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["NetlinkError", "open_rtnl", "is_gone"]


@contextlib.contextmanager
def open_rtnl(netns: str | None = None) -> Iterator[IPRoute]:
    sock = NetNS(netns) if netns else IPRoute()
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
