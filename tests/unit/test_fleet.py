"""The fleet without root or hosts: Ansible inventories read by ansible-core, group flows expanded to per-host
flows, blast radius over hosts, the CLI's fleet options, the heartbeat dead-man switch of a run."""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("ansible", reason="the fleet extra (ansible-core) is installed by make setup")

from chaosinject.cli import main  # noqa: E402
from chaosinject.engines.fake import FakeEngine  # noqa: E402
from chaosinject.errors import InvalidSpec  # noqa: E402
from chaosinject.fleet import build_fleet_plan, load_inventory, parse_count, select_hosts  # noqa: E402
from chaosinject.fleet.command import fault_options  # noqa: E402
from chaosinject.fleet.results import host_verdict, result_json, write_fleet_run_dir  # noqa: E402
from chaosinject.plan import Interface, build_plan  # noqa: E402
from chaosinject.session import FaultSession  # noqa: E402
from chaosinject.spec import FaultSpec, parse_flow  # noqa: E402

YAML = """
all:
  vars:
    ansible_user: root
  children:
    web:
      hosts:
        w1: {ansible_host: 10.9.0.11}
        w2: {ansible_host: 10.9.0.12}
        w3: {ansible_host: 10.9.0.13}
    db:
      vars: {chaos_inject_ports: [5432]}
      hosts:
        d1: {ansible_host: 10.9.0.21}
        d2: {ansible_host: "fd00::21", chaos_inject_ports: [5433]}
    backend:
      children:
        db: {}
"""

INI = """
[web]
w1 ansible_host=10.9.0.11
w2 ansible_host=10.9.0.12

[db]
d1 ansible_host=10.9.0.21 chaos_inject_ports='[5432]'

[db:vars]
role=database
"""


