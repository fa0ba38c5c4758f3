"""Crash points of the fleet controller (issue #18 on the fleet): `chaos-inject --inventory hosts.yml --flow
web->db --loss 50% --duration Ns` is traced once to count its state-changing steps (its fleet ledger's writes,
the rounds that start, renew and stop the fault on the hosts), then SIGKILLed by itself right before each step
and right after the last (CHAOS_INJECT_CRASH_AT, injector/crashpoints.py). After each crash `sweep --inventory`
must leave no fault, qdisc, filter, ledger or run file on any host, and no fleet ledger or Ansible folder of the
controller. The number of crash points is printed (pytest -s). CHAOS_INJECT_CRASH_WALK=full also walks after
every step.
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
    runs = fleet.ctl_run_dir / "runs"
    left = [p.name for p in runs.iterdir()] if runs.is_dir() else []
    assert not left, f"{where}: controller ledger files left: {left}"
    folders = [p.name for p in fleet.tmp.glob("chaos-fleet-*")]
    assert not folders, f"{where}: controller Ansible folders left: {folders}"


def test_walk_every_crash_point_of_the_fleet_inject(clean, tmp_path):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3", "h4"]})
    before = {h: host_state(fleet, h) for h in fleet.hosts}
    started = time.monotonic()

    trace = tmp_path / "trace"
    done = fleet.controller("--inventory", str(inv), *COMMAND, env={"CHAOS_INJECT_CRASH_TRACE": str(trace)})
    assert done.returncode in (0, 4), done.stdout + done.stderr
    steps = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]
    assert steps == ["write fleet ledger", "start on hosts", "write fleet ledger", "renew on hosts",
                     "stop on hosts", "delete fleet ledger"], steps
    assert_nothing_left(fleet, before, "the traced run")

    points = [f"{n}:before" for n in range(1, len(steps) + 1)] + [f"{len(steps)}:after"]
    if FULL_WALK:
        points += [f"{n}:after" for n in range(1, len(steps))]
    for point in points:
        n, when = point.split(":")
        where = f"crash {when} step {n} ({steps[int(n) - 1]})"
        crashed = fleet.controller("--inventory", str(inv), *COMMAND, env={"CHAOS_INJECT_CRASH_AT": point})
        assert crashed.returncode == -9, f"{where}: not killed ({crashed.returncode}): {crashed.stderr[-800:]}"
        ledgers = list((fleet.ctl_run_dir / "runs").glob("fleet-*.json"))
        # the ledger exists from its first write until its deletion
        assert bool(ledgers) == (point not in ("1:before", f"{len(steps)}:after")), f"{where}: {ledgers}"
        if ledgers:
            status = fleet.controller("status")
            assert "DEAD controller" in status.stdout, f"{where}: {status.stdout}"
            dry = fleet.controller("sweep", "--dry-run")
            assert f"sweep --inventory {inv}" in dry.stdout, f"{where}: {dry.stdout}"
        swept = fleet.controller("sweep", "--inventory", str(inv), "--json")
        assert swept.returncode == 0, f"{where}: sweep --inventory failed: {swept.stdout} {swept.stderr}"
        report = json.loads(swept.stdout)
        assert [led["deleted"] for led in report["controller_ledgers"]] == [True] * len(ledgers), report
        assert_nothing_left(fleet, before, where)
        again = json.loads(fleet.controller("sweep", "--inventory", str(inv), "--json").stdout)
        assert not again["controller_ledgers"] and all(r["stopped"] == [] for r in again["hosts"].values()), again

    # a killed controller's SSH masters end by themselves (ControlPersist, 30 s idle): wait for them here
    deadline = time.monotonic() + 45
    while processes_using(fleet.tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_using(fleet.tmp), "controller SSH processes left"
    print(f"\nfleet inject (--inventory, 2 hosts faulted of 4): {len(steps)} steps, {len(points)} crash points "
          f"walked in {time.monotonic() - started:.0f}s")
