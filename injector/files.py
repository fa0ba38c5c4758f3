"""Atomic JSON files: a reader (another process, a crash-time sweep) sees the old file or the new one, whole.

The one writer of JSON state and run files: ledgers and markers (kernel/, the fleet controller's ledger), the
lab's state, an experiment's status and journal, a run directory's meta.json, counters.json and verdict.json.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable

from .procfs import process_alive


def run_root() -> Path:
    """This host's run state: $CHAOS_INJECT_RUN_DIR, else /run/chaos-inject (ledgers, markers, history)."""
    return Path(os.environ.get("CHAOS_INJECT_RUN_DIR", "/run/chaos-inject"))


def ledger_dir() -> Path:
    """Where run ledgers live (kernel/ledger.py's, and the fleet controller's of kind ``fleet``)."""
    return run_root() / "runs"


def ledger_files() -> list[Path]:
    """Every ledger file in ``ledger_dir()``, sorted (the runs' ``.status.json`` files beside them left out);
    none when the directory does not exist."""
    directory = ledger_dir()
    if not directory.is_dir():
        return []
    return [p for p in sorted(directory.glob("*.json")) if not p.name.endswith(".status.json")]


def experiments_dir() -> Path:
    """Where running experiments publish their status (``<run_id>.json``, with the runner's pid)."""
    return run_root() / "experiments"


def jsonable(v: Any) -> Any:
    """``v`` as JSON can hold it: mappings with string keys, tuples as lists, numpy arrays and scalars (anything
    with ``tolist``) as lists and numbers, NaN as null, anything else unknown as its str. The one conversion of
    the run and journal files (no numpy import: it is read from the values)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float):
        return None if v != v else v
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if hasattr(v, "tolist"):          # numpy ndarray or scalar: Python lists and numbers, NaN cleaned above
        return jsonable(v.tolist())
    return str(v)


def write_json_atomic(path: Path, data: Any, *, dir_mode: int = 0o700, sort_keys: bool = True,
                      default: Callable[[Any], Any] | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A missing directory is made with ``dir_mode`` (private by default: run state is root's). ``sort_keys=False``
    keeps the mapping's order (journals, reports); ``default`` is json's hook for objects it cannot encode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    # per process and thread: two writers never share a temporary file (TEMP_NAME: sweep finds a dead one's)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=sort_keys, default=default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


TEMP_NAME = re.compile(r"\.tmp(\d+)-\d+$")     # write_json_atomic's temporary file: <name>.tmp<pid>-<thread>


def orphaned_temp_files(directory: Path) -> list[Path]:
    """Temporary files of write_json_atomic in ``directory`` whose writer is gone: a process killed between the
    write and the rename leaves one. A live writer's (its pid runs) is never listed; a reused pid keeps a file
    until the next sweep, the safe side."""
    return entries_of_dead_pids(directory, TEMP_NAME)


def entries_of_dead_pids(directory: str | Path, pattern: re.Pattern[str]) -> list[Path]:
    """The entries of ``directory`` whose name ``pattern`` finds (``search``) with a pid as its first group, and
    whose process is gone (this process counts as alive). None when the directory cannot be read."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in names:
        m = pattern.search(name)
        if m and int(m.group(1)) != os.getpid() and not process_alive(int(m.group(1)), None):
            out.append(Path(directory) / name)
    return out
