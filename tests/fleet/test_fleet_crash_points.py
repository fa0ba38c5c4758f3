"""Crash points of the fleet controller (issue #18 on the fleet): `chaos-inject --inventory hosts.yml --flow
web->db --loss 50% --duration Ns` is traced once to count its state-changing steps (its fleet ledger's writes,
the rounds that start, renew and stop the fault on the hosts), then SIGKILLed by itself right before each step
and right after the last (CHAOS_INJECT_CRASH_AT, injector/crashpoints.py). After each crash `sweep --inventory`
must leave no fault, qdisc, filter, ledger or run file on any host, and no fleet ledger or Ansible folder of the
controller. The same walk for `chaos-inject run experiment.json --inventory hosts.yml` (the experiment's status
file on the controller too, removed by the controller's own `sweep`). Every step is walked: the state after a step is
the one before the next. The number of crash points is printed (pytest -s). CHAOS_INJECT_CRASH_WALK=full walks
after every step too.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from .fleetkit import in_ns, processes_using

pytestmark = [pytest.mark.slow]

FULL_WALK = os.environ.get("CHAOS_INJECT_CRASH_WALK") == "full"
# short: one renewal (every third of the heartbeat, 2 s) inside the 4 s the fault is held
COMMAND = ("--flow", "web->db", "--loss", "50%", "--duration", "4s", "--lease", "2s", "--heartbeat-timeout", "6s")


def host_state(fleet, host: str) -> dict:
    """What the fleet run may change on a host: its qdiscs and filters (both hooks), its state files."""
    h = fleet.hosts[host]
    tc = {what: in_ns(h.ns, "tc", *what.split(), "show", "dev", "eth0", *extra).stdout
          for what, extra in (("qdisc", ()), ("filter", ("ingress",)), ("filter", ("egress",)))}
    # clsact/.lock: the clsact lock file, kept on purpose (an flock's file; no state in it)
    files = sorted(str(p.relative_to(h.state_dir)) for sub in ("runs", "fleet", "clsact")
                   for p in (h.state_dir / sub).rglob("*") if (h.state_dir / sub).is_dir() and p.name != ".lock")
    return {"tc": tc, "files": files}


def assert_nothing_left(fleet, before: dict, where: str) -> None:
    for host in fleet.hosts:
        assert fleet.live_runs(host) == [], f"{where}: {host} has live runs"
        now = host_state(fleet, host)
        assert now["files"] == [], f"{where}: {host} state files left: {now['files']}"
        assert now["tc"] == before[host]["tc"], f"{where}: {host} tc differs: {now['tc']} vs {before[host]['tc']}"
    for sub in ("runs", "experiments"):     # ledgers and their side files; experiments' status files
        left = [p.name for p in (fleet.ctl_run_dir / sub).iterdir()] if (fleet.ctl_run_dir / sub).is_dir() else []
        assert not left, f"{where}: controller {sub} files left: {left}"
    folders = [p.name for p in fleet.tmp.glob("chaos-fleet-*")]
    assert not folders, f"{where}: controller Ansible folders left: {folders}"


def walk(fleet, inv, args: tuple[str, ...], tmp_path, expected: list[str],
         exits=(0, 4)) -> tuple[list[str], list[str]]:
    """Trace ``chaos-inject ARGS`` on the controller once (its steps must be ``expected``, its exit one of
    ``exits``), then kill it at each crash point and sweep (`sweep --inventory`, then the controller's own
    `sweep`); nothing may be left."""
    before = {h: host_state(fleet, h) for h in fleet.hosts}
    trace = tmp_path / "trace"
    done = fleet.controller(*args, env={"CHAOS_INJECT_CRASH_TRACE": str(trace)})
    assert done.returncode in exits, done.stdout + done.stderr
    steps = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]
    assert steps == expected, steps
    assert_nothing_left(fleet, before, "the traced run")

    points = [f"{n}:before" for n in range(1, len(steps) + 1)] + [f"{len(steps)}:after"]
    if FULL_WALK:
        points += [f"{n}:after" for n in range(1, len(steps))]
    for point in points:
        n, when = point.split(":")
        where = f"crash {when} step {n} ({steps[int(n) - 1]})"
        crashed = fleet.controller(*args, env={"CHAOS_INJECT_CRASH_AT": point})
        assert crashed.returncode == -9, f"{where}: not killed ({crashed.returncode}): {crashed.stderr[-800:]}"
        ledgers = list((fleet.ctl_run_dir / "runs").glob("fleet-*.json"))
        # the ledger exists from its first write until its deletion
        assert bool(ledgers) == (steps.index("write fleet ledger") < int(n) - (when == "before")
                                 <= steps.index("delete fleet ledger")), f"{where}: {ledgers}"
        if ledgers:
            status = fleet.controller("status")
            assert "DEAD controller" in status.stdout, f"{where}: {status.stdout}"
            dry = fleet.controller("sweep", "--dry-run")
            assert f"sweep --inventory {inv}" in dry.stdout, f"{where}: {dry.stdout}"
        swept = fleet.controller("sweep", "--inventory", str(inv), "--json")
        assert swept.returncode == 0, f"{where}: sweep --inventory failed: {swept.stdout} {swept.stderr}"
        report = json.loads(swept.stdout)
        assert [led["deleted"] for led in report["controller_ledgers"]] == [True] * len(ledgers), report
        local = fleet.controller("sweep")      # the controller's own files (a dead experiment's status)
        assert local.returncode == 0, f"{where}: sweep failed: {local.stdout} {local.stderr}"
        assert_nothing_left(fleet, before, where)
        if ledgers:     # the first sweep had hosts to clear: a second one finds nothing (an Ansible round: only here)
            again = json.loads(fleet.controller("sweep", "--inventory", str(inv), "--json").stdout)
            assert not again["controller_ledgers"] and all(r["stopped"] == [] for r in again["hosts"].values()), again

    # a killed controller's SSH masters end by themselves (ControlPersist, 30 s idle): wait for them here
    deadline = time.monotonic() + 45
    while processes_using(fleet.tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_using(fleet.tmp), "controller SSH processes left"
    return steps, points


FLEET_STEPS = ["make fleet private folder", "write fleet ledger", "start on hosts", "write fleet ledger",
               "renew on hosts", "stop on hosts", "delete fleet ledger", "remove fleet private folder"]


def test_walk_every_crash_point_of_the_fleet_inject(clean, tmp_path):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3", "h4"]})
    started = time.monotonic()
    steps, points = walk(fleet, inv, ("--inventory", str(inv), *COMMAND), tmp_path, FLEET_STEPS)
    print(f"\nfleet inject (--inventory, 2 hosts faulted of 4): {len(steps)} steps, {len(points)} crash points "
          f"walked in {time.monotonic() - started:.0f}s")


def test_walk_every_crash_point_of_the_fleet_experiment(clean, tmp_path):
    """`chaos-inject run experiment.json --inventory hosts.yml` (fleet.carrier): the runner's status file, then
    the fleet fault's steps (as the inject's, held past one renewal by the pause), the rollback's stop."""
    fleet = clean
    inv = fleet.inventory({"web": ["h1"], "db": ["h2"]}, name="exp-hosts.yml")
    experiment = {
        "title": "fleet crash walk", "description": "every step of a fleet experiment, killed",
        "method": [{"type": "action", "name": "loss-web-db", "pauses": {"after": 3}, "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "start_network_fault",
            "arguments": {"flow": "web->db", "loss": "50%", "duration": "30s", "lease": "2s"}}}],
        "rollbacks": [{"type": "action", "name": "undo", "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "stop_network_fault"}}]}
    path = fleet.work / "walk-experiment.json"
    path.write_text(json.dumps(experiment))
    started = time.monotonic()
    steps, points = walk(fleet, inv, ("run", str(path), "--inventory", str(inv), "--no-guard", "-q",
                                      "--heartbeat-timeout", "6s"), tmp_path,
                         ["write experiment status", *FLEET_STEPS, "write history", "delete experiment status"],
                         exits=(0, 1))    # no traffic on the flow: the fault matched nothing, a failed run
    print(f"\nfleet experiment (run --inventory, 1 host faulted of 2): {len(steps)} steps, {len(points)} crash "
          f"points walked in {time.monotonic() - started:.0f}s")
