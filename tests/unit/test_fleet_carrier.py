"""The fleet's rounds as one object (FleetFault) and the experiment's fault carrier on it (FleetCarrier), with a
fake of AnsibleRounds: which rounds run on which hosts, refusals, rollbacks, the run directory's hosts."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("ansible", reason="the fleet extra (ansible-core) is installed by make setup")

from chaosinject.errors import InvalidSpec  # noqa: E402
from chaosinject.experiment import parse_experiment  # noqa: E402
from chaosinject.experiment.carrier import carried_by, current_carrier  # noqa: E402
from chaosinject.experiment.report import hosts_table  # noqa: E402
from chaosinject.experiment.runner import RunOptions, run_experiment  # noqa: E402
from chaosinject.fleet import build_fleet_plan, load_inventory  # noqa: E402
from chaosinject.fleet.ansible import HostOutcome, Round  # noqa: E402
from chaosinject.fleet.carrier import FleetCarrier, host_rows  # noqa: E402
from chaosinject.fleet.controller import FleetApplyFailed, FleetFault, FleetRefused, fleet_task  # noqa: E402

pytestmark = pytest.mark.usefixtures("run_root")   # inv_path: tests/unit/conftest.py


class FakeRounds:
    """AnsibleRounds' ``run`` answering as the fault module would: check -> planned, present -> running (the
    counters grow per round), absent -> stopped with the final counters."""

    def __init__(self, unreachable=(), fail_apply=(), lost_later=()):
        self.unreachable, self.fail_apply, self.lost_later = set(unreachable), set(fail_apply), set(lost_later)
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.rounds = 0
        self.closed = False
        self.lock = threading.Lock()

    def run(self, task, args, hosts, *, extravars=None, check=False):
        assert task == "fault"
        with self.lock:
            kind = "check" if check else args.get("state", "present")
            if kind == "present" and any(c[0] == "present" for c in self.calls):
                kind = "renew"
            self.calls.append((kind, tuple(hosts)))
            self.rounds += 1
            n = self.rounds
        outcomes = {}
        for h in hosts:
            flows = extravars["chaos_fleet_flows"][h] if extravars and "flows" in args else None
            if h in self.unreachable or (h in self.lost_later and kind in ("renew", "absent")):
                outcomes[h] = HostOutcome(h, "unreachable", {"msg": "ssh: connect to host: No route to host"})
            elif kind == "check":
                outcomes[h] = HostOutcome(h, "ok", {"run_state": "planned", "plan": f"rules for {flows}"})
            elif kind == "present" and h in self.fail_apply:
                outcomes[h] = HostOutcome(h, "failed", {"msg": "engine refused"})
            else:
                state = "stopped" if kind == "absent" else "running"
                outcomes[h] = HostOutcome(h, "ok", {"run_id": f"r-{h}", "run_state": state, "counters": {
                    "0": {"matched_packets": 10 * n, "delayed_packets": 10 * n, "dropped_packets": 0}}})
        return Round("fault", outcomes, 0)

    def close(self):
        self.closed = True


def _fleet(inv_path, rounds, heartbeat_ns=3_000_000_000):
    plan = build_fleet_plan(["web->db"], load_inventory(inv_path))
    task = fleet_task("fleet-t", {"delay": "200ms"}, direction="egress", engine="auto", duration="10s",
                      lease="3s", heartbeat_timeout="3s")
    return FleetFault(rounds, plan, task, heartbeat_ns=heartbeat_ns)


def test_fleet_task_carries_each_hosts_flows_through_a_host_variable():
    task = fleet_task("n", {"loss": "5%"}, direction="both", engine="ebpf", duration="5s", lease="1s",
                      heartbeat_timeout="9s", seed=4)
    assert task["flows"] == "{{ chaos_fleet_flows[inventory_hostname] }}"
    assert (task["seed"], task["fault"], task["heartbeat_timeout"]) == (4, {"loss": "5%"}, "9s")
    assert "seed" not in fleet_task("n", {}, direction="egress", engine="auto", duration="5s", lease="1s",
                                    heartbeat_timeout="9s")


def test_preflight_refuses_an_unreachable_host_and_changes_nothing(inv_path):
    rounds = FakeRounds(unreachable={"w2"})
    fleet = _fleet(inv_path, rounds)
    fleet.preflight()
    with pytest.raises(FleetRefused, match="unreachable: w2"):
        fleet.admit(allow_unreachable=False)
    assert rounds.calls == [("check", ("w1", "w2"))]


def test_allow_unreachable_leaves_the_host_out_and_says_so(inv_path):
    said = []
    fleet = _fleet(inv_path, FakeRounds(unreachable={"w2"}))
    fleet.warn = said.append
    fleet.preflight()
    assert fleet.admit(allow_unreachable=True) == ["w2"] and fleet.hosts == ["w1"]
    assert "running WITHOUT w2" in said[0]
    fleet.start()
    fleet.stop()
    result = fleet.collect()
    assert [(h["host"], h["verdict"]) for h in result["hosts"]] == [("w1", "ok"), ("w2", "not-run")]
    assert result["left_out"] == ["w2"] and result["verdict"] == "ok"


def test_a_failed_apply_rolls_back_every_reachable_host(inv_path):
    rounds = FakeRounds(fail_apply={"w1"})
    fleet = _fleet(inv_path, rounds)
    fleet.preflight()
    fleet.admit(allow_unreachable=False)
    with pytest.raises(FleetApplyFailed, match="failed on w1: failed: engine refused") as caught:
        fleet.start()
    assert caught.value.not_reached == []
    assert rounds.calls[-1] == ("absent", ("w1", "w2"))
    assert fleet.stop() is fleet.final_round and rounds.calls[-1] == ("absent", ("w1", "w2"))   # once


class GatedRounds(FakeRounds):
    """FakeRounds with AnsibleRounds' ``run_gated``: the check on every host, then, only if every host was ok
    (any_errors_fatal), the apply on every host; in one play."""

    def run_gated(self, task, args, hosts, *, extravars=None):
        gate = self.run(task, args, hosts, extravars=extravars, check=True)
        if not gate.ok:
            return gate, Round(task, {h: HostOutcome(h, "not-run", {}) for h in hosts}, 2)
        return gate, self.run(task, args, hosts, extravars=extravars)


def test_begin_checks_and_applies_in_one_play(inv_path):
    rounds = GatedRounds()
    fleet = _fleet(inv_path, rounds)
    fleet.begin()
    assert rounds.calls == [("check", ("w1", "w2")), ("present", ("w1", "w2"))]
    assert fleet.preflight_round.ok and set(fleet.last) == {"w1", "w2"}


def test_begin_refuses_an_unreachable_host_before_any_host_is_changed(inv_path):
    rounds = GatedRounds(unreachable={"w2"})
    fleet = _fleet(inv_path, rounds)
    with pytest.raises(FleetRefused, match="unreachable: w2.*nothing was changed"):
        fleet.begin()
    assert rounds.calls == [("check", ("w1", "w2"))] and fleet.final_round is None


def test_begin_with_allow_unreachable_checks_first_then_starts_the_rest(inv_path):
    rounds = GatedRounds(unreachable={"w2"})
    fleet = _fleet(inv_path, rounds)
    fleet.begin(allow_unreachable=True)
    assert rounds.calls == [("check", ("w1", "w2")), ("present", ("w1",))] and fleet.left_out == ["w2"]


def test_begin_rolls_back_every_reachable_host_when_the_apply_fails(inv_path):
    rounds = GatedRounds(fail_apply={"w1"})
    fleet = _fleet(inv_path, rounds)
    with pytest.raises(FleetApplyFailed, match="failed on w1"):
        fleet.begin()
    assert rounds.calls[-1] == ("absent", ("w1", "w2"))


def test_hold_renews_every_third_of_the_heartbeat_until_the_end(inv_path):
    rounds = FakeRounds()
    fleet = _fleet(inv_path, rounds, heartbeat_ns=300_000_000)          # a renewal every 0.1 s
    fleet.start()
    t0 = time.monotonic()
    fleet.hold(t0 + 0.45, threading.Event())
    renewals = [c for c in rounds.calls if c[0] == "renew"]
    assert 3 <= len(renewals) <= 5 and time.monotonic() - t0 < 1.0
    assert fleet.last["w1"]["counters"]["0"]["matched_packets"] == 10 * rounds.rounds


def test_hold_ends_at_once_on_stop(inv_path):
    fleet = _fleet(inv_path, FakeRounds())
    fleet.start()
    stop = threading.Event()
    stop.set()
    t0 = time.monotonic()
    fleet.hold(t0 + 30, stop)
    assert time.monotonic() - t0 < 0.5


def _experiment(duration="30s", flow="web->db"):
    return parse_experiment({
        "title": "fleet delay", "description": "d",
        "method": [{"type": "action", "name": "delay-web-db", "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "start_network_fault",
            "arguments": {"flow": flow, "delay": "200ms", "duration": duration}}},
            {"type": "probe", "name": "look", "provider": {"type": "process", "path": "true"},
             "pauses": {"after": 0.3}}],
        "rollbacks": [{"type": "action", "name": "undo", "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "stop_network_fault"}}]})


def test_an_experiment_carries_its_fault_to_the_fleet_and_the_run_directory_gets_the_hosts(tmp_path, inv_path):
    made = []

    def factory(inventory, on_event):
        made.append(FakeRounds())
        return made[-1]

    carrier = FleetCarrier(str(inv_path), heartbeat_timeout="3s", rounds_factory=factory)
    run_dir = tmp_path / "out"
    with carried_by(carrier):
        assert current_carrier() is carrier
        out = run_experiment(_experiment(), RunOptions(run_dir=run_dir, handle_signals=False))
    assert current_carrier() is None
    carrier.write_run_files(run_dir)
    assert (out.state, out.exit_code) == ("completed", 0), out.journal["chaos-inject"]["reason"]
    rounds = made[0]
    kinds = [c[0] for c in rounds.calls]
    assert kinds[:2] == ["check", "present"] and kinds[-1] == "absent" and rounds.closed
    assert all(hosts == ("w1", "w2") for _, hosts in rounds.calls)       # the flow's source hosts only
    fault = out.journal["chaos-inject"]["faults"][0]
    assert fault["carrier"] == "fleet" and fault["state"] == "stopped" and fault["flows"] == ["web->db"]
    assert {h["host"]: h["verdict"] for h in fault["hosts"]} == {"w1": "ok", "w2": "ok"}
    assert set(fault["counters"]) == {"w1/0", "w2/0"}
    report = (run_dir / "report.md").read_text()
    assert "## Hosts" in report and "| w1 | 10.9.0.11 | stopped | ok |" in report
    merged = json.loads((run_dir / "fleet.json").read_text())
    assert merged["verdict"] == "ok" and merged["hosts"] == ["w1", "w2"]
    assert merged["faults"][0]["choices"] == [] and "every host" in merged["faults"][0]["why"][0]
    rows = (run_dir / "fleet-counters.csv").read_text().splitlines()
    assert rows[0].startswith("host,fleet_run,rule,") and [r.split(",")[0] for r in rows[1:]] == ["w1", "w2"]


def test_an_unreachable_host_refuses_the_fault_and_fails_the_experiment(tmp_path, inv_path):
    made = []
    carrier = FleetCarrier(str(inv_path), rounds_factory=lambda i, e: made.append(FakeRounds(unreachable={"w1"}))
                           or made[-1])
    with carried_by(carrier):
        out = run_experiment(_experiment(), RunOptions(run_dir=tmp_path / "out", handle_signals=False))
    assert (out.state, out.exit_code) == ("failed", 1)
    assert out.journal["run"][0]["status"] == "failed"
    assert [c[0] for c in made[0].calls] == ["check"] and made[0].closed       # nothing applied anywhere
    carrier.write_run_files(tmp_path / "out")
    merged = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert merged["verdict"] == "not-run" and "unreachable: w1" in merged["refused"][0]


def test_a_host_lost_mid_fault_is_reported_and_the_others_are_removed(tmp_path, inv_path):
    made = []
    carrier = FleetCarrier(str(inv_path), heartbeat_timeout="2s",
                           rounds_factory=lambda i, e: made.append(FakeRounds(lost_later={"w2"})) or made[-1])
    with carried_by(carrier):
        from chaosinject.experiment.actions import start_network_fault, stop_network_fault

        started = start_network_fault("web->db", "30s", delay="100ms")
        assert [(h["host"], h["state"]) for h in started["hosts"]] == [("w1", "running"), ("w2", "running")]
        time.sleep(0.8)                                  # one renewal (every 0.67 s) finds w2 gone
        stop_network_fault(started["run_id"])
    session = carrier.sessions[0]
    assert session.state == "failed" and "did not reach w2" in session.error
    assert made[0].calls[-1] == ("absent", ("w1", "w2"))
    rows = {r["host"]: r for r in host_rows(session.result())}
    assert rows["w1"]["verdict"] == "ok" and rows["w2"]["verdict"] == "failed"
    assert "No route to host" in rows["w2"]["message"]


def test_an_experiment_whose_fleet_fault_lost_a_host_fails(tmp_path, inv_path):
    carrier = FleetCarrier(str(inv_path), heartbeat_timeout="2s",
                           rounds_factory=lambda i, e: FakeRounds(lost_later={"w2"}))
    exp = _experiment()
    with carried_by(carrier):
        out = run_experiment(exp, RunOptions(run_dir=tmp_path / "out", handle_signals=False))
    assert (out.state, out.exit_code) == ("failed", 1)
    assert any("did not reach w2" in n for n in out.journal["chaos-inject"]["no_effect"])


def test_a_fault_action_with_a_netns_is_refused_on_a_fleet(inv_path):
    carrier = FleetCarrier(str(inv_path), rounds_factory=lambda i, e: FakeRounds())
    with pytest.raises(InvalidSpec, match="route lookup"):
        carrier.start_fault(["web->db"], duration="5s", direction="egress", engine="auto", lease="3s", seed=None,
                            netns="ns1", interface=None, fault={"delay": "1ms"})
    assert "w1 (10.9.0.11)" in carrier.describe_plan(["web->db"])


def test_hosts_table_lists_each_carried_faults_hosts():
    faults = [{"run_id": "local-1", "counters": {}},
              {"run_id": "fleet-1", "hosts": [{"host": "w1", "address": "10.0.0.1", "state": "completed",
                                               "verdict": "ok", "matched": 5, "dropped": 0, "delayed": 5},
                                              {"host": "w2", "verdict": "failed", "message": "a|b"}],
               "choices": ["web: all 2 host(s) -> w1, w2"]}]
    lines = hosts_table(faults)
    assert lines[0] == "## Hosts"
    assert "| `fleet-1` | w1 | 10.0.0.1 | completed | ok | 5 | 0 | 5 |  |" in lines
    assert "| `fleet-1` | w2 |  |  | failed | 0 | 0 | 0 | a/b |" in lines
    assert "- `fleet-1` hosts chosen: web: all 2 host(s) -> w1, w2" in lines
    assert hosts_table(faults[:1]) == []


def test_run_refuses_fleet_options_without_an_ansible_inventory(capsys):
    from chaosinject.cli import main

    assert main(["run", "experiment.json", "--count", "2"]) == 2
    assert "Ansible inventory" in capsys.readouterr().err


FLEET_HOSTS = """
all:
  children:
    api:
      hosts:
        api1: {ansible_host: 10.0.0.11}
        api2: {ansible_host: 10.0.0.12}
    db:
      hosts:
        db1: {ansible_host: 10.0.0.21}
