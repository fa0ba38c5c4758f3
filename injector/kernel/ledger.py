"""Run ledgers under /run/chaos-inject/runs: what a run created, written before each creation.

A ledger is JSON: run metadata, the owning process (pid + start time, so a reused pid is not mistaken for
the owner) and ``entries``, the kernel objects in creation order. It is rewritten atomically on each change.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import crashpoints
from ..files import experiments_dir
from ..files import ledger_dir, ledger_files, orphaned_temp_files, run_root  # noqa: F401  (callers import them here)
from ..files import write_json_atomic as _write_atomic  # clsact markers write through it too
from ..procfs import process_alive, process_start_ticks  # noqa: F401  (callers import them from here)
from .labobjects import describe_entry


# FIS-like lifecycle of a run, written in its status file ("state"): pending, running, then one of these
FINAL_STATES = frozenset({"completed", "failed", "stopped", "halted"})
HISTORY_KEEP = 50


def clsact_marker_dir() -> Path:
    """clsact.py's markers (named here: `status` lists stray files there without loading the netlink modules)."""
    return run_root() / "clsact"


def history_dir() -> Path:
    """Final status of finished runs (the ledger and live status are gone by then), newest HISTORY_KEEP kept."""
    return run_root() / "history"


def by_age(paths) -> list[Path]:
    """``paths`` oldest first, those gone before their turn left out: runs on this host record and prune their
    history concurrently (record_final of another run may remove a file between a listing and its stat)."""
    dated = []
    for path in paths:
        try:
            dated.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    return [path for _, path in sorted(dated)]


def record_final(status: dict[str, Any]) -> None:
    with crashpoints.step("write history"):
        _write_atomic(history_dir() / f"{status['run_id']}.json", status)
    old = by_age(history_dir().glob("*.json"))[:-HISTORY_KEEP]
    for path in old:
        path.unlink(missing_ok=True)
        path.with_suffix(".log").unlink(missing_ok=True)  # a detached run's supervisor log goes with it


