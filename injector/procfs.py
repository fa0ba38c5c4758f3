"""Process identity from /proc: a pid plus its start time names one process, even after the pid is reused.

Used by the run ledgers (a run's owner), process faults (the processes to signal) and the lab (its services).
"""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; the command name before it may hold spaces and parentheses."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time, clock ticks since boot); None when there is no such process."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def parent_pid(pid: int) -> int | None:
    """Field 4 of /proc/PID/stat; None when there is no such process."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def process_alive(pid: int, start_ticks: int | None) -> bool:
    """The process runs (a zombie has finished) and, when ``start_ticks`` is given, is still the same one."""
    fields = _stat_fields(pid)  # one read: state and start time of the same process
    if fields is None or fields[0] == "Z":
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


RESTART_MARKER_ENV = "CHAOS_INJECT_RESTARTED_BY"   # value: the run id whose restart command started the process


def restarted_by(run_id: str) -> list[int]:
    """Live processes whose environment carries ``RESTART_MARKER_ENV=run_id``: what that run's restart command
    started (kill-process), and their children, unless they cleared their environment."""
    marker = f"{RESTART_MARKER_ENV}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and process_alive(int(entry.name), None):
            found.append(int(entry.name))
    return found