@pytest.fixture
def inv(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text(YAML)
    return load_inventory(path)


def test_yaml_inventory_groups_children_and_vars(inv):
    assert inv.groups["web"] == ("w1", "w2", "w3")
    assert inv.groups["db"] == ("d1", "d2")
    assert inv.groups["backend"] == ("d1", "d2")            # a parent group holds its children's hosts
    assert "all" not in inv.groups and "ungrouped" not in inv.groups
    assert str(inv.hosts["d2"].address) == "fd00::21"
    assert inv.hosts["d1"].ports == (5432,) and inv.hosts["d2"].ports == (5433,)   # host var over group var
    assert inv.hosts["w1"].vars["ansible_user"] == "root"
    assert inv.hosts["d1"].groups == ("backend", "db")
    assert inv.members("w2") == ("w2",)
    with pytest.raises(InvalidSpec, match="not a group or host"):
        inv.members("nope")


def test_ini_inventory(tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_text(INI)
    inv = load_inventory(path)
    assert inv.groups == {"web": ("w1", "w2"), "db": ("d1",)}
    assert inv.hosts["d1"].vars["role"] == "database" and inv.hosts["d1"].ports == (5432,)


def test_bad_inventories_are_refused(tmp_path):
    with pytest.raises(InvalidSpec, match="not found"):
        load_inventory(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("all: [this is: not: an inventory\n")
    with pytest.raises(InvalidSpec):
        load_inventory(bad)
    clash = tmp_path / "clash.yml"
    clash.write_text("all:\n  children:\n    web:\n      hosts:\n        db: {ansible_host: 10.0.0.1}\n"
                     "    db:\n      hosts:\n        x: {ansible_host: 10.0.0.2}\n")
    with pytest.raises(InvalidSpec, match="both a group and a host"):
        load_inventory(clash)
    ports = tmp_path / "ports.yml"
    ports.write_text("all:\n  hosts:\n    a: {ansible_host: 10.0.0.1, chaos_inject_ports: [70000]}\n")
    with pytest.raises(InvalidSpec, match="chaos_inject_ports"):
        load_inventory(ports)


def test_group_flow_expands_to_every_source_host_and_destination(inv):
    plan = build_fleet_plan(["web->db/tcp"], inv)
    assert plan.hosts == ("w1", "w2", "w3")
    # d2 is IPv6 only: no IPv4 source reaches it, so only d1's port; each host's own address is the source
    assert plan.assignments["w1"] == ("10.9.0.11->10.9.0.21:5432/tcp",)
    assert plan.assignments["w3"] == ("10.9.0.13->10.9.0.21:5432/tcp",)
    assert plan.choices == ()
    for flows in plan.assignments.values():
        for text in flows:
            parse_flow(text)                                   # the target's parser takes them as they are
    explicit = build_fleet_plan(["w1->db:8080"], inv)
    assert explicit.assignments == {"w1": ("10.9.0.11->10.9.0.21:8080",)}
    literal = build_fleet_plan(["web->10.9.1.0/24", "w2->*:53/udp"], inv)
    assert literal.assignments["w2"] == ("10.9.0.12->10.9.1.0/24", "10.9.0.12->*:53/udp")


def test_ipv6_destinations_are_bracketed(tmp_path):
    path = tmp_path / "v6.yml"
    path.write_text("all:\n  children:\n    a:\n      hosts:\n        x: {ansible_host: 'fd00::1'}\n"
                    "    b:\n      hosts:\n        y: {ansible_host: 'fd00::2', chaos_inject_ports: [443]}\n")
    plan = build_fleet_plan(["a->b"], load_inventory(path))
    assert plan.assignments == {"x": ("fd00::1->[fd00::2]:443",)}


def test_a_host_in_both_groups_is_not_its_own_destination(inv):
    plan = build_fleet_plan(["web->web"], inv)
    assert plan.assignments["w1"] == ("10.9.0.11->10.9.0.12", "10.9.0.11->10.9.0.13")
    assert plan.assignments["w2"] == ("10.9.0.12->10.9.0.11", "10.9.0.12->10.9.0.13")
    with pytest.raises(InvalidSpec, match="carry no flow"):
        build_fleet_plan(["w1->w1"], inv)
    with pytest.raises(InvalidSpec, match="carry no flow"):           # d1 only itself, d2 only another IP version
        build_fleet_plan(["backend->db"], inv)


def test_flow_errors_name_the_problem(inv):
    with pytest.raises(InvalidSpec, match="source is a group or host"):
        build_fleet_plan(["10.9.0.11->db"], inv)
    with pytest.raises(InvalidSpec, match="source is a group or host"):
        build_fleet_plan(["nope->db"], inv)
    with pytest.raises(InvalidSpec, match="'dbx' is not a group or host"):
        build_fleet_plan(["web->dbx"], inv)
    with pytest.raises(InvalidSpec, match="SRC->DST"):
        build_fleet_plan(["web"], inv)
    with pytest.raises(InvalidSpec):
        build_fleet_plan(["web->db:99999"], inv)


def test_host_selection_is_seeded_and_explained():
    members = tuple(f"h{i}" for i in range(1, 9))
    a = select_hosts("web", members, percent=25, seed=3)
    assert len(a.chosen) == 2 and set(a.chosen) <= set(members)
    assert a == select_hosts("web", members, percent=25, seed=3)          # same seed, same hosts
    picks = {select_hosts("web", members, percent=25, seed=s).chosen for s in range(20)}
    assert len(picks) > 5                                                # the seed matters
    assert "PERCENT(25) of 8 = ceil(2) -> 2, seed 3" in a.why
    assert len(select_hosts("web", members, percent=1, seed=1).chosen) == 1       # at least one
    assert select_hosts("web", members, count=3, seed=1).chosen == select_hosts("web", members, count=3,
                                                                               seed=1).chosen
    assert select_hosts("web", members, count=20, seed=1).chosen == members
    assert select_hosts("web", members).chosen == members
    with pytest.raises(InvalidSpec):
        select_hosts("web", members, percent=10, count=1)
    with pytest.raises(InvalidSpec):
        select_hosts("web", members, count=0)
    assert parse_count("COUNT(2)") == 2 and parse_count(" 3 ") == 3
    with pytest.raises(InvalidSpec):
        parse_count("two")


def test_plan_lists_chosen_hosts_and_why(inv):
    plan = build_fleet_plan(["web->db"], inv, percent=34, seed=7)
    chosen = select_hosts("web", ("w1", "w2", "w3"), percent=34, seed=7).chosen
    assert plan.hosts == chosen and len(chosen) == 2
    text = plan.describe()
    assert "blast radius over hosts" in text and "PERCENT(34) of 3" in text and "(not: " in text
    count = build_fleet_plan(["web->db"], inv, count=1, seed=7)
    assert len(count.hosts) == 1 and "COUNT(1) of 3" in count.describe()


def test_fault_options_and_verdicts():
    class Args:
        delay, jitter, loss, partition = "200ms", None, "", True
    opts = fault_options(Args())
    assert opts == {"delay": "200ms", "partition": True}
    assert host_verdict("ok", {"run_state": "completed", "counters": {"0": {"matched_packets": 3}}}) == "ok"
    assert host_verdict("ok", {"run_state": "completed", "counters": {"0": {"matched_packets": 0}}}) == "no-effect"
    assert host_verdict("unreachable", {}) == "failed"


def test_merged_run_directory_has_a_host_column(tmp_path, inv):
    from chaosinject.fleet.ansible import HostOutcome

    plan = build_fleet_plan(["web->db"], inv)
    outcomes = {h: HostOutcome(h, "ok", {"run_id": f"r-{h}", "run_state": "completed",
                                         "counters": {"0": {"matched_packets": i + 1, "dropped_packets": i}}})
                for i, h in enumerate(plan.hosts)}
    outcomes["w3"] = HostOutcome("w3", "failed", {"msg": "boom"})
    result = result_json("fleet-x", plan, outcomes)
    assert result["verdict"] == "failed" and [h["verdict"] for h in result["hosts"]] == ["ok", "ok", "failed"]
    folder = write_fleet_run_dir(str(tmp_path / "run"), result)
    rows = (folder / "counters.csv").read_text().splitlines()
    assert rows == ["host,rule,dropped_packets,matched_packets", "w1,0,0,1", "w2,0,1,2"]
    assert json.loads((folder / "fleet.json").read_text())["fleet_run"] == "fleet-x"


@pytest.mark.parametrize("argv, field", [
    (["--flow", "a->b", "--loss", "5%", "--duration", "5s", "--count", "2"], "count"),
    (["--flow", "a->b", "--loss", "5%", "--duration", "5s", "--heartbeat", "/tmp/x"], "heartbeat"),
    (["sweep", "--inventory", "lab.toml"], "inventory"),
])
def test_cli_refuses_fleet_options_out_of_place(argv, field, capsys):
    assert main(argv) == 2
    assert field in capsys.readouterr().err


def test_cli_fleet_refuses_bad_flows_before_any_host(tmp_path, capsys):
    path = tmp_path / "hosts.yml"
    path.write_text(YAML)
    assert main(["--inventory", str(path), "--flow", "10.9.0.11->db", "--loss", "5%", "--duration", "5s"]) == 2
    assert "source is a group or host" in capsys.readouterr().err
    assert main(["--inventory", str(path), "--flow", "web->db", "--loss", "5%", "--duration", "5s",
                 "--heartbeat-timeout", "1s"]) == 2


def test_a_stale_heartbeat_halts_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    beat = tmp_path / "beat"
    beat.touch()
    plan = build_plan([(parse_flow("10.0.0.1->10.0.0.2"), Interface("eth0"))], FaultSpec(loss_ratio=0.1),
                      duration_ns=60_000_000_000, lease_ns=300_000_000, engine="fake")
    engine = FakeEngine()
    session = FaultSession(plan, engine, heartbeat=(str(beat), 400_000_000)).start()
    for _ in range(5):                     # renewed: still running
        time.sleep(0.15)
        os.utime(beat)
    assert session.state == "running"
    t0 = time.monotonic()
    result = session.wait(timeout=5)
    assert result.state == "halted" and 0.3 < time.monotonic() - t0 < 1.5
    assert engine.steps[-1] == ("undo",)
    final = json.loads(next((tmp_path / "run" / "history").glob("*.json")).read_text())
    assert "heartbeat lost" in final["halt"] and final["heartbeat"]["timeout_s"] == 0.4


def test_the_collection_documents_its_modules_and_its_playbook_parses(tmp_path):
    """ansible-doc reads each module's DOCUMENTATION/EXAMPLES/RETURN (a YAML error fails it); the example
    playbook and the install role pass ansible-playbook --syntax-check."""
    import subprocess
    import sys

    from chaosinject.fleet.ansible import collections_path

    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path(), "ANSIBLE_HOME": str(tmp_path / "home"),
           "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    for module in ("fault", "status", "sweep", "run_archive"):
        doc = subprocess.run([os.path.join(bindir, "ansible-doc"), "--json", f"chaosinject.fleet.{module}"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert doc.returncode == 0, doc.stderr
        assert json.loads(doc.stdout)[f"chaosinject.fleet.{module}"]["doc"]["short_description"]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(YAML.replace("web:", "api:"))
    role_play = tmp_path / "install.yml"
    role_play.write_text("- hosts: api\n  roles: [chaosinject.fleet.install]\n")
    for playbook in (os.path.join(collections_path(), "ansible_collections/chaosinject/fleet/playbooks/"
                                  "seed_experiment.yml"), str(role_play)):
        check = subprocess.run([os.path.join(bindir, "ansible-playbook"), "--syntax-check", "-i", str(inventory),
                                playbook], env=env, capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
