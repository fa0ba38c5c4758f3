"""The fleet controller's ledger: which hosts of which inventory a fleet run may have touched (issue #18).

Written (files.write_json_atomic) in this machine's ledger directory, beside the kernel runs' ledgers and in their
format (``run_id``, owner ``pid`` and start ticks, ``meta``, ``entries``), with ``meta.kind = "fleet"``:

- before the first host is asked to start the fault: the fleet run id, the inventory's path, the controller's
  private Ansible folder and one ``fleet-host`` entry per host it will touch (``state: planned``);
- after the start round: the hosts that took it ``started``;
- after a stop or rollback round: the hosts that came back clean are removed; no host left: the ledger is deleted.

The controller keeps no state a host's safety depends on (each host ends its fault on its own heartbeat); the
ledger only says, after the controller died, what to clean: ``status`` and ``sweep --dry-run`` list it, a local
``sweep`` leaves it (it touches no other host), ``sweep --inventory FILE`` of that inventory sweeps every host of
the inventory and then clears the ledger's hosts that came back clean (never a host that is not in it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import crashpoints
from ..files import entries_of_dead_pids, ledger_dir, ledger_files, write_json_atomic
from ..procfs import process_alive, process_start_ticks

KIND = "fleet"
HOST_ENTRY = "fleet-host"
PRIVATE_PREFIX = "chaos-fleet-"       # fleet.ansible's private folders (tempfile.mkdtemp prefix)
PRIVATE_NAME = re.compile(r"^chaos-fleet-(\d+)-[^/]+$")   # ... with the controller's pid
# ssh's control sockets live in the private folder (cp/<Ansible's 10-character hash>, plus ssh's 17-character
# temporary suffix while it binds): a Unix socket's path holds at most 107 bytes
SOCKET_PATH_MAX = 107
SOCKET_TAIL = len("/chaos-fleet-4194304-xxxxxxxx/cp/") + 10 + 17


def private_folder_parent() -> str:
    """Where fleet.ansible makes its private folders: the temporary directory, or /tmp when the temporary
    directory's path is too long for the SSH control sockets inside it (ssh refuses, Ansible reports the host
    unreachable)."""
    base = tempfile.gettempdir()
    return base if len(base) + SOCKET_TAIL <= SOCKET_PATH_MAX else "/tmp"
STOP_POLL_S = 0.2                     # how often a controller reads its stop request


class FleetLedger:
    """One fleet run's controller ledger. ``hosts`` are inventory names; ``private``: the Ansible folder of the
    controller's rounds (a killed controller leaves it; ``sweep --inventory`` removes it with the ledger)."""

    def __init__(self, run_id: str, inventory: str, *, private: str | None = None):
        self.run_id = run_id
        self.inventory = os.path.abspath(inventory)
        self.private = private
        self.hosts: dict[str, str] = {}       # host -> planned | started
        self.pid = os.getpid()
        self.pid_start_ticks = process_start_ticks(self.pid)
        self.created = time.time()
        self.written = False

    @property
    def path(self) -> Path:
        return ledger_dir() / f"{self.run_id}.json"

    @property
    def stop_path(self) -> Path:
        """`chaos-inject stop RUN_ID` (or `stop --all`) on the controller's machine creates it (kernel Ledger's
        request_stop): the CLI's fleet inject then rolls back every host, as on Ctrl-C."""
        return ledger_dir() / f"{self.run_id}.stop"

    def stop_requested(self) -> bool:
        return self.written and self.stop_path.exists()

    def _write(self) -> None:
        data = {"run_id": self.run_id, "pid": self.pid, "pid_start_ticks": self.pid_start_ticks,
                "created": self.created,
                "meta": {"kind": KIND, "fleet_run": self.run_id, "inventory": self.inventory,
                         "private": self.private, "hosts": sorted(self.hosts)},
                "entries": [{"kind": HOST_ENTRY, "host": h, "state": s, "fleet_run": self.run_id,
                             "inventory": self.inventory} for h, s in sorted(self.hosts.items())]}
        with crashpoints.step("write fleet ledger"):
            write_json_atomic(self.path, data)
        self.written = True

    def plan(self, hosts: Iterable[str]) -> None:
        """Before the start round: every host the run will touch."""
        self.hosts = {h: "planned" for h in hosts}
        self._write()

    def started(self, hosts: Iterable[str]) -> None:
        for h in hosts:
            if h in self.hosts:
                self.hosts[h] = "started"
        self._write()

    def cleared(self, hosts: Iterable[str]) -> None:
        """After a stop or rollback round: ``hosts`` came back clean. The ledger goes when none is left."""
        for h in hosts:
            self.hosts.pop(h, None)
        if self.hosts:
            self._write()
        else:
            self.delete()

    def delete(self) -> None:
        if not self.written:
            return
        with crashpoints.step("delete fleet ledger"):  # the ledger first, as kernel Ledger.delete() (why: there)
            self.path.unlink(missing_ok=True)
            self.stop_path.unlink(missing_ok=True)
        self.written = False


