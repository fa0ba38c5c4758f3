"""The VM lab's crash points (vagrant/lib/nslibvirt.sh, shared by the smoke and the three-VM lab): the smoke
(vagrant/smoke/smoke.sh) and the lab (vagrant/lab.sh) killed with SIGKILL at each of their steps -- before the VM
boots (the ledger, the work directory, the namespace, libvirtd, the libvirt networks, `vagrant up` has started
QEMU) and in the teardown (vagrant destroy, the box volume, the storage pool, libvirtd, then the namespace, the
work directory, the ledger) -- then `chaos-inject sweep`: no namespace, no process, no work directory (the private
libvirt state: domains, networks, volumes) and no ledger of the run may be left, and a second sweep finds nothing.

The walk runs with NSL_END_UP_AT_QEMU=1 (test-only): `vagrant up` ends once the first QEMU runs and the run goes to
its teardown with the domain running, so a teardown step costs the steps before the boot, not a boot; one
wheelhouse serves every run (CHAOS_INJECT_WHEELHOUSE). The lab's second and third QEMU are each a ledger write during
its `vagrant up`, after the VM before it has booted: "lab-boots" reaches them with NSL_END_UP_AT_QEMU=3 and
NSL_UP_NO_PROVISION=1 (boots without provisioning), one and two boots under TCG (~2 and ~4 min); their teardown is
the same steps with more domains for `vagrant destroy`.

Which points: the vms-smoke tier (`make test`) kills the smoke before each of its 20 steps and after the last, the
lab before each of its 21 and after the last (every state change is a step, so the state after a step is the one
before the next: 21 + 22 points, every state the runs pass through), and the lab before its second and third QEMU's
ledger writes (45 in all); CHAOS_INJECT_CRASH_WALK=full (`make test-vms`) walks both sides of every step (86). Each
point is a run of its own, named by its script's PID (namespace, libvirtd, work directory, ledger):
CHAOS_INJECT_VM_WALK_JOBS (default 2) runs go at once. The number of crash points per command and the time of each
are printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
    """A script of the VM lab, as the walk sees it: its steps in order, where its objects are named."""
    name: str
    script: str             # from the repository's root
    tag: str                # NSL_TAG: its ledger (vm-<tag>-<pid>) and work directories (.cache/<tag>/)
    ns_prefix: str          # its namespace: <prefix><pid>
    work_prefix: str        # its work directories: .cache/<tag>/<prefix><pid>-<random>
    steps: list[str]
    walked: tuple[int, ...] | None = None   # the steps it is killed at (None: every step, and after the last)
    # test-only switches of nslibvirt.sh: NSL_END_UP_AT_QEMU=1 ends `vagrant up` once the first QEMU runs, so the
    # teardown comes right after QEMU starts, with the domain running, not after the boot
    switches: tuple[tuple[str, str], ...] = (("NSL_END_UP_AT_QEMU", "1"),)

    def work_dirs(self, pid: int) -> set[str]:
        """The work directories of the run whose script is ``pid``."""
        return {p.name for p in (REPO / ".cache" / self.tag).glob(f"{self.work_prefix}{pid}-*")}

    def points(self) -> list[tuple[int, str]]:
        """Both sides of every step with CHAOS_INJECT_CRASH_WALK=full; in CI, before each step (every state
        change is a step: the state after step n is the one before step n + 1) and after the last."""
        last, full = len(self.steps), os.environ.get("CHAOS_INJECT_CRASH_WALK") == "full"
        if self.walked is not None:
            return [(n, when) for n in self.walked for when in (("before", "after") if full else ("before",))]
        if full:
            return [(n, when) for n in range(1, last + 1) for when in ("before", "after")]
        return [(n, "before") for n in range(1, last + 1)] + [(last, "after")]


SMOKE = Command("smoke", "vagrant/smoke/smoke.sh", "vagrant-smoke", "cibox-", "run.", BEFORE_BOOT + TEARDOWN)
# the lab's steps are the smoke's (one library) but for its second network's dnsmasq
LAB = Command("lab", "vagrant/lab.sh", "vagrant-lab", "cilab-", "work.", LAB_BEFORE_BOOT + TEARDOWN)
# the lab's second and third QEMU: ledgered once their domain runs, after the VM before them has booted (one and two
# boots under TCG, unprovisioned: NSL_UP_NO_PROVISION); `vagrant up` ends once the third is ledgered. Walked first:
# the longest runs, beside the others
LAB_BOOTS = Command("lab-boots", LAB.script, LAB.tag, LAB.ns_prefix, LAB.work_prefix,
                    LAB_BEFORE_BOOT + ["write ledger", "write ledger"] + TEARDOWN, walked=(15, 16),
                    switches=(("NSL_END_UP_AT_QEMU", "3"), ("NSL_UP_NO_PROVISION", "1")))
COMMANDS = {c.name: c for c in (LAB_BOOTS, SMOKE, LAB)}


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


POINTS = [(c.name, n, when) for c in COMMANDS.values() for n, when in c.points()]
# runs at once: each point is a run of its own (namespace, libvirtd, work directory, ledger: all named by the
# script's PID), and each test's checks look at its own run's objects only
JOBS = max(1, int(os.environ.get("CHAOS_INJECT_VM_WALK_JOBS", "2")))


@dataclass
class PointRun:
    """One crash point's run: the script killed there, and where its run directory, trace and stderr are."""
    command: Command
    n: int
    when: str
    base: Path
    future: Future | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CHAOS_INJECT_RUN_DIR": str(self.base / "run"),
                "CHAOS_INJECT_CRASH_TRACE": str(self.base / "trace"), "CHAOS_INJECT_CRASH_AT": f"{self.n}:{self.when}",
                **dict(self.command.switches)}

    def run(self, wheels: str) -> tuple[int, int, float]:
        """The script, to its end (killed at the point): its PID, exit status and seconds to the kill."""
        t0 = time.monotonic()
        with open(self.base / "stderr", "w") as err:   # a file: the inner script, still running, keeps it open
            proc = subprocess.Popen(["nice", "-n", "19", "bash", str(REPO / self.command.script),
                                     str(self.base / "dest")], env={**self.env, "CHAOS_INJECT_WHEELHOUSE": wheels},
                                    stdout=subprocess.DEVNULL, stderr=err)
            try:
                rc = proc.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                proc.kill()        # the script is SIGKILLed, as at a crash point: the sweep below clears its run
                rc = proc.wait()
        return proc.pid, rc, time.monotonic() - t0


