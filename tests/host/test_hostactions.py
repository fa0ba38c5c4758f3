"""kill_hosts (translated PodChaos / FIS terminate) on a throwaway namespace: the processes in the host's
netns are killed, never the runner; the inventory's restart command brings the service back in that netns;
pod-failure holds it down for its duration; a halt (stop_all) ends the hold at once."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from chaosinject.experiment import hostactions
from chaosinject.experiment.hostactions import kill_hosts, processes_in_netns

from .conftest import cmdlines_in, sleeper_in


@pytest.fixture
def host(pair, tmp_path, monkeypatch):
    """The server namespace as inventory host 'svc' with a restart command (another sleep, marked)."""
    inv = tmp_path / "inv.toml"
    inv.write_text(f'[hosts.svc]\naddresses = ["{pair.server.ipv4.ip}"]\nnetns = "{pair.server_ns}"\n'
                   'labels = {app = "svc"}\nrestart = "exec sleep 299"\n'
                   f'[hosts.bare]\naddresses = ["{pair.client.ipv4.ip}"]\nnetns = "{pair.client_ns}"\n')
    monkeypatch.setenv("CHAOS_INJECT_INVENTORY", str(inv))
    yield pair
    for ns in (pair.server_ns, pair.client_ns):      # what we (or our restart command) started there
        for pid in processes_in_netns(ns):
            os.kill(pid, signal.SIGKILL)


def test_pod_kill_kills_the_netns_processes_and_restarts(host):
    svc = sleeper_in(host.server_ns)
    out = kill_hosts(["svc"], "pod-kill")
    svc.wait(5)
    (entry,) = out["hosts"]
    assert svc.pid in entry["killed_pids"] and entry["restarted"] is True
    assert os.getpid() not in entry["killed_pids"]
    assert cmdlines_in(host.server_ns) == ["sleep 299"]          # the restart, in the host's netns


def test_pod_failure_holds_then_halt_ends_it(host):
    svc = sleeper_in(host.client_ns)

    def halt():     # the runner's halt, once the hold has begun (the kill happened): never before it, however slow
        svc.wait(30)
        time.sleep(0.2)
        hostactions.stop_all()

    threading.Thread(target=halt, daemon=True).start()
    t = time.monotonic()
    out = kill_hosts(["bare"], "pod-failure", duration="30s")
    assert time.monotonic() - t < 10 and out["held_s"] < 5      # far below the 30 s hold
    svc.wait(5)
    (entry,) = out["hosts"]
    assert entry["restarted"] is False and "stays down" in entry["note"]
    assert processes_in_netns(host.client_ns) == []


def test_kill_of_an_empty_netns_is_refused(host):
    from chaosinject.errors import ChaosInjectError

    with pytest.raises(ChaosInjectError, match="no process in the netns of bare"):
        kill_hosts(["bare"], "pod-kill")


def test_pod_failure_needs_a_duration(host):
    from chaosinject.errors import InvalidSpec

    with pytest.raises(InvalidSpec, match="duration"):
        kill_hosts(["svc"], "pod-failure")


def test_stress_cpu_runs_its_workers_for_the_duration():
    out = hostactions.stress_cpu(1, 50, "1s", hosts=["a", "b"])
    # 2 shared cores: other test runs may take CPU from the workers (they wait: measured), never give them more
    # than asked; 1 s includes the workers' start, hence the wider margin below
    assert out["workers"] == 2 and 0.9 <= out["elapsed_s"] <= 3
    assert 35 - out["waited_percent"] <= out["achieved_percent"] <= 60, out


LISTEN = "import socket, time; s = socket.socket(); s.bind(('{ip}', 7411)); s.listen(); time.sleep(300)"


def test_restart_still_running_waits_for_the_hosts_port(host):
    """A restart command that starts the service and keeps running (or is slow to exit) is a restart once the
    host's port accepts, not after a fixed 1 s; one that never gets there is an error after ready_s."""
    import dataclasses
    import sys

    from chaosinject.hostfaults.process import RestartFailed
    from chaosinject.spec import Inventory

    svc = Inventory.discover().get("svc")
    slow = dataclasses.replace(svc, ports=(7411,), restart=f"sleep 1.5; exec {sys.executable} -c "
                               f"\"{LISTEN.format(ip=host.server.ipv4.ip)}\"")
    t = time.monotonic()
    assert hostactions._restart(slow) is True
    assert 1.5 <= time.monotonic() - t < 10
    assert any("socket" in c for c in cmdlines_in(host.server_ns))
    never = dataclasses.replace(svc, ports=(7412,), restart="exec sleep 299")
    t = time.monotonic()
    with pytest.raises(RestartFailed, match="nothing accepts on .*:7412"):
        hostactions._restart(never, ready_s=0.5)
    assert time.monotonic() - t < 5


def test_the_rollback_without_a_run_id_ends_a_held_host_fault_too(host):
    """stop_network_fault() (a rollback's call) stops everything this process started, as stop_all_faults:
    a pod-failure held by a background action comes back; naming a run id stops only that run."""
    from chaosinject.experiment.actions import stop_network_fault

    svc = sleeper_in(host.server_ns)
    out: dict = {}
    action = threading.Thread(target=lambda: out.update(kill_hosts(["svc"], "pod-failure", duration="30s")),
                              daemon=True)
    action.start()
    svc.wait(30)                                   # the hold has begun
    time.sleep(0.2)
    assert stop_network_fault("no-such-run")["stopped"][0]["state"].startswith("unknown")
    assert action.is_alive(), "a rollback naming another run ended the host fault"
    t = time.monotonic()
    rolled_back = stop_network_fault()
    assert rolled_back["host_faults_ended"] == 1 and time.monotonic() - t < 10
    action.join(10)
    assert not action.is_alive() and out["held_s"] < 10           # far below the 30 s hold
    (entry,) = out["hosts"]
    assert entry["restarted"] is True and cmdlines_in(host.server_ns) == ["sleep 299"]
    assert stop_network_fault()["host_faults_ended"] == 0          # a second rollback: nothing left, no error
