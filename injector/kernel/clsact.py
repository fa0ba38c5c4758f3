"""Shared clsact qdiscs: who made one, and who removes it.

Several users put filters on an interface's clsact at once (two runs, a run and a recorder). The clsact itself
belongs to none of them alone, so "the run that created it removes it" leaves an empty clsact behind whenever
the creator ends first. Instead:

- A clsact that chaos-inject creates gets a *marker*: ``<run root>/clsact/<key>.json``, keyed by network
  namespace (name and nsfs inode), interface name and ifindex. No marker: an operator's clsact, never deleted.
- Every user records a ``clsact`` ledger entry (created or found), under one lock, in the same critical
  section in which it attaches its filters (``use()``). Its undo (``release()``), after its filters are gone,
  takes the lock and deletes the clsact only if it is marked and nothing is attached on either hook (an
  operator's filter included: then it stays, and the marker records why).
- ``sweep_markers()`` (from `chaos-inject sweep`) does the same for every marker left by runs that are gone:
  an empty marked clsact is removed, a marker whose clsact or interface is gone is dropped.

The lock is an flock on ``<run root>/clsact/.lock``, reentrant within a process (an engine that takes it for
an interface may call a helper that takes it again), so a filter is never attached to a clsact that a
concurrent release has just judged empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import crashpoints
from ..errors import Busy
from . import tc
from .ledger import _write_atomic, clsact_marker_dir
from .rtnl import NetlinkError, is_gone

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 30.0
_thread_lock = threading.RLock()
_depth = 0
_lock_fd: int | None = None


def marker_dir() -> Path:
    return clsact_marker_dir()


@contextlib.contextmanager
def locked(timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """The clsact lock: across processes (flock) and threads (RLock); reentrant in one thread."""
    global _depth, _lock_fd
    with _thread_lock:
        if _depth == 0:
            marker_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(marker_dir() / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise Busy(f"the clsact lock {marker_dir() / '.lock'} was held for over "
                                           f"{timeout_s:.0f} s by another chaos-inject process") from None
                    time.sleep(0.005)
            _lock_fd = fd
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if _depth == 0:
                fd, _lock_fd = _lock_fd, None
                if fd is not None:
                    os.close(fd)  # closing the only fd of this open file releases the flock


# -- markers ---------------------------------------------------------------------------------------------------
def netns_inode(netns: str | None) -> int | None:
    """The namespace's nsfs inode: tells a namespace from a later one of the same name."""
    path = f"/run/netns/{netns}" if netns else "/proc/thread-self/ns/net"
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _key(netns: str | None, ifname: str, ifindex: int) -> str:
    return f"{netns or '-'}~{ifname}~{ifindex}"


def marker_path(netns: str | None, ifname: str, ifindex: int) -> Path:
    return marker_dir() / f"{_key(netns, ifname, ifindex)}.json"


