"""Crash safety (issue #18), the commands after doctor and inject: `inject --detach` (its supervisor), `stop`,
`kill-process --hold --restart`, `cpu-stress` and `lab up`/`lab down`, walked like test_crash_points.py. Each
command is traced once to count its steps, then killed (SIGKILL, by itself) right before each step and right
after the last (``CHAOS_INJECT_CRASH_WALK=full``: both sides of every step). A crash point may be in a process
the command started (the detached supervisor): the walk waits until no process of the command is left (every
process whose environment carries the test's run directory), then `sweep`s twice: the first leaves nothing of
ours, the second finds nothing to do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from chaosinject.kernel import nftables
from chaosinject.kernel.ledger import Ledger, final_record, process_alive
from chaosinject.kernel.sweep import sweep

from .labkit import needs_lab
from .test_crash_points import CLI, FULL_WALK, SOAK_SEED, assert_nothing_left, inject_args, run_cli, snapshot

PROCESS_WAIT_S = 60.0   # a loaded 2-core host: a crashed supervisor or an orphaned CPU worker ends well within


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def command_processes(run_dir: Path, spare: Callable[[int], bool] = lambda pid: False) -> list[int]:
    """Live processes the command started: their environment has our run directory (the test's own process
    got it through monkeypatch, not in its environ at exec time); ``spare`` leaves out what may outlive it."""
    needle = f"CHAOS_INJECT_RUN_DIR={run_dir}".encode()
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != os.getpid() and _environ_has(int(p.name), needle)
            and process_alive(int(p.name), None) and not spare(int(p.name))]


def wait_no_command_processes(run_dir: Path, where: str, spare: Callable[[int], bool] = lambda pid: False) -> None:
    end = time.monotonic() + PROCESS_WAIT_S
    while (left := command_processes(run_dir, spare)) and time.monotonic() < end:
        time.sleep(0.05)
    assert not left, f"{where}: processes still running after {PROCESS_WAIT_S:.0f}s: " \
                     f"{[(pid, _cmdline(pid)) for pid in left]}"
    # a process being killed loses its environment (its memory) before it is dead: wait for every run's owner
    # to be gone too, or sweep would take a dying owner for a live one and leave its run alone
    while (live := [ledger.run_id for ledger in Ledger.all() if ledger.owner_alive]) and time.monotonic() < end:
        time.sleep(0.05)
    assert not live, f"{where}: runs whose owner still lives after {PROCESS_WAIT_S:.0f}s: {live}"


class Walk:
    """One command's crash points. ``prepare()`` runs before each run (a fresh target), ``check(where)`` after
    each run's sweeps; ``spare`` names processes the command may leave running on purpose (a restart)."""

    def __init__(self, run_dir: Path, pair, tmp_path: Path, name: str, args: list[str], *,
                 prepare: Callable[[], None] = lambda: None, check: Callable[[str], None] = lambda where: None,
                 spare: Callable[[int], bool] = lambda pid: False, exits: tuple[int, ...] = (0,)):
        self.run_dir, self.pair, self.tmp_path, self.name = run_dir, pair, tmp_path, name
        self.args, self.prepare, self.check, self.spare, self.exits = args, prepare, check, spare, exits

    def once(self, crash_at: str | None, trace: Path) -> subprocess.CompletedProcess:
        self.prepare()
        done = run_cli(self.run_dir, self.args, crash_at=crash_at, trace=trace)
        wait_no_command_processes(self.run_dir, f"{self.name} {crash_at or 'traced'}", self.spare)
        return done

    def steps(self) -> list[str]:
        trace = self.tmp_path / f"trace-{self.name.replace(' ', '_')}"
        done = self.once(None, trace)
        assert done.returncode in self.exits, f"{self.name}: traced run: exit {done.returncode} {done.stderr[-2000:]}"
        lines = trace.read_text().splitlines()
        assert [int(line.split("\t")[0]) for line in lines] == list(range(1, len(lines) + 1))
        return [line.split("\t", 1)[1] for line in lines]

    def run(self, *, min_steps: int, steps: list[str] | None = None) -> list[str]:
        before = snapshot(self.pair)
        if steps is None:
            steps = self.steps()
            self.settle(f"{self.name}: traced run", before, -1)
        assert len(steps) >= min_steps, f"{self.name}: only {len(steps)} steps traced: {steps}"
        for n, label in enumerate(steps, start=1):
            for when in ("before", "after") if FULL_WALK or n == len(steps) else ("before",):
                where = f"{self.name}: step {n}/{len(steps)} {when} ({label})"
                trace = self.tmp_path / f"trace-{n}-{when}"
                done = self.once(f"{n}:{when}", trace)
                reached = trace.read_text().splitlines()
                # the process that reached step n died there: the trace ends at n (a supervisor's death is
                # not the foreground's exit code; the foreground's own crash is)
                assert reached and reached[-1].split("\t")[0] == str(n), f"{where}: trace ends {reached[-1:]}"
                if not self.forks_after(steps, n):
                    assert done.returncode == -9, f"{where}: exit {done.returncode}: {done.stderr[-1500:]}"
                self.settle(where, before, done.pid)
        walked = 2 * len(steps) if FULL_WALK else len(steps) + 1
        print(f"\ncrash points: {self.name}: {len(steps)} steps, {walked} crash points walked: " + ", ".join(steps))
        return steps

    def forks_after(self, steps: list[str], n: int) -> bool:
        return False

    def settle(self, where: str, before: dict, pid: int) -> None:
        first = sweep()
        assert not first.failures, f"{where}: sweep failed: {first.failures}"
        second = sweep()
        assert not (second.failures or second.removed or second.swept_runs), \
            f"{where}: a second sweep was not a no-op: {second}"
        assert_nothing_left(self.run_dir, self.pair, before, pid, where)
        self.check(where)


