"""kill_process on processes this test started (matched by pid or by a unique argv[0]); the systemd path through a
fake systemctl; input validation. No root needed: we only signal our own children."""

import os
import secrets
import subprocess
import sys
import time

import pytest

from chaosinject.errors import InvalidSpec, Unsupported
from chaosinject.hostfaults import CpuStress, ProcessKill, find_processes
from chaosinject.hostfaults.process import KillFailed, RestartFailed

TRAPS_TERM = "trap '' TERM; while :; do sleep 0.05; done"


@pytest.fixture
def victims():
    """Processes started here; whatever is still running at the end is killed by its pid."""
    procs: list[subprocess.Popen] = []

    def start(argv, **kw):
        proc = subprocess.Popen(argv, **kw)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def unique_name() -> str:
    return f"ci-victim-{secrets.token_hex(3)}"


def started(name: str, timeout=5.0) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = find_processes(name)
        if pids:
            return pids
        time.sleep(0.02)
    raise AssertionError(f"{name} did not start")


def test_kill_by_pid_sigterm(victims):
    proc = victims(["sleep", "60"])
    fault = ProcessKill(pid=proc.pid, grace_s=2)
    result = fault.inject()
    assert proc.wait(timeout=2) == -15
    assert result.signals == {proc.pid: "SIGTERM"}
    assert fault.restore() is result and not result.restarted  # no restart command: stays down


def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(victims):
    proc = victims(["bash", "-c", TRAPS_TERM])
    time.sleep(0.2)  # let bash install its trap
    t0 = time.monotonic()
    result = ProcessKill(pid=proc.pid, grace_s=0.5).inject()
    assert proc.wait(timeout=2) == -9
    assert result.signals == {proc.pid: "SIGKILL"} and 0.5 <= time.monotonic() - t0 < 3


def test_kill_by_name_and_restart_command_brings_it_back(victims, tmp_path):
    name = unique_name()
    victims(["bash", "-c", f"exec -a {name} sleep 60"])
    (pid,) = started(name)
    marker = tmp_path / "restarted"
    restart = ["bash", "-c", f"touch {marker}; exec -a {name} sleep 60"]  # argv form (dash has no exec -a)
    with ProcessKill(name=name, restart_command=restart, grace_s=2) as result:
        assert result.pids == (pid,)
        assert find_processes(name) == []
    assert marker.exists() and result.restarted and result.restart_pid
    (new_pid,) = started(name)
    assert new_pid == result.restart_pid != pid
    os.kill(new_pid, 9)
    os.waitpid(new_pid, 0)


def test_restart_runs_even_when_the_block_raises(victims, tmp_path):
    proc = victims(["sleep", "60"])
    marker = tmp_path / "restarted"
    with pytest.raises(ZeroDivisionError):
        with ProcessKill(pid=proc.pid, restart_command=["touch", str(marker)]):
            1 / 0
    assert marker.exists()


def test_a_failing_restart_command_is_an_error_with_its_output(victims):
    proc = victims(["sleep", "60"])
    fault = ProcessKill(pid=proc.pid, restart_command="echo no such service >&2; exit 3")
    fault.inject()
    with pytest.raises(RestartFailed, match="exited 3: no such service"):
        fault.restore()


def test_a_name_matching_several_processes_is_refused_unless_asked(victims):
    name = unique_name()
    for _ in range(2):
        victims(["bash", "-c", f"exec -a {name} sleep 60"])
    end = time.monotonic() + 5
    while len(find_processes(name)) < 2 and time.monotonic() < end:
        time.sleep(0.02)
    with pytest.raises(InvalidSpec, match="2 processes are named"):
        ProcessKill(name=name).inject()
    assert len(find_processes(name)) == 2, "nothing was killed"
    one = ProcessKill(name=name, mode="one", seed=1).inject()
    assert len(one.pids) == 1 and len(find_processes(name)) == 1
    ProcessKill(name=name, mode="all").inject()
    assert find_processes(name) == []


@pytest.mark.parametrize("kwargs,match", [
    ({}, "exactly one target"),
    ({"pid": 1}, "pid must be an integer > 1"),
    ({"pid": os.getpid()}, "the injector itself"),
    ({"pid": 123, "name": "x"}, "exactly one target"),
    ({"name": "/usr/bin/x"}, "command name"),
    ({"name": "x", "mode": "some"}, "mode must be one of"),
    ({"name": "x", "grace_s": -1}, "grace_s"),
    ({"service_name": "x.service", "restart_command": "true"}, "systemctl start"),
])
def test_bad_targets_are_refused(kwargs, match):
    with pytest.raises(InvalidSpec, match=match):
        ProcessKill(**kwargs)


def test_unknown_targets_are_errors():
    with pytest.raises(Exception, match="no process named"):
        ProcessKill(name=unique_name()).inject()