class Walk:
    """The selected points' runs, all queued at once in collection order and run JOBS at a time (a long run does
    not hold the others back); each test waits for its own run, then checks it. At the module's end every run is
    waited for and swept (one whose test failed or never came)."""

    def __init__(self, wheels: str, tmp_path_factory, order: list[tuple[str, int, str]]):
        self.pool = ThreadPoolExecutor(max_workers=JOBS)
        self.runs = {key: PointRun(COMMANDS[key[0]], key[1], key[2],
                                   tmp_path_factory.mktemp(f"{key[0]}-{key[1]}-{key[2]}")) for key in order}
        for run in self.runs.values():
            run.future = self.pool.submit(run.run, wheels)

    def result(self, key) -> tuple[PointRun, int, int, float]:
        run = self.runs[key]
        return (run, *run.future.result())

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for run in self.runs.values():
            sweep(run.env)


@pytest.fixture(scope="module")
def walk(request, tmp_path_factory):
    require_root_and_vm_tools("the VM lab's scripts")
    order = [tuple(item.callspec.params[k] for k in ("name", "n", "when")) for item in request.session.items
             if item.module is request.module and hasattr(item, "callspec")]
    points = Walk(request.getfixturevalue("wheelhouse"), tmp_path_factory, order)
    yield points
    points.close()


LIBVIRT_RUN_DIR_BEFORE = Path("/run/libvirt").exists()    # each run's libvirtd has a private /run


@pytest.mark.parametrize("name,n,when", POINTS)
def test_killed_at_a_step_and_swept_clean(name, n, when, request):
    require_root_and_vm_tools(f"the {name}")
    walk = request.getfixturevalue("walk")      # after the skip: no wheel build where nothing runs
    run, pid, rc, killed_after = walk.result((name, n, when))
    request.addfinalizer(lambda: sweep(run.env))   # a failed check must not leave the killed run's inner script going
    check_killed_and_swept(run, pid, rc, killed_after)


def check_killed_and_swept(run: PointRun, pid: int, rc: int, killed_after: float) -> None:
    """The run was killed at its point; `sweep` leaves nothing of it and a second sweep finds nothing."""
    command, n, when = run.command, run.n, run.when
    name, env, run_dir = command.name, run.env, run.base / "run"
    stderr = (run.base / "stderr").read_text()
    if rc == 77:
        pytest.skip(stderr.strip().splitlines()[-1])
    assert rc == -9, f"exit {rc}, not killed at step {n}:\n{stderr[-3000:]}"
    namespace = f"{command.ns_prefix}{pid}"             # the run's objects are named by the script's PID
    steps = command.steps
    traced = [line.split("\t", 1)[1] for line in (run.base / "trace").read_text().splitlines()]
    # killed at step n (after it: a step that writes the ledger holds that write, n + 1, too)
    assert traced == steps[:len(traced)] and len(traced) in (n, n + 1) and traced[n - 1] == steps[n - 1], traced
    ledgers = list((run_dir / "runs").glob(f"vm-{command.tag}-*.json"))
    where = f"{name} crash point {n}:{when}, step {n} of {len(steps)} ({steps[n - 1]})"
    t0 = time.monotonic()
    if (n, when) in ((1, "before"), (len(steps), "after")):   # no ledger yet, or the last thing gone: nothing made
        assert not ledgers and not list((run_dir / "runs").glob("*")), ledgers
        assert not command.work_dirs(pid), command.work_dirs(pid)
        assert sweep(env)["swept_runs"] == [] and namespace not in namespaces()
        print(f"{where}: killed after {killed_after:.1f} s, nothing of the run left to sweep")
        return
    (ledger_path,) = ledgers
    ledger = json.loads(ledger_path.read_text())
    ledger_id, owner = ledger["run_id"], ledger["pid"]
    assert owner == pid, (owner, pid)
    work = [e["path"] for e in ledger["entries"] if e["kind"] == "lab-dir"]
    recorded = [(e["pid"], e["starttime"]) for e in ledger["entries"] if e["kind"] == "process"]
    report = sweep(env)
    t_sweep = time.monotonic() - t0
    assert report["swept_runs"] == [ledger_id] and not report["failures"], report
    time.sleep(1)
    assert namespace not in namespaces()
    assert not [p for p, ticks in recorded if process_alive(p, ticks)]
    assert processes_of(command, ledger_id) == []
    assert not any(Path(w).exists() for w in work) and not list((run_dir / "runs").glob("*.json"))
    assert not command.work_dirs(pid), command.work_dirs(pid)
    assert Path("/run/libvirt").exists() == LIBVIRT_RUN_DIR_BEFORE
    again = sweep(env)
    assert again["swept_runs"] == [] and again["removed"] == [], again
    print(f"{where}: killed after {killed_after:.1f} s, swept in {t_sweep:.1f} s: {len(report['removed'])} objects "
          f"({', '.join(sorted({e['kind'] for e in report['removed']}))})")
