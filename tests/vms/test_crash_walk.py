"""The VM lab's crash points (vagrant/lib/nslibvirt.sh, shared by the smoke and the three-VM lab): the smoke killed
with SIGKILL at its steps -- before its VM boots (the namespace made, libvirtd started, the libvirt network up,
`vagrant up` has started QEMU) and in its teardown (vagrant destroy, the box volume, the storage pool, libvirtd,
then the namespace, the work directory, the ledger) -- then `chaos-inject sweep`: no namespace, no process, no work
directory (the private libvirt state: domains, networks, volumes) and no ledger of the run may be left, and a second
sweep finds nothing. The vms-smoke tier walks right after the four steps before the boot and one teardown step (the
namespace deleted, the ledger not yet: each teardown point is a whole smoke run, a VM boot and its checks);
CHAOS_INJECT_CRASH_WALK=full (`make test-vms`) walks both sides of every step (40 crash points). The time per crash
point is printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosinject.procfs import process_alive
from tests.vms.vmkit import REPO, namespaces, require_root_and_vm_tools


# the smoke's steps up to QEMU's start, in order (one dnsmasq: the management network)
STEPS = ["write ledger", "write ledger", "create work directory", "write ledger", "create netns", "write ledger",
         "start libvirtd", "write ledger", "start vagrant up", "libvirt network up", "write ledger", "QEMU started",
         "write ledger"]
# the teardown's: the inner script's (one box volume), then the outer script's trap
STEPS += ["vagrant destroy", "delete volume", "remove storage pool", "stop libvirtd", "delete netns",
          "remove work directory", "delete ledger"]
NAMED = ("create netns", "start libvirtd", "libvirt network up", "QEMU started", "delete netns")


def crash_points() -> list[tuple[int, str]]:
    if os.environ.get("CHAOS_INJECT_CRASH_WALK") == "full":
        return [(n, when) for n in range(1, len(STEPS) + 1) for when in ("before", "after")]
    return [(STEPS.index(label) + 1, "after") for label in NAMED]


def processes_of(ledger_id: str) -> list[int]:
    """Processes that carry the run's ledger name in their environment (the scripts, vagrant, libvirtd) or whose
    command line names its work directory (QEMU: its disk)."""
    marker = f"NSL_LEDGER={ledger_id}".encode()
    pid_part = ledger_id.rsplit("-", 1)[1]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (marker in env or f"vagrant-smoke/run.{pid_part}-".encode() in cmd) and process_alive(int(entry.name), None):
            found.append(int(entry.name))
    return found


def sweep(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "chaosinject.cli", "sweep", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("n,when", crash_points())
def test_the_smoke_killed_at_a_step_is_swept_clean(n, when, tmp_path):
    require_root_and_vm_tools("the smoke")
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir), "CHAOS_INJECT_CRASH_TRACE": str(trace),
           "CHAOS_INJECT_CRASH_AT": f"{n}:{when}"}
    ns_before, libvirt_before = namespaces(), Path("/run/libvirt").exists()
    t0 = time.monotonic()
    with open(tmp_path / "stderr", "w") as err:   # a file: the inner script, still running, keeps it open
        proc = subprocess.run(["nice", "-n", "19", "bash", str(REPO / "vagrant" / "smoke" / "smoke.sh")], env=env,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=1800)
    killed_after = time.monotonic() - t0
    stderr = (tmp_path / "stderr").read_text()
    if proc.returncode == 77:
        pytest.skip(stderr.strip().splitlines()[-1])
    assert proc.returncode == -9, f"exit {proc.returncode}, not killed at step {n}:\n{stderr[-3000:]}"
    traced = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]
    # killed at step n (after it: a step that writes the ledger holds that write, n + 1, too)
    assert traced == STEPS[:len(traced)] and len(traced) in (n, n + 1) and traced[n - 1] == STEPS[n - 1], traced
    ledgers = list((run_dir / "runs").glob("vm-vagrant-smoke-*.json"))
    if (n, when) == (len(STEPS), "after"):       # the ledger was the last thing to go: nothing to sweep
        assert not ledgers and not list((run_dir / "runs").glob("*")), ledgers
        assert sweep(env)["swept_runs"] == [] and not {x for x in namespaces() if x.startswith("cibox-")} - ns_before
        return
    (ledger_path,) = ledgers
    ledger = json.loads(ledger_path.read_text())
    ledger_id, owner = ledger["run_id"], ledger["pid"]
    work = [e["path"] for e in ledger["entries"] if e["kind"] == "lab-dir"]
    recorded = [(e["pid"], e["starttime"]) for e in ledger["entries"] if e["kind"] == "process"]
    report = sweep(env)
    t_sweep = time.monotonic() - t0 - killed_after
    assert report["swept_runs"] == [ledger_id] and not report["failures"], report
    time.sleep(1)
    assert f"cibox-{owner}" not in namespaces() and namespaces() <= ns_before | {n for n in namespaces()
                                                                                 if not n.startswith("cibox-")}
    assert not [p for p, ticks in recorded if process_alive(p, ticks)]
    assert processes_of(ledger_id) == []
    assert not any(Path(w).exists() for w in work) and not list((run_dir / "runs").glob("*.json"))
    assert Path("/run/libvirt").exists() == libvirt_before
    again = sweep(env)
    assert again["swept_runs"] == [] and again["removed"] == [], again
    print(f"crash point {n}:{when} ({STEPS[n - 1]}): killed after {killed_after:.1f} s, swept in {t_sweep:.1f} s: "
          f"{len(report['removed'])} objects ({', '.join(sorted({e['kind'] for e in report['removed']}))})")
