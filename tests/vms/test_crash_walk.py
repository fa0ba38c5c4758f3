"""The VM lab's crash points (vagrant/lib/nslibvirt.sh, shared by the smoke and the three-VM lab): the smoke
(vagrant/smoke/smoke.sh) and the lab (vagrant/lab.sh) killed with SIGKILL at each of their steps -- before the VM
boots (the ledger, the work directory, the namespace, libvirtd, the libvirt networks, `vagrant up` has started
QEMU) and in the teardown (vagrant destroy, the box volume, the storage pool, libvirtd, then the namespace, the
work directory, the ledger) -- then `chaos-inject sweep`: no namespace, no process, no work directory (the private
libvirt state: domains, networks, volumes) and no ledger of the run may be left, and a second sweep finds nothing.

The walk runs with NSL_END_UP_AT_QEMU (test-only): `vagrant up` ends once the first QEMU runs and the run goes to
its teardown with the domain running, so a teardown step costs the steps before the boot, not a boot; one
wheelhouse serves every run (CHAOS_INJECT_WHEELHOUSE).
What that leaves unwalked: the lab's second and third QEMU (each a ledger write during its `vagrant up`, after the
VM before it is provisioned); their teardown is the same steps with two more domains for `vagrant destroy`.

Which points: the vms-smoke tier (`make test`) kills the smoke before each of its 20 steps and after the last (every
state change is a step, so the state after a step is the one before the next: 21 points, every state the run
passes through), and the lab before 5 of its 21 steps and after the last (its second network's ledger write, QEMU's
start, vagrant destroy, libvirtd's stop, the namespace's removal); CHAOS_INJECT_CRASH_WALK=full (`make test-vms`)
walks both sides of every step of both (82). The number of crash points per command and the time of each are
printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaosinject.procfs import process_alive
from tests.vms.vmkit import REPO, namespaces, require_root_and_vm_tools


# the smoke's steps up to QEMU's start, in order (one dnsmasq: the management network)
BEFORE_BOOT = ["write ledger", "write ledger", "create work directory", "write ledger", "create netns",
               "write ledger", "start libvirtd", "write ledger", "start vagrant up", "libvirt network up",
               "write ledger", "QEMU started", "write ledger"]
# the teardown's: the inner script's (one box volume), then the outer script's trap
TEARDOWN = ["vagrant destroy", "delete volume", "remove storage pool", "stop libvirtd", "delete netns",
            "remove work directory", "delete ledger"]
# the lab's: two networks (management, 192.168.56.0/24), two dnsmasq ledgered when they are up
LAB_BEFORE_BOOT = BEFORE_BOOT[:11] + ["write ledger"] + BEFORE_BOOT[11:]


@dataclass(frozen=True)
class Command:
    """A script of the VM lab, as the walk sees it: its steps in order and the points CI walks (None: all)."""
    name: str
    script: str             # from the repository's root
    tag: str                # NSL_TAG: its ledger (vm-<tag>-<pid>) and work directories (.cache/<tag>/)
    ns_prefix: str          # its namespace: <prefix><pid>
    work_prefix: str        # its work directories: .cache/<tag>/<prefix><pid>-<random>
    steps: list[str]
    in_ci: list[int] | None  # the steps CI kills before (None: every step), and after the last

    def work_dirs(self) -> set[str]:
        return {p.name for p in (REPO / ".cache" / self.tag).glob(self.work_prefix + "*")}

    def points(self) -> list[tuple[int, str]]:
        """Both sides of every step with CHAOS_INJECT_CRASH_WALK=full; in CI, before each step (every state
        change is a step: the state after step n is the one before step n + 1) and after the last."""
        last = len(self.steps)
        if os.environ.get("CHAOS_INJECT_CRASH_WALK") == "full":
            return [(n, when) for n in range(1, last + 1) for when in ("before", "after")]
        return [(n, "before") for n in (self.in_ci or range(1, last + 1))] + [(last, "after")]


SMOKE = Command("smoke", "vagrant/smoke/smoke.sh", "vagrant-smoke", "cibox-", "run.", BEFORE_BOOT + TEARDOWN, None)
# the lab's steps are the smoke's (one library) but for its second network's dnsmasq: CI kills it there, at QEMU's
# start and in its teardown (three VMs' worth of domains and networks in the real run)
LAB = Command("lab", "vagrant/lab.sh", "vagrant-lab", "cilab-", "work.", LAB_BEFORE_BOOT + TEARDOWN,
              [12, 13, 15, 18, 19])
COMMANDS = {c.name: c for c in (SMOKE, LAB)}


def processes_of(command: Command, ledger_id: str) -> list[int]:
    """Processes that carry the run's ledger name in their environment (the scripts, vagrant, libvirtd) or whose
    command line names its work directory (QEMU: its disk)."""
    marker = f"NSL_LEDGER={ledger_id}".encode()
    work_part = f"{command.tag}/{command.work_prefix}{ledger_id.rsplit('-', 1)[1]}-".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (marker in env or work_part in cmd) and process_alive(int(entry.name), None):
            found.append(int(entry.name))
    return found


def sweep(env: dict) -> dict:
    """`chaos-inject sweep --json`, without the crash switch (sweep's own steps would count towards it)."""
    env = {k: v for k, v in env.items() if k not in ("CHAOS_INJECT_CRASH_AT", "CHAOS_INJECT_CRASH_TRACE")}
    out = subprocess.run([sys.executable, "-m", "chaosinject.cli", "sweep", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> str:
    """One wheelhouse of this checkout (with the lab's analysis extra) for every run of the walk
    (CHAOS_INJECT_WHEELHOUSE: linked into each run's work directory, not built again)."""
    out = tmp_path_factory.mktemp("wheelhouse") / "wheels"
    build = subprocess.run(["bash", str(REPO / "vagrant" / "wheelhouse.sh"), str(out), "analysis"],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    return str(out)


@pytest.mark.parametrize("name,n,when", [(c.name, n, when) for c in COMMANDS.values() for n, when in c.points()])
def test_killed_at_a_step_and_swept_clean(name, n, when, tmp_path, request):
    command = COMMANDS[name]
    require_root_and_vm_tools(f"the {name}")
    wheels = request.getfixturevalue("wheelhouse")     # after the skip: no wheel build where nothing runs
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    # NSL_END_UP_AT_QEMU: the teardown comes right after QEMU starts, with the domain running, not after the boot
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir), "CHAOS_INJECT_CRASH_TRACE": str(trace),
           "CHAOS_INJECT_CRASH_AT": f"{n}:{when}", "NSL_END_UP_AT_QEMU": "1", "CHAOS_INJECT_WHEELHOUSE": wheels}
    request.addfinalizer(lambda: sweep(env))     # a failed check must not leave the killed run's inner script going
    ns_before, libvirt_before, work_before = namespaces(), Path("/run/libvirt").exists(), command.work_dirs()
    ours = lambda: {x for x in namespaces() if x.startswith(command.ns_prefix)}   # noqa: E731
    t0 = time.monotonic()
    with open(tmp_path / "stderr", "w") as err:   # a file: the inner script, still running, keeps it open
        proc = subprocess.run(["nice", "-n", "19", "bash", str(REPO / command.script), str(tmp_path / "dest")], env=env,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=1800)
    killed_after = time.monotonic() - t0
    stderr = (tmp_path / "stderr").read_text()
    if proc.returncode == 77:
        pytest.skip(stderr.strip().splitlines()[-1])
    assert proc.returncode == -9, f"exit {proc.returncode}, not killed at step {n}:\n{stderr[-3000:]}"
    steps = command.steps
    traced = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]
    # killed at step n (after it: a step that writes the ledger holds that write, n + 1, too)
    assert traced == steps[:len(traced)] and len(traced) in (n, n + 1) and traced[n - 1] == steps[n - 1], traced
    ledgers = list((run_dir / "runs").glob(f"vm-{command.tag}-*.json"))
    where = f"{name} crash point {n}:{when} of {len(command.points())} ({steps[n - 1]})"
    if (n, when) in ((1, "before"), (len(steps), "after")):   # no ledger yet, or the last thing gone: nothing made
        assert not ledgers and not list((run_dir / "runs").glob("*")), ledgers
        assert not command.work_dirs() - work_before, command.work_dirs() - work_before
        assert sweep(env)["swept_runs"] == [] and not ours() - ns_before
        print(f"{where}: killed after {killed_after:.1f} s, nothing of the run left to sweep")
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
    assert f"{command.ns_prefix}{owner}" not in namespaces() and not ours() - ns_before
    assert not [p for p, ticks in recorded if process_alive(p, ticks)]
    assert processes_of(command, ledger_id) == []
    assert not any(Path(w).exists() for w in work) and not list((run_dir / "runs").glob("*.json"))
    assert not command.work_dirs() - work_before, command.work_dirs() - work_before
    assert Path("/run/libvirt").exists() == libvirt_before
    again = sweep(env)
    assert again["swept_runs"] == [] and again["removed"] == [], again
    print(f"{where}: killed after {killed_after:.1f} s, swept in {t_sweep:.1f} s: {len(report['removed'])} objects "
          f"({', '.join(sorted({e['kind'] for e in report['removed']}))})")