def final_record(run_id: str) -> dict[str, Any] | None:
    """The final record of one finished run (record_final's file, named by its run id); None if it has none
    (still running, never existed, or aged out of the newest HISTORY_KEEP)."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        return None  # a run id names a file in the history directory, nothing outside it
    try:
        return json.loads((history_dir() / f"{run_id}.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def recent_finished(limit: int = 10) -> list[dict[str, Any]]:
    directory = history_dir()
    if not directory.is_dir():
        return []
    out = []
    for path in by_age(directory.glob("*.json"))[-limit:]:
        try:
            out.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, FileNotFoundError):
            continue
    return out


@dataclass
class Ledger:
    run_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)
    pid_start_ticks: int | None = None
    created: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return ledger_dir() / f"{self.run_id}.json"

    @property
    def status_path(self) -> Path:
        return ledger_dir() / f"{self.run_id}.status.json"

    @property
    def stop_path(self) -> Path:
        """`chaos-inject stop` asks the owning process to end the run by creating this file (any kind of
        run: CLI, detached, library; no signal into a process that may be someone's Python program)."""
        return ledger_dir() / f"{self.run_id}.stop"

    def request_stop(self, state: str = "stopped") -> None:
        self.stop_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with crashpoints.step("write stop request"):  # `delete()` removes it with the ledger
            self.stop_path.write_text(state)
        if not self.path.exists():  # the run ended meanwhile, its delete() perhaps before our request came
            self.stop_path.unlink(missing_ok=True)

    def stop_requested(self) -> str | None:
        try:
            return self.stop_path.read_text().strip() or "stopped"
        except FileNotFoundError:
            return None

    def save(self) -> None:
        if self.pid_start_ticks is None:
            self.pid_start_ticks = process_start_ticks(self.pid)
        with crashpoints.step("write ledger"):
            _write_atomic(self.path, {"run_id": self.run_id, "pid": self.pid, "pid_start_ticks": self.pid_start_ticks,
                                      "created": self.created, "meta": self.meta, "entries": self.entries})

    def append(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self.save()

    def remove_entry(self, entry: dict[str, Any]) -> None:
        self.entries.remove(entry)
        self.save()

    def write_status(self, status: dict[str, Any]) -> None:
        with crashpoints.step("write status", once=True):  # rewritten each tick: one crash point
            _write_atomic(self.status_path, status)

    def read_status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def delete(self) -> None:
        with crashpoints.step("delete ledger"):
            # the ledger first: a stop request written after it is gone removes itself (request_stop), one
            # written before is removed here; stop first would leak a request that came between the two
            for path in (self.path, self.status_path, self.stop_path):
                path.unlink(missing_ok=True)

    @property
    def owner_alive(self) -> bool:
        return process_alive(self.pid, self.pid_start_ticks)

    @classmethod
    def load(cls, path: Path) -> "Ledger":
        data = json.loads(path.read_text())
        return cls(run_id=data["run_id"], meta=data.get("meta", {}), entries=data.get("entries", []),
                   pid=data["pid"], pid_start_ticks=data.get("pid_start_ticks"), created=data.get("created", 0.0))

    @classmethod
    def all(cls) -> list["Ledger"]:
        out = []
        for path in ledger_files():
            try:
                out.append(cls.load(path))
            except FileNotFoundError:
                continue  # its run ended (Ledger.delete) between the listing and this read
            except (json.JSONDecodeError, KeyError):
                continue  # half-written by a crash between tmp write and rename cannot happen; foreign file
        return out


def describe(entry: dict[str, Any]) -> str:
    """What undoing a ledger entry does, in words (`sweep --dry-run`, `status`)."""
    lab = describe_entry(entry)
    if lab:
        return lab
    kind = entry.get("kind")
    where = (f" on {entry['ifname']}" if entry.get("ifname") else "") + (
        f" (netns {entry['netns']})" if entry.get("netns") else "")
    if kind == "netns":
        return f"remove network namespace {entry['name']}"
    if kind == "fleet-host":  # a fleet controller's ledger (fleet/ledger.py): another host, not this one's kernel
        return (f"nothing here; on host {entry.get('host')} ({entry.get('state', 'planned')}) fleet run "
                f"{entry.get('fleet_run')} is stopped and swept by `chaos-inject sweep --inventory "
                f"{entry.get('inventory')}` (a local sweep leaves the ledger)")
    if kind == "restart":
        return f"restart what the run killed (if it is down): {entry.get('unit') or entry.get('command')}"
    if kind == "root-qdisc":
        previous = (entry.get("previous") or {}).get("kind") if isinstance(entry.get("previous"), dict) else None
        return f"remove our root qdisc{where}" + (f" and put back the previous root ({previous})"
                                                   if entry.get("previous") else "")
    if kind == "clsact":
        return f"release clsact{where} (deleted only if chaos-inject made it and nothing is attached)"
    if kind == "bpf-filter":
        return f"remove {entry.get('hook')} filter {entry.get('name')}{where}"
    if kind == "nft-table":
        return f"delete nft table {entry.get('name')}" + (f" (netns {entry['netns']})" if entry.get("netns") else "")
    if kind == "link":
        return f"delete {entry.get('link_kind')} device {entry.get('ifname')}" + (
            f" (netns {entry['netns']})" if entry.get("netns") else "")
    return f"undo {kind}{where}"


# A run's side files beside its ledger <id>.json: its status and a `chaos-inject stop` request
SIDE_SUFFIXES = (".status.json", ".stop")


def orphaned_run_files(directory: Path | None = None) -> list[Path]:
    """Status files and stop requests whose ledger is gone: a process killed inside Ledger.delete() (it unlinks
    the ledger first, then these) leaves them.

    Safe against a run being made or stopped at the same time, by the write order: a run saves its ledger before
    it writes any status (KernelOwner.__enter__, FleetLedger.plan), a stop request is only written for a ledger
    `stop` found, and a ledger is replaced by rename, never absent while its run lives. So a side file without
    its ledger belongs to a run that has ended (or is inside delete(), which unlinks it too: missing_ok both
    sides); a request_stop that lands after the ledger went removes its own file, and if it is killed first this
    finds it. Run ids are fresh per run, so no later run takes the name back."""
    directory = ledger_dir() if directory is None else Path(directory)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        for suffix in SIDE_SUFFIXES:
            run_id = name[:-len(suffix)] if name.endswith(suffix) else ""
            if run_id and not (directory / f"{run_id}.json").exists():
                out.append(directory / name)
    return out


def dead_experiment_files(directory: Path | None = None) -> list[Path]:
    """Status files of experiments whose runner is gone (``<run_id>.json`` with its pid): a runner killed before
    it deleted its own. An unreadable file is left alone (a runner writes by rename: never half-written); a reused
    pid keeps the file until the next sweep, the safe side."""
    directory = experiments_dir() if directory is None else Path(directory)
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            pid = json.loads(path.read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(pid, int) and pid != os.getpid() and not process_alive(pid, None):
            out.append(path)
    return out


def stray_files() -> list[dict[str, str]]:
    """Files no live run owns that `sweep` removes: side files of a gone ledger and half-written temporary
    files of dead writers (`status` and `sweep --dry-run` list them; nothing is changed here)."""
    out = [{"kind": "run-file", "path": str(p), "why": "its run's ledger is gone"} for p in orphaned_run_files()]
    out += [{"kind": "experiment-status", "path": str(p), "why": "its experiment's runner is gone"}
            for p in dead_experiment_files()]
    for directory in (ledger_dir(), history_dir(), clsact_marker_dir(), experiments_dir()):
        out += [{"kind": "temp-file", "path": str(p), "why": "half-written by a process that died before renaming it"}
                for p in sorted(orphaned_temp_files(directory))]
    return out