class DetachWalk(Walk):
    """The foreground runs the capability probe, then forks the supervisor, which continues the step count
    (its first step is its ledger): a crash from there on is the supervisor's, the foreground exits 0 or 1."""

    supervisor_from: int = 0

    def forks_after(self, steps: list[str], n: int) -> bool:
        return n >= self.supervisor_from


class Service:
    """kill-process's target: a sleep of the test's own (an argument no other process has); its --restart starts
    another like it. After any crash and sweep exactly one must run: the target untouched, or one restart."""

    def __init__(self) -> None:
        self.argv = ["sleep", f"3600.{os.getpid()}{time.monotonic_ns() % 1_000_000}"]
        self.started: list[subprocess.Popen] = []

    def running(self) -> list[int]:
        return [int(p.name) for p in Path("/proc").iterdir()
                if p.name.isdigit() and _cmdline(int(p.name)) == self.argv and process_alive(int(p.name), None)]

    def end_all(self) -> None:
        for pid in self.running():   # ours: the target or its restart, by pid
            os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while self.running() and time.monotonic() < end:
            time.sleep(0.02)
        for proc in self.started:
            proc.poll()

    def fresh_target(self) -> list[str]:
        self.end_all()
        proc = subprocess.Popen(self.argv, start_new_session=True)
        self.started.append(proc)
        return ["kill-process", "--pid", str(proc.pid), "--grace", "2s", "--hold", "200ms",
                "--restart", " ".join(self.argv) + " &"]

    def check(self, where: str) -> None:
        for proc in self.started:
            proc.poll()
        end = time.monotonic() + 10   # a restart's `sh -c 'sleep ... &'` has exited; its child may not have exec'd
        while not (running := self.running()) and time.monotonic() < end:
            time.sleep(0.02)
        assert len(running) == 1, f"{where}: {len(running)} of the service running, not 1: {running}"



@pytest.mark.skipif(nftables.nft_binary() is None, reason="nft missing (Debian package nftables)")
def test_walk_inject_detach_supervisor(pair, run_dir, tmp_path):
    walk = DetachWalk(run_dir, pair, tmp_path, "inject --detach (userspace)",
                      inject_args(pair, "--delay", "5ms", "--engine", "userspace") + ["--detach"])
    before = snapshot(pair)
    steps = walk.steps()
    walk.settle(f"{walk.name}: traced run", before, -1)
    # the probe's steps end with deleting its ledger; the supervisor starts with writing the run's
    walk.supervisor_from = steps.index("delete ledger") + 2
    assert "create nft-table" in steps[walk.supervisor_from - 1:], steps
    walk.run(min_steps=walk.supervisor_from + 4, steps=steps)