def watch_stop_request(ledger: "FleetLedger | None", on_request: Callable[[], None], done: threading.Event,
                       *, name: str = "fleet-stop-request", poll_s: float = STOP_POLL_S) -> None:
    """A daemon thread that calls ``on_request()`` once `chaos-inject stop RUN_ID` asked the fleet run to end
    (the ledger's stop file), until ``done`` is set. Without a ledger (a dry run, a test's fake rounds) none."""
    if ledger is None:
        return

    def watch() -> None:
        while not done.wait(poll_s):
            if ledger.stop_requested():
                on_request()
                return

    threading.Thread(target=watch, daemon=True, name=name).start()


def fleet_ledgers() -> list[dict[str, Any]]:
    """Every fleet ledger in the ledger directory (parsed), with ``alive``: does its controller still run."""
    out = []
    for path in ledger_files():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or (data.get("meta") or {}).get("kind") != KIND:
            continue
        data["alive"] = process_alive(int(data.get("pid", 0)), data.get("pid_start_ticks"))
        data["path"] = str(path)
        out.append(data)
    return out


def dead_for_inventory(inventory: str) -> list[dict[str, Any]]:
    """The fleet ledgers of dead controllers that name this inventory (by absolute path)."""
    inventory = os.path.abspath(inventory)
    return [d for d in fleet_ledgers() if not d["alive"] and d["meta"].get("inventory") == inventory]


def clear_swept(inventory: str, clean_hosts: Iterable[str], *, inventory_hosts: Iterable[str],
                dry_run: bool = False) -> list[dict[str, Any]]:
    """After ``sweep --inventory``: in each dead controller's ledger of this inventory, drop the hosts that came
    back clean; a ledger with no host left is deleted with its controller's private Ansible folder. A host of a
    ledger that is no longer in the inventory is never cleared (nothing was done to it). Returns, per ledger:
    ``run_id``, ``cleared`` hosts, ``left`` hosts (still to clean), ``deleted``."""
    clean = set(clean_hosts)
    members = set(inventory_hosts)
    out = []
    for data in dead_for_inventory(inventory):
        hosts = {e["host"]: e.get("state", "planned") for e in data.get("entries", []) if e.get("kind") == HOST_ENTRY}
        cleared = sorted(h for h in hosts if h in clean and h in members)
        left = sorted(h for h in hosts if h not in cleared)
        report = {"run_id": data["run_id"], "cleared": cleared, "left": left, "deleted": not left,
                  "not_in_inventory": sorted(h for h in hosts if h not in members)}
        out.append(report)
        if dry_run:
            continue
        if left:
            entries = [e for e in data.get("entries", []) if e.get("host") not in cleared]
            with crashpoints.step("write fleet ledger"):
                write_json_atomic(Path(data["path"]), {k: v for k, v in data.items() if k not in ("alive", "path")}
                                  | {"entries": entries})
            continue
        remove_private(data["meta"].get("private"))
        with crashpoints.step("delete fleet ledger"):
            Path(data["path"]).with_suffix(".stop").unlink(missing_ok=True)   # a stop asked of the dead controller
            Path(data["path"]).unlink(missing_ok=True)
    return out


def orphaned_private_folders(directory: str | None = None) -> list[Path]:
    """Ansible folders (``chaos-fleet-<pid>-*`` in :func:`private_folder_parent`) of controllers that are gone: one
    killed before its ledger was written (or after) leaves its folder. A live pid's folder is never listed."""
    return entries_of_dead_pids(directory or private_folder_parent(), PRIVATE_NAME)


def remove_private(private: str | None) -> None:
    """A dead controller's Ansible folder, only if it is one of ours (a ``chaos-fleet-`` folder, no symlink)."""
    if not private:
        return
    path = Path(private)
    if not path.name.startswith(PRIVATE_PREFIX) or path.is_symlink() or not path.is_dir():
        return
    with crashpoints.step("remove fleet private folder"):
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["FleetLedger", "HOST_ENTRY", "KIND", "clear_swept", "dead_for_inventory", "fleet_ledgers",
           "orphaned_private_folders", "remove_private"]
