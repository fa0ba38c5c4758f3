"""The fleet controller's ledger (fleet/ledger.py, issue #18): written before any host is asked to start, its
hosts cleared as they come back clean, listed by `status`/`sweep --dry-run`, left by a local sweep and cleared
by `sweep --inventory` of its inventory only; and the controller's crash points, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="the fleet extra (ansible-core) is installed by make setup")

from chaosinject import crashpoints  # noqa: E402
from chaosinject.files import ledger_dir  # noqa: E402
from chaosinject.fleet import build_fleet_plan, load_inventory  # noqa: E402
from chaosinject.fleet.ansible import HostOutcome, Round  # noqa: E402
from chaosinject.fleet.controller import FleetApplyFailed, FleetFault, fleet_task  # noqa: E402
from chaosinject.fleet.ledger import FleetLedger, clear_swept, dead_for_inventory, fleet_ledgers  # noqa: E402
from chaosinject.kernel.sweep import leftovers, sweep  # noqa: E402

pytestmark = pytest.mark.usefixtures("run_root")   # inv_path: tests/unit/conftest.py


def ledger_file(name="fleet-t") -> dict | None:
    path = ledger_dir() / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


class Rounds:
    """Answers like the fault module; records, at each round, what the ledger said just before it ran."""

    def __init__(self, *, fail_apply=(), unreachable_at_end=()):
        self.fail_apply, self.unreachable_at_end = set(fail_apply), set(unreachable_at_end)
        self.seen: list[tuple[str, dict | None]] = []

    def run(self, task, args, hosts, *, extravars=None, check=False):
        kind = "check" if check else args.get("state", "present")
        self.seen.append((kind, ledger_file()))
        outcomes = {}
        for h in hosts:
            if kind == "absent" and h in self.unreachable_at_end:
                outcomes[h] = HostOutcome(h, "unreachable", {"msg": "no route to host"})
            elif kind == "present" and h in self.fail_apply:
                outcomes[h] = HostOutcome(h, "failed", {"msg": "engine refused"})
            else:
                outcomes[h] = HostOutcome(h, "ok", {"run_id": f"r-{h}", "counters": {},
                                                    "run_state": "stopped" if kind == "absent" else "running"})
        return Round("fault", outcomes, 0)


def _fleet(inv_path, rounds, *, private=None):
    plan = build_fleet_plan(["web->db"], load_inventory(inv_path))
    task = fleet_task("fleet-t", {"loss": "50%"}, direction="egress", engine="auto", duration="10s",
                      lease="3s", heartbeat_timeout="3s")
    ledger = FleetLedger("fleet-t", str(inv_path), private=private)
    return FleetFault(rounds, plan, task, heartbeat_ns=3_000_000_000, ledger=ledger)


def _hosts(data):
    return {e["host"]: e["state"] for e in data["entries"]}


def test_the_ledger_names_every_host_before_the_start_round_and_goes_when_all_stopped(inv_path):
    rounds = Rounds()
    fleet = _fleet(inv_path, rounds)
    fleet.preflight()
    fleet.admit(allow_unreachable=False)
    assert rounds.seen == [("check", None)]           # the dry-run round changes nothing: no ledger yet
    fleet.start()
    kind, before_start = rounds.seen[-1]
    assert kind == "present" and _hosts(before_start) == {"w1": "planned", "w2": "planned"}
    meta = before_start["meta"]
    assert meta["kind"] == "fleet" and meta["inventory"] == str(inv_path) and meta["fleet_run"] == "fleet-t"
    assert _hosts(ledger_file()) == {"w1": "started", "w2": "started"}
    fleet.renew()
    assert _hosts(rounds.seen[-1][1]) == {"w1": "started", "w2": "started"}
    fleet.stop()
    assert ledger_file() is None and list(ledger_dir().iterdir()) == []


def test_a_host_the_stop_did_not_reach_stays_in_the_ledger(inv_path):
    fleet = _fleet(inv_path, Rounds(unreachable_at_end={"w2"}))
    fleet.preflight()
    fleet.start()
    fleet.stop()
    assert _hosts(ledger_file()) == {"w2": "started"}
    assert not fleet.ended_everywhere()


def test_a_rollback_clears_the_hosts_it_reached(inv_path):
    fleet = _fleet(inv_path, Rounds(fail_apply={"w1"}))
    fleet.preflight()
    with pytest.raises(FleetApplyFailed):
        fleet.start()
    assert ledger_file() is None                      # w1 failed, w2 took it; the rollback reached both


def test_the_controllers_crash_points_in_order(inv_path, tmp_path, monkeypatch):
    trace = tmp_path / "trace"
    monkeypatch.setenv(crashpoints.TRACE_ENV, str(trace))
    crashpoints._reset_for_tests()
    fleet = _fleet(inv_path, Rounds())
    fleet.preflight()
    fleet.start()
    fleet.renew()
    fleet.renew()                                     # a renewal is one crash point however many there are
    fleet.stop()
    assert [line.split("\t")[1] for line in trace.read_text().splitlines()] == [
        "write fleet ledger", "start on hosts", "write fleet ledger", "renew on hosts", "stop on hosts",
        "delete fleet ledger"]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _dead_ledger(inv_path, hosts: dict[str, str], *, private: Path | None = None, name="fleet-dead") -> Path:
    """A ledger as a killed controller leaves it (its pid is gone)."""
    ledger = FleetLedger(name, str(inv_path), private=str(private) if private else None)
    ledger.pid, ledger.pid_start_ticks = _dead_pid(), None
    ledger.plan(hosts)
    ledger.started(h for h, s in hosts.items() if s == "started")
    return ledger.path


def test_status_and_sweep_dry_run_list_a_dead_controllers_ledger_and_a_local_sweep_leaves_it(inv_path):
    path = _dead_ledger(inv_path, {"w1": "started", "w2": "planned"})
    runs = [r for r in leftovers() if r["run_id"] == "fleet-dead"]
    assert len(runs) == 1 and runs[0]["kind"] == "fleet"
    actions = [a["action"] for a in runs[0]["actions"]]
    assert len(actions) == 2 and all(f"sweep --inventory {inv_path}" in a for a in actions)
    assert any("host w1 (started)" in a for a in actions) and any("host w2 (planned)" in a for a in actions)
    report = sweep()
    assert path.exists() and report.swept_runs == [] and report.failures == []
    assert report.fleet_runs == [{"run_id": "fleet-dead", "inventory": str(inv_path), "hosts": ["w1", "w2"]}]


def test_sweep_inventory_clears_only_clean_hosts_of_its_inventory(inv_path, tmp_path):
    private = tmp_path / "chaos-fleet-abc123"
    (private / "cp").mkdir(parents=True)
    path = _dead_ledger(inv_path, {"w1": "started", "w2": "started"}, private=private)
    other_inv = tmp_path / "other.yml"
    other_inv.write_text(inv_path.read_text())
    other = _dead_ledger(other_inv, {"w1": "started"}, name="fleet-other")
    live = FleetLedger("fleet-live", str(inv_path))          # this process: a live controller
    live.plan(["w1"])

    dry = clear_swept(str(inv_path), ["w1", "w2"], inventory_hosts=["w1", "w2", "d1"], dry_run=True)
    assert dry == [{"run_id": "fleet-dead", "cleared": ["w1", "w2"], "left": [], "deleted": True,
                    "not_in_inventory": []}]
    assert path.exists() and private.exists()

    part = clear_swept(str(inv_path), ["w1"], inventory_hosts=["w1", "w2", "d1"])   # w2 unreachable
    assert part[0]["cleared"] == ["w1"] and part[0]["left"] == ["w2"] and not part[0]["deleted"]
    assert _hosts(json.loads(path.read_text())) == {"w2": "started"} and private.exists()

    done = clear_swept(str(inv_path), ["w1", "w2"], inventory_hosts=["w1", "w2", "d1"])
    assert done[0]["deleted"] and not path.exists() and not private.exists()
    assert other.exists() and live.path.exists()         # another inventory's, a live controller's: untouched
    assert [d["run_id"] for d in dead_for_inventory(str(other_inv))] == ["fleet-other"]
    assert {d["run_id"]: d["alive"] for d in fleet_ledgers()} == {"fleet-other": False, "fleet-live": True}


def test_a_host_no_longer_in_the_inventory_is_never_cleared(inv_path):
    path = _dead_ledger(inv_path, {"w1": "started", "gone": "started"})
    out = clear_swept(str(inv_path), ["w1", "gone"], inventory_hosts=["w1", "w2", "d1"])
    assert out[0]["cleared"] == ["w1"] and out[0]["not_in_inventory"] == ["gone"] and out[0]["left"] == ["gone"]
    assert _hosts(json.loads(path.read_text())) == {"gone": "started"}


def test_a_private_folder_not_ours_is_never_removed(inv_path, tmp_path):
    foreign = tmp_path / "somebody-elses"
    foreign.mkdir()
    _dead_ledger(inv_path, {"w1": "started"}, private=foreign)
    assert clear_swept(str(inv_path), ["w1"], inventory_hosts=["w1"])[0]["deleted"]
    assert foreign.is_dir()


def test_the_cli_status_and_sweeps_say_what_sweep_inventory_would_do(inv_path, tmp_path):
    _dead_ledger(inv_path, {"w1": "started"})
    env = {"CHAOS_INJECT_RUN_DIR": str(ledger_dir().parent), "PATH": "/usr/bin:/bin"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "chaosinject.cli", *args], capture_output=True, text=True,
                              env=env, timeout=60)

    status = cli("status")
    assert "fleet-dead" in status.stdout and "DEAD controller" in status.stdout, status.stdout + status.stderr
    assert f"sweep --inventory {inv_path}" in status.stdout
    dry = cli("sweep", "--dry-run")
    assert "dead run fleet-dead (fleet" in dry.stdout and "host w1 (started)" in dry.stdout, dry.stdout
    local = cli("sweep")
    assert local.returncode == 0, local.stderr
    assert f"left fleet run fleet-dead (hosts w1): `chaos-inject sweep --inventory {inv_path}`" in local.stdout
    assert (ledger_dir() / "fleet-dead.json").exists()


def test_a_dead_controllers_ansible_folder_is_found_by_its_pid_and_a_live_ones_is_not(tmp_path):
    from chaosinject.fleet.ledger import orphaned_private_folders

    dead = tmp_path / f"chaos-fleet-{_dead_pid()}-x1"
    mine = tmp_path / f"chaos-fleet-{os.getpid()}-x2"
    parent = tmp_path / f"chaos-fleet-{os.getppid()}-x3"      # a live process that is not this one
    other = tmp_path / "chaos-fleet-notapid"
    for folder in (dead, mine, parent, other):
        folder.mkdir()
    assert orphaned_private_folders(str(tmp_path)) == [dead]


def test_a_temporary_directory_too_long_for_ssh_sockets_puts_the_ansible_folder_in_tmp(tmp_path, monkeypatch):
    """The VM lab's TMPDIR (its work directory's tmp/) made every host 'unreachable': ssh could not bind its
    control socket, whose path is over 107 bytes there."""
    import tempfile

    from chaosinject.fleet.ansible import AnsibleRounds
    from chaosinject.fleet.ledger import SOCKET_PATH_MAX, SOCKET_TAIL, private_folder_parent

    long_dir = tmp_path / ("d" * (SOCKET_PATH_MAX - len(str(tmp_path))))
    long_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
    assert private_folder_parent() == "/tmp"
    with AnsibleRounds(str(tmp_path / "hosts.yml")) as rounds:
        assert Path(rounds.private).parent == Path("/tmp")
        assert len(rounds.private) + len("/cp/") + 10 + 17 <= SOCKET_PATH_MAX
    assert not Path(rounds.private).exists()
    short = tmp_path.parents[1]      # /tmp/pytest-of-<user>: short enough, the temporary directory itself
    assert len(str(short)) + SOCKET_TAIL <= SOCKET_PATH_MAX
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    assert private_folder_parent() == str(short)


def test_chaos_inject_stop_of_a_fleet_run_rolls_back_every_host(inv_path, capsys):
    """`chaos-inject stop RUN_ID` (supervisor.stop_runs: the ledger's stop request) ends the CLI's fleet inject
    as Ctrl-C does: every host stopped, the ledger and the request gone."""
    import argparse
    import threading

    from chaosinject.fleet.command import _run
    from chaosinject.supervisor import stop_runs

    rounds = Rounds()
    fleet = _fleet(inv_path, rounds)
    fleet.preflight()
    outcomes = []

    def stopper():
        for _ in range(200):
            if ledger_file() is not None and rounds.seen[-1][0] == "present":
                break
            time.sleep(0.02)
        outcomes.extend(stop_runs(["fleet-t"], timeout_s=10))

    thread = threading.Thread(target=stopper)
    thread.start()
    args = argparse.Namespace(record=None, json=True, quiet=True)
    started = time.monotonic()
    code = _run(args, fleet, duration_ns=60_000_000_000)
    thread.join(15)
    assert code == 0 and time.monotonic() - started < 10
    assert [(o.run_id, o.outcome) for o in outcomes] == [("fleet-t", "stopped")]
    assert [kind for kind, _ in rounds.seen][-1] == "absent"
    assert json.loads(capsys.readouterr().out)["stopped_by"] == "stop request"
    assert list(ledger_dir().iterdir()) == []