"""


def test_the_fleet_example_dry_run_shows_which_hosts_carry_the_fault(tmp_path, capsys):
    """The README's fleet example: --dry-run plans over the inventory and contacts no host."""
    from pathlib import Path

    from chaosinject.cli import main

    example = Path(__file__).resolve().parents[2] / "injector" / "experiment" / "examples" / "fleet-delay.json"
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(FLEET_HOSTS)
    assert main(["run", str(example), "--inventory", str(hosts), "--dry-run", "--count", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "fleet plan: 1 host(s) carry the fault of api->db:5432/tcp" in out
    assert "COUNT(1) of 2" in out and "10.0.0.21:5432/tcp" in out
    assert "dry run: nothing was run and nothing was changed" in out


def test_a_tc_process_action_is_refused_on_a_fleet(tmp_path, capsys):
    from pathlib import Path

    from chaosinject.cli import main

    seed = Path(__file__).resolve().parents[2] / "injector" / "experiment" / "examples" / "seed-experiment.json"
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(FLEET_HOSTS)
    assert main(["run", str(seed), "--inventory", str(hosts), "--dry-run"]) == 2
    assert "tc commands would run on this controller" in capsys.readouterr().err


def test_chaos_inject_stop_of_a_carried_fleet_fault_rolls_back_every_host(tmp_path, inv_path):
    """The carrier writes the controller's ledger (with real Ansible rounds: a private folder); `chaos-inject stop
    RUN_ID` of that fleet run ends the fault as it ends the CLI's fleet inject: every host rolled back, the fault
    stopped, the ledger gone (stop_runs is what the CLI's `stop` calls)."""
    from chaosinject.files import ledger_dir
    from chaosinject.supervisor import stop_runs

    made = []

    def factory(inventory, on_event):
        made.append(FakeRounds())
        made[-1].private = str(tmp_path / "chaos-fleet-1-x")   # what AnsibleRounds has: the ledger is written
        return made[-1]

    carrier = FleetCarrier(str(inv_path), heartbeat_timeout="3s", rounds_factory=factory)
    with carried_by(carrier):
        from chaosinject.experiment.actions import start_network_fault

        started = start_network_fault("web->db", "60s", delay="100ms")
        run_id = started["run_id"]
        ledger = json.loads((ledger_dir() / f"{run_id}.json").read_text())
        assert ledger["meta"]["kind"] == "fleet" and {e["host"] for e in ledger["entries"]} == {"w1", "w2"}
        t0 = time.monotonic()
        outcomes = stop_runs([run_id], timeout_s=10)
        session = carrier.sessions[0]
        session.wait(10)
    assert [o.outcome for o in outcomes] == ["stopped"], outcomes
    assert time.monotonic() - t0 < 10                    # not the fault's 60 s
    assert session.state == "stopped" and made[0].calls[-1] == ("absent", ("w1", "w2"))
    assert not list(ledger_dir().iterdir()), list(ledger_dir().iterdir())