def test_walk_cpu_stress(pair, run_dir, tmp_path):
    """Workers are processes of the run: after a crash they end by themselves (parent gone, each 50 ms period);
    the walk's wait for the command's processes is that check."""
    steps = Walk(run_dir, pair, tmp_path, "cpu-stress",
                 ["cpu-stress", "--workers", "2", "--load", "5%", "--duration", "300ms"]).run(min_steps=6)
    assert steps.count("start cpu worker") == 2, steps


def test_walk_kill_process_hold_restart(pair, run_dir, tmp_path):
    """The target is a process of the test's (a sleep with an argument of its own); --restart starts another
    like it. After every crash point and sweep exactly one is running: the target, untouched, or one restart
    (never none: the ledger's restart entry precedes the signal; never two: a restart carries its run's marker
    in its environment, and sweep does not start it again)."""
    service = Service()

    def prepare() -> None:
        walk.args = service.fresh_target()

    walk = Walk(run_dir, pair, tmp_path, "kill-process --hold --restart", [], prepare=prepare,
                check=service.check, spare=lambda pid: _cmdline(pid) == service.argv)
    try:
        steps = walk.run(min_steps=6)
    finally:
        service.end_all()
    assert "send SIGTERM" in steps and "start restart command" in steps, steps


# the lab: 33 steps in `lab up` and 21 in `lab down`, every one walked (~5 min); CHAOS_INJECT_LAB_WALK_STEPS=N walks
# a seeded sample of N steps of each instead (a quicker run by hand)
LAB_STEPS = os.environ.get("CHAOS_INJECT_LAB_WALK_STEPS", "all")


def _lab_sample(steps: list[str], rng) -> list[int]:
    numbers = list(range(1, len(steps) + 1))
    if LAB_STEPS == "all":
        return numbers
    return sorted(rng.sample(numbers, min(int(LAB_STEPS), len(numbers))))


