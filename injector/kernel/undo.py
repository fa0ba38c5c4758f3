"""How to undo each kind of ledger entry. Used by the live owner and by `sweep` alike."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from . import tc
from .labobjects import stop_namespace_members, undo_lab_dir, undo_netns_lab, undo_process
from .rtnl import NetlinkError, is_gone

log = logging.getLogger(__name__)


def _undo_filter(entry: dict[str, Any]) -> None:
    ifindex = _current_index(entry)
    if ifindex is None:
        return  # interface (or namespace) gone: so is the filter
    tc.delete_bpf_filter(ifindex, entry["hook"], entry["prio"], entry["name"], entry.get("netns"))


def _undo_clsact(entry: dict[str, Any]) -> Any:
    """This run no longer uses the clsact: deleted if chaos-inject made it and nothing is attached (clsact.py)."""
    from .clsact import release_entry

    return release_entry(entry)


def _current_index(entry: dict[str, Any]) -> int | None:
    """The interface's index now, if it is still the same interface we recorded."""
    try:
        index = tc.link_index(entry["ifname"], entry.get("netns"))
    except FileNotFoundError:
        return None  # the namespace is gone
    except NetlinkError as exc:
        if is_gone(exc):
            return None
        raise
    return index if index == entry["ifindex"] else None


def _undo_root_qdisc(entry: dict[str, Any]) -> None:
    """Remove our root qdisc (its netem leaves and filter go with it), then put the previous root back."""
    from . import rawnl

    ifindex = _current_index(entry)
    if ifindex is None:
        return
    with rawnl.rtnl(entry.get("netns")) as sock:
        root = sock.root(ifindex)
        if root is None or root.handle != entry["handle"]:
            log.warning("root qdisc of %s is no longer ours (%s); leaving it", entry["ifname"],
                        root.kind if root else "none")
            return
        sock.delete_qdisc(ifindex, rawnl.TC_H_ROOT, entry["handle"])
        previous = entry.get("previous")
        if previous:
            sock.add_qdisc(ifindex, rawnl.TC_H_ROOT, previous["handle"], bytes.fromhex(previous["attrs_hex"]))


def _undo_nft_table(entry: dict[str, Any]) -> None:
    from .nftables import delete_table  # our own whole table: deleting it removes only our rules

    delete_table(entry.get("netns"), entry["name"])  # already gone (or its namespace gone): nothing to do


def _undo_link(entry: dict[str, Any]) -> None:
    """A device we made (an IFB): its name is ours alone; deleting it deletes its qdiscs."""
    from .rtnl import open_rtnl

    try:
        with open_rtnl(entry.get("netns")) as rtnl:
            found = rtnl.link_lookup(ifname=entry["ifname"])
            if not found:
                return
            link = rtnl.get_links(found[0])[0]
            if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != entry["link_kind"]:
                log.warning("%s is not the %s device we made; leaving it", entry["ifname"], entry["link_kind"])
                return
            rtnl.link("del", index=found[0])
    except FileNotFoundError:
        return  # the namespace is gone, and the device with it


def _undo_netns(entry: dict[str, Any]) -> None:
    """A throwaway namespace we made (the capability probe's ``ci-probe-<pid>-<hex>``): its name is ours alone
    (pid and random part); removing it removes everything made inside it."""
    from .rtnl import netns_module

    _netns = netns_module()
    if entry.get("members") == "kill":  # the VM lab's namespace: its processes are all ours (labobjects.py)
        stop_namespace_members(entry["name"])
    if entry["name"] in _netns.listnetns():
        _netns.remove(entry["name"])


def _undo_restart(entry: dict[str, Any]) -> str:
    """A `kill-process` run died holding its target down: bring it back, as its restore would have.

    Nothing is started if every recorded process is still alive (the run died before signalling any), nor if
    a process started by the run's own restart is (it died between the restart and the ledger's update)."""
    import subprocess
    import tempfile

    from ..procfs import RESTART_MARKER_ENV, restarted_by
    from .ledger import process_alive

    pids = entry.get("pids") or {}
    if pids and all(process_alive(int(pid), ticks) for pid, ticks in pids.items()):
        return "nothing was killed"
    marker = entry.get("marker")
    if marker and entry.get("command") and restarted_by(marker):
        return "already restarted"  # the run died after its restart, before the ledger said so
    env = {**os.environ, RESTART_MARKER_ENV: marker} if marker else None
    if entry.get("unit"):
        argv = ["systemctl", "start", entry["unit"]]
    elif entry.get("command"):
        argv = ["/bin/sh", "-c", entry["command"]]
    else:
        return "no restart command: it stays down"
    # stderr to a file, not a pipe: a command that backgrounds the service (`api &`) leaves it holding the
    # pipe open, and reading to its end hung sweep for as long as the service ran
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                start_new_session=True, env=env)  # the service must not die with sweep
        try:
            code = proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return f"restarted (pid {proc.pid})"  # still running: it is the service
        errors.seek(0)
        err = errors.read().decode(errors="replace").strip()
    if code != 0:
        raise RuntimeError(f"restart {argv!r} exited {code}: {err}")
    return "restarted"


UNDO: dict[str, Callable[[dict[str, Any]], None]] = {
    "restart": _undo_restart,
    "link": _undo_link,
    "netns": _undo_netns,
    "root-qdisc": _undo_root_qdisc,
    "clsact": _undo_clsact,
    "bpf-filter": _undo_filter,
    "nft-table": _undo_nft_table,
    "process": undo_process,     # the VM lab's daemons and QEMU (pid + start time)
    "lab-dir": undo_lab_dir,     # the VM lab's work directory
    "netns-lab": undo_netns_lab,  # the netns lab while lab up/down or the demo that brought it up runs
}


def undo_entry(entry: dict[str, Any]) -> Any:
    """Undo one entry; returns what its handler reports (a clsact release says whether it was deleted)."""
    try:
        handler = UNDO[entry["kind"]]
    except KeyError:
        raise ValueError(f"ledger entry of unknown kind {entry.get('kind')!r}") from None
    return handler(entry)
