"""The lab's service processes (api, PostgreSQL, Prometheus, load generator): started in their namespaces and
recorded in state.json first (with their start time, so a reused PID is never killed), waited for until they
serve, stopped with their process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .. import crashpoints
from ..httpclient import PrometheusError, get_ok
from ..procfs import process_alive, process_start_ticks
from . import definition as labdef
from .state import LabError, LabSpec, StateFile, lab_info, recorded_alive

_children: dict[int, subprocess.Popen] = {}  # started by this process: reaped by lab_down in the same process
TAG_ENV = "CHAOS_INJECT_LAB_TAG"


def spawn(state: StateFile, spec: LabSpec, role: str, argv: list[str], *, stop_signal: int = signal.SIGTERM) -> int:
    """Start ``argv`` in ``role``'s namespace, its own process group, logging to logs/ROLE.log; recorded in
    ``state`` before it starts (with a tag in its environment), its PID and start time right after."""
    logs = spec.state_dir / "logs"
    logs.mkdir(exist_ok=True)
    # write-ahead: the entry (with a tag the process carries in its environment) exists before the process, so a
    # `lab up` killed between fork and recording the PID still leaves a process `lab down` can find
    tag = f"{spec.prefix}-{role}-{os.urandom(6).hex()}"
    entry = {"kind": "process", "role": role, "tag": tag, "pid": None, "starttime": None, "signal": int(stop_signal)}
    state.add(entry)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", TAG_ENV: tag}   # sys.executable finds the installed chaosinject
    with open(logs / f"{role}.log", "ab") as log, crashpoints.step("start lab process"):
        proc = subprocess.Popen(["ip", "netns", "exec", spec.netns(role), *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=spec.state_dir, env=env,
                                start_new_session=True)  # its own process group: down ends its children too
    _children[proc.pid] = proc
    start = None
    for _ in range(100):  # /proc entry appears with the fork; the start time never changes after
        start = process_start_ticks(proc.pid)
        if start is not None or proc.poll() is not None:
            break
        time.sleep(0.001)
    entry.update(pid=proc.pid, starttime=start)
    state.save()
    return proc.pid


def tagged_processes(tag: str) -> list[dict]:
    """Processes whose environment carries ``tag`` (for an entry recorded before its PID was)."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            environ = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            start = process_start_ticks(int(d.name))
            if start is not None and process_alive(int(d.name), start):
                found.append({"pid": int(d.name), "starttime": start})
    return found


def log_tail(spec: LabSpec, role: str, lines: int = 15) -> str:
    try:
        return "\n".join((spec.state_dir / "logs" / f"{role}.log").read_text().splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def wait_ready(spec: LabSpec, role: str, pid: int, check, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        proc = _children.get(pid)
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{role} exited with status {proc.returncode} while starting:\n{log_tail(spec, role)}")
        try:
            if check():
                return
        except (OSError, PrometheusError) as exc:
            last = exc
        time.sleep(0.05)
    raise LabError(f"{role} not ready after {timeout_s:g} s ({last}):\n{log_tail(spec, role)}")


def tcp_open(address: str, port: int) -> bool:
    with socket.create_connection((address, port), timeout=0.5):
        return True


def start_service(state: StateFile, spec: LabSpec, role: str, *, wait: bool = True) -> int:
    """Start one role's service in its namespace (recorded in state.json first) from the configs under the
    state directory; with ``wait``, return once it serves. `lab up` and `lab restart` both start them here."""
    d = labdef.load_definition()
    addrs = labdef.netns_addresses(spec.subnet, d)
    conf = spec.state_dir / "conf"
    if role == "db":
        argv = labdef.service_argv("db", addrs, conf_dir=conf / "db", data_dir=spec.state_dir / "db", definition=d)
        pid = spawn(state, spec, "db", ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                                         "--", *argv], stop_signal=getattr(signal, labdef.STOP_SIGNAL["db"]))
    elif role == "prometheus":
        pid = spawn(state, spec, role, labdef.service_argv(
            role, addrs, conf_dir=conf / role, data_dir=spec.state_dir / "prometheus-data", definition=d))
    else:
        pid = spawn(state, spec, role, labdef.service_argv(role, addrs, conf_dir=conf / role, data_dir=conf,
                                                            python=sys.executable, definition=d))
    if wait:
        wait_ready(spec, role, pid, serves(spec, role))
    return pid


def serves(spec: LabSpec, role: str):
    """A check that ``role``'s service is ready (db: accepts TCP, api: /health 200, Prometheus: /-/ready,
    load: its request log exists)."""
    info = lab_info(spec, {})
    if role == "db":
        return lambda: tcp_open(info.addresses["db"], info.ports["db"][0])
    if role == "api":
        return lambda: get_ok(f"{info.api_url}/health")
    if role == "prometheus":
        return lambda: get_ok(f"{info.prometheus_url}/-/ready")
    return lambda: Path(info.request_log).exists()

def stop_process(entry: dict, timeout_s: float = 10.0) -> None:
    if entry.get("pid") is None:  # recorded, then `lab up` died before the PID was: find it by its tag
        for found in tagged_processes(entry.get("tag", "")):
            stop_process({**entry, **found}, timeout_s)
        return
    pid = entry["pid"]
    if entry.get("starttime") is None or not recorded_alive(entry):
        reap(pid)
        return  # gone already (or a different process now has the PID: never ours to kill)
    os.kill(pid, entry.get("signal", signal.SIGTERM))
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and recorded_alive(entry):
        reap(pid)
        time.sleep(0.02)
    if recorded_alive(entry):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    # whatever is left in its process group (e.g. PostgreSQL backends, worker threads' children) ends with it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while time.monotonic() < end and recorded_alive(entry):
        reap(pid)
        time.sleep(0.02)
    reap(pid)


def reap(pid: int) -> None:
    proc = _children.pop(pid, None)
    if proc is not None:
        if proc.poll() is None:
            _children[pid] = proc  # still running: keep it for the next look