@needs_lab
def test_walk_lab_up_and_down(run_dir, tmp_path):
    """`lab up` killed right before step n, then `sweep` alone (the command's lab ledger: `lab down` of it): nothing
    of the lab is left (namespaces, host link, state directory, its processes), a second sweep finds nothing and
    `lab down` finds no lab. `lab down` killed right before step n of a full lab's removal, then `sweep`: the same.
    `lab restart api` killed, or `lab down` before its first step: the lab stays the operator's; `lab down`, then
    nothing is left. Every step."""
    import random

    from chaosinject.lab.netlab import lab_leftovers
    from chaosinject.lab.preflight import free_subnet
    from chaosinject.lab.state import LabSpec

    rng = random.Random(SOAK_SEED)
    spec = LabSpec(prefix="ciw" + os.urandom(2).hex(), subnet=free_subnet("10.214"),
                   state_dir=Path("/run/chaos-inject") / f"lab-walk-{os.urandom(3).hex()}")
    lab = ["--prefix", spec.prefix, "--subnet", spec.subnet, "--state-dir", str(spec.state_dir)]

    def lab_cli(action: str, crash_at: str | None = None, trace: Path | None = None):
        role = ["api"] if action == "restart" else []       # the role whose service restarts
        return run_cli(run_dir, ["lab", action, *role, *lab], crash_at=crash_at, trace=trace, timeout=300)

    def nothing_left(where: str, *, down_first: bool = False) -> None:
        """After a killed `lab up` or `lab down`, `sweep` alone takes the lab down (the command's lab ledger);
        after a killed restart the lab is still the operator's: `lab down`, then `sweep` finds nothing."""
        if down_first:
            down = lab_cli("down")
            assert down.returncode == 0, f"{where}: lab down failed: {down.stderr[-1500:]}"
            wait_no_command_processes(run_dir, where)  # the lab's services carry the run directory too
        report = sweep()                               # the killed command was waited for: its owner is dead
        assert not report.failures, f"{where}: sweep: {report}"
        assert not (down_first and report.swept_runs), f"{where}: sweep after lab down: {report}"
        wait_no_command_processes(run_dir, where)
        assert not lab_leftovers(spec), f"{where}: left: {lab_leftovers(spec)}"
        again = sweep()
        assert not (again.failures or again.swept_runs or again.removed), f"{where}: second sweep: {again}"
        down = lab_cli("down")
        assert down.returncode == 0 and "no lab was up" in down.stdout, f"{where}: lab down after: {down.stdout}"

    def traced(action: str) -> list[str]:
        trace = tmp_path / f"trace-lab-{action}"
        done = lab_cli(action, trace=trace)
        assert done.returncode == 0, f"lab {action}: {done.stderr[-2000:]}"
        return [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]

    def walk_lab_action(action: str, steps: list[str], numbers: list[int] | None = None) -> None:
        """`lab ACTION` killed right before step n (each of ``numbers``, every step by default), then nothing of
        the lab is left; a restart or a down first needs a lab up."""
        name = "lab restart api" if action == "restart" else f"lab {action}"
        for n in numbers if numbers is not None else range(1, len(steps) + 1):
            where = f"{name}: step {n}/{len(steps)} before ({steps[n - 1]})"
            if action != "up":
                up = lab_cli("up")
                assert up.returncode == 0, f"{where}: lab up: {up.stderr[-1500:]}"
            done = lab_cli(action, crash_at=f"{n}:before")
            assert done.returncode == -9, f"{where}: exit {done.returncode}: {done.stderr[-1500:]}"
            # a restart, or a `lab down` killed before its ledger (it changed nothing): the lab is still the
            # operator's, `lab down` removes it; otherwise the killed command's ledger: `sweep` alone
            nothing_left(where, down_first=action == "restart" or (action == "down" and n == 1))

    try:
        up_steps = traced("up")
        restart_steps = traced("restart")
        down_steps = traced("down")
        nothing_left("traced up, restart and down")     # the traced down took it down: nothing to sweep
        print(f"crash points: lab restart api: {len(restart_steps)} steps (all walked): " + ", ".join(restart_steps))
        assert restart_steps, "lab restart api made no state change"
        walk_lab_action("restart", restart_steps)
        up_walk, down_walk = _lab_sample(up_steps, rng), _lab_sample(down_steps, rng)
        print(f"\ncrash points: lab up: {len(up_steps)} steps: " + ", ".join(up_steps))
        print(f"crash points: lab down: {len(down_steps)} steps: " + ", ".join(down_steps))
        print("walked: before every step of both" if LAB_STEPS == "all" else
              f"walked (seed {SOAK_SEED}): lab up before steps {up_walk}, lab down before steps {down_walk}")
        walk_lab_action("up", up_steps, up_walk)
        walk_lab_action("down", down_steps, down_walk)
    finally:
        lab_cli("down")
        wait_no_command_processes(run_dir, "the walk's end")


@pytest.mark.skipif(nftables.nft_binary() is None, reason="nft missing (Debian package nftables)")
def test_walk_stop_of_a_detached_run(pair, run_dir, tmp_path):
    """`stop RUN_ID` killed right before and right after its step (the stop request it writes): the run goes on,
    or ends by itself on the request; a second `stop` ends it or finds it gone; then nothing is left."""
    args = inject_args(pair, "--delay", "5ms", "--engine", "userspace") + ["--detach"]
    args[args.index("--duration") + 1] = "60s"
    before = snapshot(pair)

    def detached() -> str:
        done = run_cli(run_dir, args)
        assert done.returncode == 0, done.stderr[-1500:]
        return done.stdout.split()[0]

    trace = tmp_path / "trace-stop"
    run_id = detached()
    stopped = run_cli(run_dir, ["stop", run_id], trace=trace)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    steps = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]
    assert steps == ["write stop request"], steps
    wait_no_command_processes(run_dir, "stop: traced")
    for when in ("before", "after"):
        where = f"stop: step 1/1 {when} (write stop request)"
        run_id = detached()
        done = run_cli(run_dir, ["stop", run_id], crash_at=f"1:{when}")
        assert done.returncode == -9, f"{where}: exit {done.returncode}: {done.stderr[-1500:]}"
        if when == "after":  # the request was written: the run ends on it (its owner reads it each tick)
            end = time.monotonic() + PROCESS_WAIT_S
            while final_record(run_id) is None and time.monotonic() < end:
                time.sleep(0.05)
            assert (final_record(run_id) or {}).get("state") == "stopped", f"{where}: {final_record(run_id)}"
        again = run_cli(run_dir, ["stop", run_id])
        assert again.returncode == 0, f"{where}: second stop: {again.stdout} {again.stderr}"
        wait_no_command_processes(run_dir, where)
        first, second = sweep(), sweep()
        assert not (first.failures or first.swept_runs), f"{where}: the run was not ended by its owner: {first}"
        assert not (second.failures or second.removed or second.swept_runs), f"{where}: {second}"
        assert_nothing_left(run_dir, pair, before, done.pid, where)
    print("\ncrash points: stop: 1 step, 2 crash points walked: write stop request")


