"""Netlink sockets, in the root namespace or a named one. The only pyroute2 entry point."""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator


def _load_pyroute2_lightly() -> None:
    """Register the pyroute2 package without running its ``__init__``, which imports every pyroute2 family
    (NDB, IPDB, conntrack, wireguard, nl80211, ...): ~40 ms of a warm fault's ~250 ms from command to first packet
    affected (bench/fault_onset.py). Submodules load as usual; a name the real ``__init__`` binds (``from
    pyroute2 import NDB`` elsewhere in the process) runs that ``__init__`` then, once."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        raise ImportError("pyroute2 is not installed (chaos-inject needs it for netlink)")
    package = importlib.util.module_from_spec(spec)

    def full_package_attribute(name: str):
        try:
            return importlib.import_module(f"pyroute2.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pyroute2.{name}":
                raise
        del package.__dict__["__getattr__"]
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = full_package_attribute
    sys.modules["pyroute2"] = package


_load_pyroute2_lightly()
from pyroute2 import netns as _netns  # noqa: E402
from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

__all__ = ["NetlinkError", "IPRoute", "entered_netns", "open_rtnl", "is_gone", "netns_module"]


def netns_module():
    """pyroute2's netns helpers (listnetns, remove, pushns/popns), loaded through this module."""
    return _netns


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
