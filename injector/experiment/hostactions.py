"""Host actions for translated Chaos Mesh / FIS documents: kill a host's processes (pod-kill, pod-failure,
terminate/stop/reboot an instance) and CPU stress, with H's hostfaults doing the work.

A *host* is an inventory entry. Its "pod" is every process in its network namespace (``netns`` in the
inventory): that is what a lab or a container runtime gives each service here. A host without a netns is
refused (its processes would be every process of this machine's namespace). The inventory's ``restart``
command (run in the host's netns, in its own session) brings the service back; without it the service
stays down and the output says so.

Every action here is bounded (a duration, or instant) and stops early when the runner halts or is stopped
(:func:`stop_all`, called by ``actions.stop_all_faults``): a held failure restarts at once.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from ..procfs import parent_pid

__all__ = ["kill_hosts", "stress_cpu", "stop_all", "processes_in_netns"]

_LOCK = threading.Lock()
_HELD: dict[threading.Event, threading.Event] = {}   # cancel -> done (set once its restore ran)


def _register() -> threading.Event:
    ev = threading.Event()
    with _LOCK:
        _HELD[ev] = threading.Event()
    return ev


def _unregister(ev: threading.Event) -> None:
    with _LOCK:
        done = _HELD.pop(ev, None)
    if done is not None:
        done.set()


def stop_all(wait_s: float = 15.0) -> int:
    """End every held host fault of this process now and wait (up to ``wait_s``) for their restores: the
    runner may exit right after, and a killed service must come back first. Returns how many it ended."""
    with _LOCK:
        held = list(_HELD.items())
    for cancel, _ in held:
        cancel.set()
    deadline = time.monotonic() + wait_s
    for _, done in held:
        done.wait(max(0.0, deadline - time.monotonic()))
    return len(held)


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid is not None and pid > 1:
        out.add(pid)
        pid = parent_pid(pid)
    return out


def processes_in_netns(netns: str) -> list[int]:
    """Pids whose network namespace is /run/netns/NETNS; never this process or its ancestors."""
    try:
        target = os.stat(f"/run/netns/{netns}")
    except FileNotFoundError:
        from ..errors import InvalidSpec

        raise InvalidSpec("no such network namespace", text=netns, field="netns") from None
    skip = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            st = os.stat(entry / "ns" / "net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            found.append(int(entry.name))
    return sorted(found)


def _hosts(names: list[str], inventory: str | None):
    from ..errors import InvalidSpec
    from ..spec import Inventory

    inv = Inventory.discover(inventory)
    hosts = [inv.get(n) for n in names]
    for h in hosts:
        if not h.netns:
            raise InvalidSpec(f"host {h.name} has no netns in the inventory: its 'pod' would be every process of "
                              "this machine's namespace; give it a netns", text=h.name, field="hosts")
    return hosts


def kill_hosts(hosts: list[str], action: str = "pod-kill", duration: str | None = None, grace: str = "5s",
               inventory: str | None = None) -> dict[str, Any]:
    """Kill every process in each host's netns (SIGTERM, SIGKILL after ``grace``), then restart it with the
    inventory's ``restart`` command: at once for ``pod-kill`` / ``terminate`` / ``reboot``, after ``duration``
    (mandatory) for ``pod-failure`` / ``stop``. Returns per host what was killed and whether it restarted."""
    from ..errors import InvalidSpec
    from ..hostfaults import ProcessKill
    from ..spec.units import parse_duration_s

    held = action in ("pod-failure", "stop")
    if action not in ("pod-kill", "pod-failure", "terminate", "stop", "reboot"):
        raise InvalidSpec("action must be pod-kill, pod-failure, terminate, stop or reboot", text=action,
                          field="action")
    if held and duration is None:
        raise InvalidSpec(f"{action} needs a duration: the service must come back", field="duration")
    hold_s = parse_duration_s(duration, field="duration") if held else 0.0
    grace_s = parse_duration_s(grace, field="grace", allow_zero=True)
    report: dict[str, Any] = {"action": action, "hosts": []}
    kills: list[tuple[Any, list]] = []
    chosen = [(h, processes_in_netns(h.netns)) for h in _hosts(list(hosts), inventory)]
    empty = [h.name for h, pids in chosen if not pids]
    if empty:   # a kill that kills nothing is no fault (principle 1): refuse before touching anything
        from ..errors import ChaosInjectError

        raise ChaosInjectError(f"no process in the netns of {', '.join(empty)}: nothing to kill")
    cancel = _register()
    try:
        for h, pids in chosen:
            faults = [ProcessKill(pid=p, grace_s=grace_s) for p in pids]
            for f in faults:
                try:
                    f.inject()
                except Exception:  # noqa: BLE001 - gone already (a child of one we killed): nothing to undo
                    if f.result is None:
                        continue
                    raise
            kills.append((h, faults))
            report["hosts"].append({"host": h.name, "netns": h.netns, "killed_pids": pids,
                                    "restart": h.restart})
        t0 = time.monotonic()
        if held:
            cancel.wait(hold_s)
        report["held_s"] = round(time.monotonic() - t0, 3)
    finally:
        try:
            for (h, _), entry in zip(kills, report["hosts"]):
                entry["restarted"] = _restart(h) if h.restart else False
                if not h.restart:
                    entry["note"] = f"no restart command for {h.name} in the inventory: it stays down"
        finally:
            _unregister(cancel)        # stop_all waits for this: the restores have run
    return report


def _restart(host, wait_s: float = 1.0, ready_s: float = 30.0) -> bool:
    """The inventory's restart command in the host's netns, in its own session (the service must not die
    with us): exiting 0 is a restart, a non-zero exit an error. Still running after ``wait_s``: for a host
    with ports, a restart once its first port accepts a connection (the command may be one that starts the
    service and exits when it serves, as the lab's `lab restart` does), an error if neither that nor an exit
    happens within ``ready_s``; for a host without ports, it is taken as the service itself."""
    import subprocess
    import tempfile

    from ..hostfaults.process import RestartFailed

    argv = ["ip", "netns", "exec", host.netns, "/bin/sh", "-c", host.restart]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            if not host.ports:
                return True
            deadline = time.monotonic() + ready_s
            while (code := proc.poll()) is None:
                if _accepts(host):
                    return True
                if time.monotonic() > deadline:
                    raise RestartFailed(f"restart of {host.name} ({host.restart!r}) still running after "
                                        f"{wait_s + ready_s:g} s and nothing accepts on "
                                        f"{host.addresses[0]}:{host.ports[0]}") from None
                time.sleep(0.05)
        errors.seek(0)
        text = errors.read().decode(errors="replace").strip()
    if code != 0:
        raise RestartFailed(f"restart of {host.name} ({host.restart!r}) exited {code}: {text}")
    return True


def _accepts(host) -> bool:
    """A TCP connect from inside the host's netns to its first address and port succeeds."""
    import socket

    from ..kernel.netns import socket_in

    address = host.addresses[0]
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket_in(host.netns, family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect((str(address), host.ports[0]))
            return True
        except OSError:
            return False


def stress_cpu(workers: int, load: float = 100, duration: str = "60s", hosts: list[str] | None = None
               ) -> dict[str, Any]:
    """``workers`` CPU workers at ``load`` % of one CPU, per selected host (Chaos Mesh: per pod), for
    ``duration``. The hosts share this machine's CPUs."""
    from ..hostfaults import CpuStress
    from ..spec.units import parse_duration_s

    n = max(1, len(hosts or []))
    cancel = _register()
    stress = CpuStress(int(workers) * n, float(load), parse_duration_s(duration, field="duration"))
    try:
        with stress:
            while not cancel.is_set():
                try:
                    stress.wait(timeout=0.1)     # samples the workers' CPU time as it goes
                    break
                except TimeoutError:
                    continue
    finally:
        _unregister(cancel)
    r = stress.result
    return {"workers": r.workers, "hosts": list(hosts or []), "load_percent": r.load_percent,
            "elapsed_s": round(r.elapsed_s, 3), "achieved_percent": round(r.achieved_percent, 1),
            "waited_percent": None if r.waited_percent is None else round(r.waited_percent, 1)}