def _experiment(pair, tmp_path: Path) -> Path:
    """A Chaos Toolkit experiment with one network fault of ours (eBPF loss on the test's pair), a probe before and
    after, and the rollback that stops the fault: the steps of `run` are the experiment's ledger and the fault's."""
    flow = f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp"
    exp = {
        "title": "crash walk", "description": "every step of `chaos-inject run`, killed",
        "steady-state-hypothesis": {"title": "true holds", "probes": [
            {"type": "probe", "name": "true", "tolerance": 0, "provider": {"type": "process", "path": "true"}}]},
        "method": [{"type": "action", "name": "loss", "pauses": {"after": 0.3}, "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "start_network_fault",
            "arguments": {"flow": flow, "loss": "50%", "duration": "300ms", "lease": "1s", "netns": pair.client_ns,
                          "engine": "ebpf"}}}],
        "rollbacks": [{"type": "action", "name": "undo", "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "stop_network_fault"}}],
    }
    path = tmp_path / "walk-experiment.json"
    path.write_text(json.dumps(exp))
    return path


def test_walk_run_experiment(pair, run_dir, tmp_path):
    """`chaos-inject run FILE`: its run ledger, the fault its method starts, the rollback; every step walked.
    Each run records into a directory of its own under tmp_path (the run's output, not a kernel object)."""
    exp = _experiment(pair, tmp_path)
    runs = iter(range(10_000))

    def prepare() -> None:
        walk.args = ["run", str(exp), "--no-guard", "-q", "--record", str(tmp_path / f"record-{next(runs)}")]

    # no traffic flows on the pair: the fault matches no packet, which `run` reports as a failed experiment (exit 1)
    walk = Walk(run_dir, pair, tmp_path, "run (experiment)", [], prepare=prepare, exits=(0, 1))
    steps = walk.run(min_steps=6)
    assert any("ledger" in s for s in steps), steps


class ChildWalk(Walk):
    """Every step is in a child the command starts (schedule's runs are `chaos-inject` processes of their own):
    the crash is the child's, the command reports the failed run and exits 1."""

    def forks_after(self, steps: list[str], n: int) -> bool:
        return True


def test_walk_schedule(pair, run_dir, tmp_path):
    """`chaos-inject schedule --count 1 --immediately`: the scheduler writes no state of its own; each tick's run
    is a chaos-inject process with its own ledger and lease. Walked: every step of the run it starts; then the
    scheduler itself killed while its run holds the fault: the run ends by itself, nothing is left."""
    args = ["schedule", "--count", "1", "--immediately", "@every 1h", "--",
            *inject_args(pair, "--loss", "50%", "--engine", "ebpf")]
    # no traffic: the run matches no packet (exit 4), which schedule counts as a failed run (exit 1)
    walk = ChildWalk(run_dir, pair, tmp_path, "schedule", args, exits=(0, 1))
    steps = walk.run(min_steps=4)
    assert "create bpf-filter" in steps, steps

    before = snapshot(pair)
    long_run = list(args)
    long_run[long_run.index("--duration") + 1] = "3s"
    env = dict(os.environ, CHAOS_INJECT_RUN_DIR=str(run_dir))
    with subprocess.Popen([*CLI, *long_run], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        end = time.monotonic() + PROCESS_WAIT_S
        while not [ledger for ledger in Ledger.all() if ledger.owner_alive
                   and any(e.get("kind") == "bpf-filter" for e in ledger.entries)] and time.monotonic() < end:
            time.sleep(0.05)
        proc.kill()                       # the scheduler, by its pid; its run is a process of its own
    wait_no_command_processes(run_dir, "schedule killed mid-run")
    walk.settle("schedule killed mid-run", before, proc.pid)
