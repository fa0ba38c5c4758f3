"""kill_process: stop a systemd unit (and start it again), or terminate processes by pid or name (SIGTERM, then
SIGKILL after a grace period) and run a restart command when the fault ends.

Safety: a process is identified by pid *and* its start time (/proc/PID/stat field 22), so a pid reused while we
wait is never signalled; PID 1 and this process are refused; a name must match exactly one process unless
``mode`` says otherwise.
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .. import crashpoints
from ..errors import ChaosInjectError, InvalidSpec, Unsupported
from ..kernel.ledger import process_alive, process_start_ticks
from ..procfs import RESTART_MARKER_ENV, restarted_by  # noqa: F401  (callers import them from here)

log = logging.getLogger(__name__)
MODES = ("single", "one", "all")   # single: the name must match exactly one process; one: a seeded pick; all


class KillFailed(ChaosInjectError, RuntimeError):
    """The target could not be stopped (it survived SIGKILL, or systemctl failed)."""


class RestartFailed(ChaosInjectError, RuntimeError):
    """The restart command (or `systemctl start`) failed: the service may be down. Its output is in the message."""


def systemd_is_init() -> bool:
    """systemctl can only stop/start units when systemd is PID 1 (not in most containers)."""
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd" and Path("/run/systemd/system").is_dir()
    except OSError:
        return False


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _argv0(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return os.path.basename(raw.split(b"\0", 1)[0].decode(errors="replace")) if raw else None


def find_processes(name: str) -> list[int]:
    """Pids whose command name (comm, 15 chars) or argv[0] basename is exactly ``name``; not this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in (1, os.getpid()):
            continue
        if _comm(pid) == name[:15] or _argv0(pid) == name:
            found.append(pid)
    return sorted(found)


@dataclass
class KillResult:
    target: str
    pids: tuple[int, ...] = ()
    signals: dict[int, str] = field(default_factory=dict)   # pid -> last signal it needed (SIGTERM / SIGKILL)
    unit: str | None = None
    stopped_s: float = 0.0                                 # time to stop
    restarted: bool = False
    restart_pid: int | None = None       # the restart command still running after restart_wait_s: the new service
    restart_returncode: int | None = None