def test_systemd_unit_stop_then_start_through_systemctl():
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    with ProcessKill("api.service", run=run, systemd=True) as result:
        assert calls == [["systemctl", "stop", "api.service"]]
    assert calls[-1] == ["systemctl", "start", "api.service"] and result.restarted


def test_systemctl_failure_is_reported():
    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, 5, "", "Unit nope.service not loaded.")

    with pytest.raises(KillFailed, match="not loaded"):
        ProcessKill("nope.service", run=run, systemd=True).inject()


def test_without_systemd_as_init_a_unit_is_a_clear_error():
    with pytest.raises(Unsupported, match="systemd is not PID 1"):
        ProcessKill("api.service", systemd=False).inject()


@pytest.mark.parametrize("kwargs,match", [
    ({"workers": 0, "duration_s": 1}, "workers"), ({"load_percent": 0, "duration_s": 1}, "load"),
    ({"load_percent": 150, "duration_s": 1}, "load"), ({}, "needs a duration"),
    ({"duration_s": -1}, "duration"),
])
def test_cpu_stress_bad_input(kwargs, match):
    with pytest.raises(InvalidSpec, match=match):
        CpuStress(**kwargs)


def test_cpu_workers_end_at_their_deadline_by_themselves():
    stress = CpuStress(2, 20, 0.5).start()
    result = stress.wait(timeout=5)
    assert not stress.running and result.elapsed_s == pytest.approx(0.5, abs=0.3)


def test_cpu_workers_end_when_their_parent_dies():
    # a parent that starts a long stress and is SIGKILLed: its workers notice within one period
    code = ("import sys, time; sys.path.insert(0, %r); from chaosinject.hostfaults import CpuStress; "
            "s = CpuStress(1, 10, 60).start(); print(s.pids[0], flush=True); time.sleep(60)") % os.getcwd()
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    end = time.monotonic() + 3
    while time.monotonic() < end and os.path.exists(f"/proc/{worker}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{worker}"), "orphaned stress worker kept running"


def test_library_kill_process_with_a_duration_restarts_at_the_earlier_end(victims, tmp_path):
    from chaosinject import kill_process

    proc = victims(["sleep", "60"])
    marker = tmp_path / "restarted"
    with kill_process(pid=proc.pid, restart_command=["bash", "-c", f"echo x >> {marker}"], duration="300ms"):
        assert proc.wait(timeout=2) == -15
        time.sleep(0.8)
        assert marker.read_text() == "x\n", "restarted at the duration, inside the block"
    assert marker.read_text() == "x\n", "not restarted twice"


def test_restore_is_idempotent_and_thread_safe_by_itself(victims, tmp_path):
    # two callers at once (a duration timer and the block's end): the restart command runs once, both get its result
    import threading

    proc = victims(["sleep", "60"])
    marker = tmp_path / "restarted"
    fault = ProcessKill(pid=proc.pid, restart_command=["bash", "-c", f"sleep 0.2; echo x >> {marker}"])
    fault.inject()
    results = []
    callers = [threading.Thread(target=lambda: results.append(fault.restore())) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=10)
    assert marker.read_text() == "x\n", "restarted more than once"
    assert len(results) == 4 and all(r is fault.result and r.restarted for r in results)
    assert fault.restore() is fault.result and marker.read_text() == "x\n"


def test_choose_targets_fixes_the_pids_before_the_kill(victims):
    name = unique_name()
    first = victims(["bash", "-c", f"exec -a {name} sleep 60"])
    fault = ProcessKill(name=name, mode="all", grace_s=2)
    assert started(name) == [first.pid]                             # running before the choice
    assert fault.choose_targets() == [first.pid]
    later = victims(["bash", "-c", f"exec -a {name} sleep 60"])   # starts after the choice: left alone
    started_both = time.monotonic() + 5
    while len(find_processes(name)) < 2 and time.monotonic() < started_both:
        time.sleep(0.02)
    assert fault.inject().pids == (first.pid,)
    assert first.wait(timeout=5) == -15 and later.poll() is None
    assert ProcessKill("api.service", systemd=True).choose_targets() == []


def test_library_cpu_stress_runs_and_ends_with_the_block():
    from chaosinject import cpu_stress

    with cpu_stress(workers=1, load=20, duration="10s") as stress:
        assert stress.running and len(stress.pids) == 1
        pid = stress.pids[0]
    assert not stress.running and not os.path.exists(f"/proc/{pid}/status") or \
        open(f"/proc/{pid}/status").read().find("State:\tZ") >= 0


def test_cpu_stress_workers_end_when_the_block_raises():
    from chaosinject import cpu_stress

    with pytest.raises(KeyError):
        with cpu_stress(workers=2, load=10, duration="30s") as stress:
            procs = list(stress._procs)
            raise KeyError("the caller's bug")
    assert all(p.poll() is not None for p in procs)
