"""The VM lab's ledger (kind vm-lab, written by vagrant/lib/nslibvirt.sh through chaosinject.cli.ledger_writer):
what `sweep` does with a dead owner's processes and directories, and what it never touches. No root needed: the
processes are `sleep`s of this test, the directories temporary ones; the namespace entry names one that is not there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from chaosinject.cli import ledger_writer
from chaosinject.kernel.ledger import Ledger, describe, history_dir, ledger_dir
from chaosinject.kernel.sweep import leftovers, sweep
from chaosinject.procfs import process_alive, process_start_ticks


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


@pytest.fixture
def sleeper():
    procs = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "300"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def write(*argv: str) -> int:
    return ledger_writer.run(list(argv))


def open_dead_owner(run_id: str, sleeper) -> int:
    """A ledger whose owner was alive when it was opened and is dead now (a killed lab.sh)."""
    owner = sleeper()
    assert write("open", run_id, "--owner", str(owner.pid), "--tag", "test") == 0
    owner.kill()
    owner.wait()
    return owner.pid


def test_the_writer_records_an_owner_with_its_start_time_and_entries_in_order(tmp_path, sleeper):
    owner = sleeper()
    child = sleeper()
    write("open", "vm-test-1", "--owner", str(owner.pid), "--tag", "smoke")
    write("add", "vm-test-1", "lab-dir", str(tmp_path / "work"))
    write("add", "vm-test-1", "netns", "cibox-1")
    write("add", "vm-test-1", "process", str(child.pid), "--role", "libvirtd")
    write("add", "vm-test-1", "process", str(child.pid), "--role", "libvirtd")   # twice: recorded once
    data = json.loads((ledger_dir() / "vm-test-1.json").read_text())
    assert data["pid"] == owner.pid and data["pid_start_ticks"] == process_start_ticks(owner.pid)
    assert data["meta"] == {"kind": "vm-lab", "tag": "smoke"}
    assert data["entries"] == [
        {"kind": "lab-dir", "path": str(tmp_path / "work")},
        {"kind": "netns", "name": "cibox-1", "members": "kill"},
        {"kind": "process", "pid": child.pid, "starttime": process_start_ticks(child.pid), "role": "libvirtd"}]
    assert Ledger.load(ledger_dir() / "vm-test-1.json").owner_alive
    write("close", "vm-test-1")
    assert not (ledger_dir() / "vm-test-1.json").exists()


def test_the_writer_refuses_what_is_not_a_vm_lab_ledger(sleeper):
    owner = sleeper()
    with pytest.raises(ValueError, match="VM lab run id"):
        write("open", "../x", "--owner", str(owner.pid))
    Ledger(run_id="vm-other", meta={"kind": "cli"}, pid=owner.pid).save()
    with pytest.raises(ValueError, match="not a VM lab ledger"):
        write("add", "vm-other", "lab-dir", "/tmp")
    write("open", "vm-x", "--owner", str(owner.pid))
    with pytest.raises(ValueError, match="exists already"):
        write("open", "vm-x", "--owner", str(owner.pid))


def test_a_process_that_has_ended_is_not_recorded(sleeper):
    owner = sleeper()
    write("open", "vm-t", "--owner", str(owner.pid))
    gone = subprocess.Popen(["true"])
    gone.wait()
    write("add", "vm-t", "process", str(gone.pid))
    assert Ledger.load(ledger_dir() / "vm-t.json").entries == []


def test_sweep_stops_a_dead_owners_processes_and_removes_its_directory(tmp_path, sleeper):
    work = tmp_path / "work.1-ab"
    open_dead_owner("vm-test-2", sleeper)
    write("add", "vm-test-2", "lab-dir", str(work))
    (work / "libvirt" / "var-lib" / "images").mkdir(parents=True)
    (work / "libvirt" / "var-lib" / "images" / "box.img").write_bytes(b"x" * 1024)
    write("add", "vm-test-2", "netns", "cibox-not-there-1")
    daemon = sleeper()
    write("add", "vm-test-2", "process", str(daemon.pid), "--role", "libvirtd")
    (leftover,) = leftovers()
    assert [a["action"] for a in leftover["actions"]] == [
        f"stop libvirtd pid {daemon.pid} (if it is still the process recorded)",
        "stop every process in network namespace cibox-not-there-1, remove it",
        f"remove directory {work}"]
    report = sweep()
    assert report.swept_runs == ["vm-test-2"] and not report.failures, report
    daemon.wait(timeout=10)   # our child: reaped here, stopped by sweep's SIGTERM
    assert daemon.returncode == -15
    assert not work.exists() and tmp_path.exists()
    assert not (ledger_dir() / "vm-test-2.json").exists()
    assert not list(history_dir().glob("*.json"))   # the VM lab is not a fault run: no history record
    assert sweep().swept_runs == []                 # a second sweep finds nothing


def test_sweep_never_signals_a_reused_pid(sleeper):
    open_dead_owner("vm-test-3", sleeper)
    other = sleeper()
    ledger = Ledger.load(ledger_dir() / "vm-test-3.json")
    # the recorded process had this pid but started at another time: the pid now names someone else's process
    ledger.append({"kind": "process", "pid": other.pid, "starttime": process_start_ticks(other.pid) - 1,
                   "role": "qemu"})
    report = sweep()
    assert report.swept_runs == ["vm-test-3"] and not report.failures
    time.sleep(0.2)
    assert other.poll() is None and process_alive(other.pid, process_start_ticks(other.pid))


def test_a_symlinked_directory_is_not_followed(tmp_path, sleeper):
    target = tmp_path / "operator-data"
    target.mkdir()
    (target / "keep").write_text("mine")
    link = tmp_path / "work.2-cd"
    link.symlink_to(target)
    open_dead_owner("vm-test-4", sleeper)
    write("add", "vm-test-4", "lab-dir", str(link))
    assert sweep().swept_runs == ["vm-test-4"]
    assert (target / "keep").read_text() == "mine"


def test_a_live_owners_vm_lab_is_left_alone(tmp_path, sleeper):
    owner = sleeper()
    daemon = sleeper()
    write("open", "vm-test-5", "--owner", str(owner.pid))
    write("add", "vm-test-5", "lab-dir", str(tmp_path))
    write("add", "vm-test-5", "process", str(daemon.pid), "--role", "dnsmasq")
    report = sweep()
    assert report.live_runs == ["vm-test-5"] and not report.removed
    assert daemon.poll() is None and tmp_path.exists() and leftovers() == []


def test_describe_and_the_writer_as_a_program(tmp_path, sleeper):
    assert describe({"kind": "lab-dir", "path": "/x"}) == "remove directory /x"
    assert describe({"kind": "netns", "name": "ci-probe-1-a"}) == "remove network namespace ci-probe-1-a"
    owner = sleeper()
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": os.environ["CHAOS_INJECT_RUN_DIR"]}
    ok = subprocess.run([sys.executable, "-m", "chaosinject.cli.ledger_writer", "open", "vm-p", "--owner",
                         str(owner.pid)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "chaosinject.cli.ledger_writer", "add", "vm-missing", "netns", "n"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "ledger_writer:" in bad.stderr


def test_status_and_dry_run_show_a_dead_vm_lab_and_what_sweep_would_do(tmp_path, sleeper, capsys):
    from chaosinject.cli.main import main

    open_dead_owner("vm-test-6", sleeper)
    write("add", "vm-test-6", "lab-dir", str(tmp_path / "work.6-ef"))
    write("add", "vm-test-6", "netns", "cilab-6")
    assert main(["status", "--recent", "0"]) == 0
    out = capsys.readouterr().out
    assert "vm-test-6" in out and "vm-lab  DEAD" in out and "2 objects" in out
    assert "sweep would: stop every process in network namespace cilab-6, remove it" in out
    assert main(["sweep", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"remove directory {tmp_path / 'work.6-ef'}" in out and "nothing changed" in out
    assert (ledger_dir() / "vm-test-6.json").exists()
