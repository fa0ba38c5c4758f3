"""chaosinject.procfs (process identity) and chaosinject.files (atomic JSON): what the ledger and the lab rely on."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from chaosinject.files import write_json_atomic
from chaosinject.procfs import parent_pid, process_alive, process_start_ticks


def test_a_running_process_is_alive_only_under_its_own_start_time():
    me = os.getpid()
    ticks = process_start_ticks(me)
    assert ticks is not None and ticks > 0
    assert process_alive(me, ticks) and process_alive(me, None)
    assert not process_alive(me, ticks + 1)  # the pid, reused by another process, is not ours


def test_no_such_process():
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no pid can be this
    assert process_start_ticks(beyond) is None and parent_pid(beyond) is None
    assert not process_alive(beyond, None)


def test_a_zombie_has_finished():
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        assert process_start_ticks(child.pid) is not None  # still listed until reaped
        assert not process_alive(child.pid, None)
    finally:
        child.wait()


def test_a_command_name_with_parentheses_and_spaces_is_parsed(tmp_path):
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")  # the kernel names the process after the path it executed
    child = subprocess.Popen([str(odd), "5"])
    try:
        deadline = time.monotonic() + 10
        while "a) b (c" not in Path(f"/proc/{child.pid}/comm").read_text():
            assert time.monotonic() < deadline, "the child did not exec"
            time.sleep(0.01)
        ticks = process_start_ticks(child.pid)
        assert ticks is not None and process_alive(child.pid, ticks)
        assert ticks >= process_start_ticks(os.getpid())  # started after us
        assert parent_pid(child.pid) == os.getpid()  # the fields after the odd name are read right
    finally:
        child.kill()
        child.wait()


def test_write_json_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "new" / "state.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert (path.parent.stat().st_mode & 0o777) == 0o700 & ~umask  # run state is root's
    write_json_atomic(path, {"c": 3})
    assert json.loads(path.read_text()) == {"c": 3}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
    other = tmp_path / "shared" / "x.json"
    write_json_atomic(other, {}, dir_mode=0o755)
    assert (other.parent.stat().st_mode & 0o777) == 0o755 & ~umask