def read_marker(netns: str | None, ifname: str, ifindex: int) -> dict[str, Any] | None:
    """The marker of a clsact we created here, if it is for this very namespace."""
    try:
        marker = json.loads(marker_path(netns, ifname, ifindex).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if marker.get("netns_ino") != netns_inode(netns):
        return None  # a namespace of the same name made later: that marker was for another clsact
    return marker


def _drop_marker(netns: str | None, ifname: str, ifindex: int) -> None:
    marker_path(netns, ifname, ifindex).unlink(missing_ok=True)


@dataclass
class Where:
    netns: str | None
    ifname: str
    ifindex: int

    def entry(self) -> dict[str, Any]:
        # "marker": released through the marker (entries written before markers existed lack it)
        return {"kind": "clsact", "netns": self.netns, "ifname": self.ifname, "ifindex": self.ifindex,
                "marker": True}


# -- users -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def use(owner, netns: str | None, ifname: str, ifindex: int, *, run_id: str | None = None) -> Iterator[bool]:
    """Hold the lock; make sure the interface has a clsact (made and marked if it has none) and record this
    run's use of it in ``owner``'s ledger; attach the filters inside the block. Yields whether we made it.

    The ledger entry comes before the filters, so LIFO undo removes the filters first, then releases.
    """
    where = Where(netns, ifname, ifindex)
    with locked():
        yield owner.create(where.entry(), lambda: _ensure(where, run_id or owner.run_id))


def _ensure(where: Where, run_id: str) -> bool:
    if tc.has_clsact(where.ifindex, where.netns):
        if not marker_path(where.netns, where.ifname, where.ifindex).exists():
            return False  # an operator's (or an earlier run's that is still marked: then the marker stays)
        if read_marker(where.netns, where.ifname, where.ifindex) is None:
            _drop_marker(where.netns, where.ifname, where.ifindex)  # stale: for a namespace that is gone
        return False
    # Marked first, created second (like every ledger entry): a SIGKILL between the two leaves a marker
    # without a clsact, which release()/sweep drop. The other order leaked an empty unmarked clsact, which no
    # sweep may remove (crash-point walk, issue #18). What remains: an operator who adds a clsact on this very
    # interface after such a crash and before `sweep`, and attaches nothing to it, has that empty clsact removed.
    with crashpoints.step("write clsact marker"):
        _write_atomic(marker_path(where.netns, where.ifname, where.ifindex),
                      {"netns": where.netns, "netns_ino": netns_inode(where.netns), "ifname": where.ifname,
                       "ifindex": where.ifindex, "created_by": run_id, "pid": os.getpid(), "created": time.time()})
    try:
        with crashpoints.step("add clsact"):
            tc.add_clsact(where.ifindex, where.netns)
    except NetlinkError as exc:
        from ..errors import ApplyFailed

        _drop_marker(where.netns, where.ifname, where.ifindex)
        raise ApplyFailed(f"adding a clsact qdisc on {where.ifname}"
                          + (f" (netns {where.netns})" if where.netns else "") + f" failed: {exc}") from exc
    except BaseException:
        _drop_marker(where.netns, where.ifname, where.ifindex)
        raise
    return True


def _current_index(netns: str | None, ifname: str, ifindex: int) -> int | None:
    try:
        index = tc.link_index(ifname, netns)
    except FileNotFoundError:
        return None
    except NetlinkError as exc:
        if is_gone(exc):
            return None
        raise
    return index if index == ifindex else None


@dataclass
class Released:
    removed: bool        # the clsact was deleted now
    reason: str          # why (or why not)
    in_use: bool = False  # kept because filters are attached


def release(netns: str | None, ifname: str, ifindex: int) -> Released:
    """One user is done (its filters removed): delete the clsact if we made it and nothing is attached."""
    with locked():
        if _current_index(netns, ifname, ifindex) is None:
            _drop_marker(netns, ifname, ifindex)
            return Released(False, "interface gone")
        if not tc.has_clsact(ifindex, netns):
            _drop_marker(netns, ifname, ifindex)
            return Released(False, "clsact already gone")
        marker = read_marker(netns, ifname, ifindex)
        if marker is None:
            return Released(False, "not ours (no marker): an operator's clsact is never deleted")
        remaining = tc.list_filters(ifindex, netns)
        if remaining:
            # counted per hook and priority: a u32 filter also lists its hash-table header
            prios = {(f.hook, f.prio): (f.name or "").startswith("chaos-inject") for f in remaining}
            ours = sum(prios.values())
            why = (f"{len(prios)} filter(s) attached ({ours} of other chaos-inject runs, "
                   f"{len(prios) - ours} not ours)")
            if len(prios) > ours:
                marker["kept"] = {"at": time.time(), "why": why}  # the operator's filter keeps it
                _write_atomic(marker_path(netns, ifname, ifindex), marker)
            return Released(False, why, in_use=True)
        try:
            with crashpoints.step("delete clsact"):
                tc.delete_clsact(ifindex, netns)
        except NetlinkError as exc:
            if not is_gone(exc):
                raise
        _drop_marker(netns, ifname, ifindex)
        return Released(True, "empty and made by chaos-inject")


def release_entry(entry: dict[str, Any]) -> Released:
    """Undo of a ``clsact`` ledger entry."""
    if not entry.get("marker"):
        return _release_legacy(entry)
    done = release(entry.get("netns"), entry["ifname"], entry["ifindex"])
    log.debug("clsact on %s: %s", entry["ifname"], done.reason)
    return done


def _release_legacy(entry: dict[str, Any]) -> Released:
    """An entry from before markers: it was written only by the run that created the clsact."""
    netns, ifindex = entry.get("netns"), entry["ifindex"]
    with locked():
        if _current_index(netns, entry["ifname"], ifindex) is None or not tc.has_clsact(ifindex, netns):
            return Released(False, "already gone")
        if tc.list_filters(ifindex, netns):
            return Released(False, "filters attached", in_use=True)
        tc.delete_clsact(ifindex, netns)
        return Released(True, "empty and made by this (older) run")


def markers() -> list[dict[str, Any]]:
    out = []
    for path in sorted(marker_dir().glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, FileNotFoundError):
            continue
    return out


def sweep_markers() -> list[tuple[dict[str, Any], Released]]:
    """Every marked clsact: removed when empty, its marker dropped when it or its interface is gone; kept
    (with the reason) while anything is attached. Live runs' clsacts are never empty: they attach under the lock.
    """
    out = []
    for marker in markers():
        netns, ifname, ifindex = marker.get("netns"), marker["ifname"], marker["ifindex"]
        if marker.get("netns_ino") != netns_inode(netns):
            with locked():
                _drop_marker(netns, ifname, ifindex)
            out.append((marker, Released(False, "namespace gone")))
            continue
        try:
            out.append((marker, release(netns, ifname, ifindex)))
        except FileNotFoundError:
            with locked():
                _drop_marker(netns, ifname, ifindex)
            out.append((marker, Released(False, "namespace gone")))
    return out


__all__ = ["Released", "locked", "markers", "read_marker", "release", "release_entry", "sweep_markers", "use"]