class ProcessKill:
    """Stop ``service_name`` (a systemd unit), or processes by ``pid`` / ``name``; ``restore()`` brings them back.

    ``restart_command`` (a shell string or an argv list) runs at restore for pid/name targets; it is started in
    its own session and watched for ``restart_wait_s``: exiting non-zero is an error, exiting 0 is a success
    (e.g. ``systemctl start x``), still running means it is the restarted service (``restart_pid``).
    """

    def __init__(self, service_name: str | None = None, *, pid: int | None = None, name: str | None = None,
                 restart_command: str | Sequence[str] | None = None, grace_s: float = 5.0, mode: str = "single",
                 seed: int | None = None, restart_wait_s: float = 1.0,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                 systemd: bool | None = None):
        given = [x is not None for x in (service_name, pid, name)]
        if sum(given) != 1:
            raise InvalidSpec("name exactly one target: a systemd unit (service_name), pid= or name=",
                              field="kill_process")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1):
            raise InvalidSpec("pid must be an integer > 1", text=repr(pid), field="pid")
        if pid == os.getpid():
            raise InvalidSpec("refusing to kill the injector itself", text=str(pid), field="pid")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise InvalidSpec("name is a command name (no '/'), e.g. 'nginx'", text=repr(name), field="name")
        if service_name is not None and (not isinstance(service_name, str) or not service_name.strip()):
            raise InvalidSpec("service_name must be a systemd unit name", text=repr(service_name),
                              field="service_name")
        if mode not in MODES:
            raise InvalidSpec(f"mode must be one of {', '.join(MODES)}", text=mode, field="mode")
        if not (isinstance(grace_s, (int, float)) and 0 <= grace_s <= 600):
            raise InvalidSpec("grace_s must be between 0 and 600 seconds", text=repr(grace_s), field="grace_s")
        if restart_command is not None and service_name is not None:
            raise InvalidSpec("a systemd unit is restarted with `systemctl start`; restart_command is for "
                              "pid/name targets", field="restart_command")
        if isinstance(restart_command, str) and not restart_command.strip():
            raise InvalidSpec("restart_command is empty", field="restart_command")
        self.service_name, self.pid, self.name = service_name, pid, name
        self.restart_command = restart_command
        self.grace_s, self.mode, self.seed, self.restart_wait_s = grace_s, mode, seed, restart_wait_s
        self._run = run
        self._systemd = systemd
        self.result: KillResult | None = None
        self._restored = False
        self._restore_lock = threading.Lock()   # a duration timer and the block's end may restore at once
        self._chosen: list[int] | None = None
        # added to the restart command's environment: a run marks what it restarted (RESTART_MARKER_ENV), so
        # `sweep` does not start it a second time after a crash between the restart and the ledger's update
        self.restart_env: dict[str, str] = {}

    @property
    def target(self) -> str:
        if self.service_name:
            return f"unit {self.service_name}"
        return f"pid {self.pid}" if self.pid is not None else f"process {self.name!r}"

    # -- inject ------------------------------------------------------------------------------------------
    def inject(self) -> KillResult:
        if self.result is not None:
            raise ChaosInjectError(f"{self.target} was already stopped by this fault")
        if self.service_name:
            return self._stop_unit()
        pids = self.choose_targets()
        result = KillResult(self.target, pids=tuple(pids))
        self.result = result
        started = time.monotonic()
        identities = {pid: process_start_ticks(pid) for pid in pids}
        for pid in pids:
            self._signal(pid, identities[pid], signal.SIGTERM, result)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and any(process_alive(p, identities[p]) for p in pids):
            time.sleep(0.005)
        for pid in pids:
            if process_alive(pid, identities[pid]):
                self._signal(pid, identities[pid], signal.SIGKILL, result)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(process_alive(p, identities[p]) for p in pids):
            time.sleep(0.005)
        survivors = [p for p in pids if process_alive(p, identities[p])]
        result.stopped_s = time.monotonic() - started
        if survivors:
            raise KillFailed(f"pid(s) {survivors} survived SIGKILL (uninterruptible sleep?)")
        log.info("stopped %s (%s) in %.2fs", self.target, result.signals, result.stopped_s)
        return result

    def choose_targets(self) -> list[int]:
        """The pids inject() will signal, chosen once (later calls return the same ones, whatever starts
        meanwhile): a caller can record them before anything is sent. Empty for a systemd unit."""
        if self._chosen is None:
            self._chosen = [] if self.service_name else self._find_targets()
        return list(self._chosen)

    def _find_targets(self) -> list[int]:
        if self.pid is not None:
            if process_start_ticks(self.pid) is None:
                raise ChaosInjectError(f"no process with pid {self.pid}")
            return [self.pid]
        pids = find_processes(self.name)
        if not pids:
            raise ChaosInjectError(f"no process named {self.name!r}")
        if self.mode == "single" and len(pids) > 1:
            raise InvalidSpec(f"{len(pids)} processes are named {self.name!r} (pids {pids}); pass pid=, or "
                              "mode='one' (a seeded pick) or mode='all'", text=self.name, field="name")
        if self.mode == "one":
            return [random.Random(self.seed).choice(pids)]
        return pids

    @staticmethod
    def _signal(pid: int, ticks: int | None, signum: int, result: KillResult) -> None:
        if not process_alive(pid, ticks):  # gone, or the pid now belongs to another process: leave it
            return
        try:
            with crashpoints.step(f"send {signal.Signals(signum).name}"):
                os.kill(pid, signum)
            result.signals[pid] = signal.Signals(signum).name
        except ProcessLookupError:
            pass

    def _systemctl(self, verb: str) -> None:
        try:
            with crashpoints.step(f"systemctl {verb}"):
                done = self._run(["systemctl", verb, self.service_name], capture_output=True, text=True,
                                 timeout=90)
        except FileNotFoundError:
            raise Unsupported("systemctl is not installed") from None
        if done.returncode != 0:
            error = RestartFailed if verb == "start" else KillFailed
            raise error(f"systemctl {verb} {self.service_name} failed ({done.returncode}): "
                        f"{(done.stderr or done.stdout or '').strip()}")

    def _stop_unit(self) -> KillResult:
        systemd = systemd_is_init() if self._systemd is None else self._systemd
        if not systemd:
            init = _comm(1) or "unknown"
            raise Unsupported(f"cannot stop unit {self.service_name}: systemd is not PID 1 here (PID 1 is "
                              f"{init!r}); stop the process by pid= or name= with a restart_command instead")
        started = time.monotonic()
        self._systemctl("stop")
        self.result = KillResult(self.target, unit=self.service_name, stopped_s=time.monotonic() - started)
        return self.result

    # -- restore -----------------------------------------------------------------------------------------
    def restore(self) -> KillResult | None:
        """Bring back what inject() stopped, once: idempotent and thread-safe (a second caller waits for the
        first one's restart and returns its result). Nothing to do if inject() did not stop anything."""
        with self._restore_lock:
            if self.result is None or self._restored:
                return self.result
            self._restored = True
            return self._restart()

    def _restart(self) -> KillResult:
        if self.service_name:
            self._systemctl("start")
            self.result.restarted = True
            return self.result
        if self.restart_command is None:
            log.warning("%s was killed and no restart_command was given: it stays down", self.target)
            return self.result
        argv = ["/bin/sh", "-c", self.restart_command] if isinstance(self.restart_command, str) \
            else list(self.restart_command)
        env = {**os.environ, **self.restart_env} if self.restart_env else None
        with tempfile.TemporaryFile() as errors:
            with crashpoints.step("start restart command"):
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                        start_new_session=True, env=env)  # the service must not die with us
            try:
                code = proc.wait(timeout=self.restart_wait_s)
            except subprocess.TimeoutExpired:
                self.result.restarted, self.result.restart_pid = True, proc.pid
                return self.result
            errors.seek(0)
            text = errors.read().decode(errors="replace").strip()
        self.result.restart_returncode = code
        if code != 0:
            raise RestartFailed(f"restart command {shlex.join(argv)} exited {code}: {text}")
        self.result.restarted = True
        return self.result

    def __enter__(self) -> KillResult:
        return self.inject()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.restore()
            return
        try:
            self.restore()
        except Exception as failure:  # noqa: BLE001 - the block's exception wins; say the restart failed too
            log.error("%s: restart after %r failed: %s", self.target, exc, failure)
