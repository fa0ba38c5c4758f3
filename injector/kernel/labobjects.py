"""Ledger entries of the labs: the VM lab's (vagrant/lib/nslibvirt.sh) processes, namespace members and directories,
and the netns lab as one object while a command that makes or removes it runs.

The VM lab's ledger (meta kind ``vm-lab``) is written by the bash scripts through ``chaosinject.cli.ledger_writer``
before each object is made; ``sweep`` undoes its entries with these handlers (kernel/undo.py):

- ``process``: ``pid`` + ``starttime`` (clock ticks since boot): stopped (SIGTERM, then SIGKILL) only while that
  pid still names the process that was recorded; a reused pid is left alone.
- ``netns`` with ``members: "kill"``: a namespace the lab made (its name carries the owner's pid, only ``lo``
  inside): every process whose network namespace it is was started inside it by the lab (libvirtd, dnsmasq,
  QEMU, vagrant and its ssh), including one killed between its start and its ledger line; they are stopped
  before the namespace is removed. A process elsewhere is never touched.
- ``lab-dir``: a directory the lab made for this run (its work directory: the private libvirt state, storage
  pool, volumes and Vagrant home live in it); removed whole, never through a symlink.
- ``netns-lab``: the netns lab (``prefix``, ``subnet``, ``state_dir``) while `lab up` builds it, `lab down` removes
  it, or the demo holds a lab it brought up (chaosinject.lab.netlab.lab_ledger): undone by `chaos-inject lab down`
  of that lab, which removes exactly what its state records (a process of its own: the lab's code is above this
  floor).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..procfs import process_alive, process_start_ticks

NETNS_DIR = Path("/run/netns")
STOP_GRACE_S = 5.0


def _wait_gone(pids: dict[int, int | None], timeout: float) -> dict[int, int | None]:
    deadline = time.monotonic() + timeout
    while True:
        pids = {p: t for p, t in pids.items() if process_alive(p, t)}
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.05)


def stop_processes(pids: dict[int, int | None], grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM each process that is still the one named (pid -> start ticks), SIGKILL what is left after
    ``grace_s``; returns the pids that were running. A start time that no longer matches: not ours, not signalled."""
    live = {p: t for p, t in pids.items() if process_alive(p, t)}
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid, ticks in live.items():
            if process_alive(pid, ticks):  # checked again right before the signal
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        if not _wait_gone(live, wait):
            break
    return sorted(live)


def namespace_members(name: str) -> dict[int, int | None]:
    """The processes whose network namespace is /run/netns/NAME (pid -> start ticks); empty if it is gone."""
    try:
        ns = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return {}
    out: dict[int, int | None] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino):
            ticks = process_start_ticks(int(entry))
            if ticks is not None:
                out[int(entry)] = ticks
    return out


def undo_process(entry: dict) -> str:
    stopped = stop_processes({int(entry["pid"]): entry.get("starttime")})
    return f"stopped {entry.get('role', 'process')} {entry['pid']}" if stopped else "already gone"


def stop_namespace_members(name: str) -> list[int]:
    """Stop every process in our namespace NAME (all started in it by us); a few rounds, for a process that
    forks while the others are stopped."""
    stopped: list[int] = []
    for _ in range(5):
        members = namespace_members(name)
        if not members:
            break
        stopped += stop_processes(members)
    return stopped


def undo_lab_dir(entry: dict) -> str:
    path = Path(entry["path"])
    if path.is_symlink() or not path.is_dir():
        return "already gone"
    shutil.rmtree(path)
    return "removed"


def undo_netns_lab(entry: dict) -> str:
    argv = [sys.executable, "-m", "chaosinject.cli", "lab", "down", "--prefix", entry["prefix"], "--subnet",
            entry["subnet"], "--state-dir", entry["state_dir"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_INJECT_CRASH")}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"lab down of {entry['prefix']} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return "no lab was up" if "no lab was up" in done.stdout else "lab taken down"


def describe_entry(entry: dict) -> str | None:
    kind = entry.get("kind")
    if kind == "netns-lab":
        return f"take the netns lab {entry.get('prefix')} down (`chaos-inject lab down`, state {entry.get('state_dir')})"
    if kind == "process":
        return f"stop {entry.get('role', 'process')} pid {entry.get('pid')} (if it is still the process recorded)"
    if kind == "lab-dir":
        return f"remove directory {entry.get('path')}"
    if kind == "netns" and entry.get("members") == "kill":
        return f"stop every process in network namespace {entry.get('name')}, remove it"
    return None
