"""The experiment extension's ``record`` block without root: validation with field paths, and resolution of
its flows through an inventory into recorders (built, never started)."""

from __future__ import annotations

import pytest

from chaosinject.experiment.spec import ExperimentInvalid, parse_experiment
from chaosinject.kernel.record_program import cgroup2_root
from chaosinject.record.experiment import record_errors, recording_for
from chaosinject.record.oneway import OneWayRecorder
from chaosinject.record.rtt import RttRecorder
from chaosinject.spec import Inventory

INVENTORY = """
[hosts.api]
addresses = ["10.9.0.1"]
netns = "ns-api"
interface = "veth-api"

[hosts.db]
addresses = ["10.9.0.2", "fd00:9::2"]
ports = [5432]
netns = "ns-db"
interface = "veth-db"
"""


def ext(record, index: int = 0) -> list[dict]:
    return [{"name": "other"}] * index + [{"name": "chaos-inject", "record": record}]


@pytest.fixture
def inventory(tmp_path) -> Inventory:
    path = tmp_path / "inventory.toml"
    path.write_text(INVENTORY)
    return Inventory.load(path)


def experiment(record):
    return parse_experiment({"title": "t", "method": [{"type": "action", "name": "a", "provider": {
        "type": "process", "path": "true"}}], "extensions": ext(record)})


def test_a_valid_block_and_no_block():
    spec, errors = record_errors(ext({"oneway": ["db->api"], "rtt": "api->db", "placement": "socket",
                                      "cgroup": "/sys/fs/cgroup/x", "baseline": "500ms"}, index=1))
    assert errors == []
    assert (spec.path, spec.oneway, spec.rtt, spec.placement, spec.cgroup, spec.baseline_s) == \
        ("extensions[1].record", ("db->api",), ("api->db",), "socket", "/sys/fs/cgroup/x", 0.5)
    assert record_errors([{"name": "chaos-inject"}]) == (None, [])
    assert record_errors([{"name": "someone-else", "record": 3}]) == (None, [])
    assert record_errors(ext({"rtt": ["api->db"]}))[0].baseline_s == 2.0


@pytest.mark.parametrize("block,path,problem", [
    ([], "extensions[0].record", "must be a mapping"),
    ({}, "extensions[0].record", "nothing to record"),
    ({"oneway": []}, "extensions[0].record", "nothing to record"),
    ({"oneway": ["api->db"], "hops": 1}, "extensions[0].record.hops", "unknown key"),
    ({"oneway": "api"}, "extensions[0].record.oneway[0]", "SRC->DST"),
    ({"rtt": ["api->db", 7]}, "extensions[0].record.rtt[1]", "SRC->DST"),
    ({"rtt": {"api": "db"}}, "extensions[0].record.rtt", "must be a list"),
    ({"oneway": ["api->db"], "placement": "nic"}, "extensions[0].record.placement", "tc"),
    ({"rtt": ["api->db"], "cgroup": "relative/cg"}, "extensions[0].record.cgroup", "absolute path"),
    ({"rtt": ["api->db"], "baseline": "2"}, "extensions[0].record.baseline", "unit"),
    ({"rtt": ["api->db"], "baseline": "-1s"}, "extensions[0].record.baseline", ""),
])
def test_each_problem_is_named_by_its_field_path(block, path, problem):
    spec, errors = record_errors(ext(block))
    assert spec is None
    assert any(p == path and problem in msg for p, msg in errors), errors


def test_every_problem_is_listed_at_once():
    _, errors = record_errors(ext({"oneway": [1], "rtt": [2], "placement": "x", "extra": 0}))
    assert {p for p, _ in errors} == {"extensions[0].record.oneway[0]", "extensions[0].record.rtt[0]",
                                      "extensions[0].record.placement", "extensions[0].record.extra"}


def test_flows_resolve_through_the_inventory(inventory):
    rec = recording_for(experiment({"oneway": ["api->db"], "rtt": ["api->db"]}), inventory)
    oneway = [r for r in rec.recorders if isinstance(r, OneWayRecorder)]
    rtt = [r for r in rec.recorders if isinstance(r, RttRecorder)]
    assert len(oneway) == 1 and len(rtt) == 1
    (ow,) = oneway
    assert (ow.sender.name, ow.sender.netns) == ("veth-api", "ns-api")
    assert (ow.receiver.name, ow.receiver.netns) == ("veth-db", "ns-db") and ow.placement == "tc"
    # IPv4 only: api has no IPv6 address; the db's port is the destination port
    assert [(f.label, f.src, f.dst, f.dport) for f in ow.flows] == [("api->db", "10.9.0.1", "10.9.0.2", 5432)]
    assert rtt[0].cgroup == cgroup2_root() and all(f.protocol == "tcp" for f in rtt[0].flows)
    assert any("userspace engine's egress" in n for n in rec.notes)


def test_socket_placement_records_at_the_cgroup(inventory):
    rec = recording_for(experiment({"oneway": ["db->api"], "placement": "socket"}), inventory)
    (ow,) = rec.recorders
    assert ow.placement == "socket" and ow.cgroup == cgroup2_root() and ow.sender.name == "veth-db"
    assert [(f.src, f.dst, f.sport, f.dport) for f in ow.flows] == [("10.9.0.2", "10.9.0.1", None, None)]


@pytest.mark.parametrize("block,path,problem", [
    ({"oneway": ["api->nowhere"]}, "extensions[0].record.oneway[0]", "nowhere"),
    ({"rtt": ["api->db/udp"]}, "extensions[0].record.rtt[0]", "TCP"),
    ({"oneway": ["10.9.0.0/24->db"]}, "extensions[0].record.oneway[0]", "host addresses"),
    ({"rtt": ["api->db"], "cgroup": "/nonexistent/cg"}, "extensions[0].record.cgroup", "not a cgroup v2"),
])
def test_unresolvable_flows_fail_before_anything_runs(inventory, block, path, problem):
    with pytest.raises(ExperimentInvalid) as info:
        recording_for(experiment(block), inventory)
    assert any(p == path and problem in msg for p, msg in info.value.errors), info.value.errors


def test_no_block_no_recording(inventory):
    assert recording_for(parse_experiment({"title": "t", "method": [{"type": "action", "name": "a",
                                           "provider": {"type": "process", "path": "true"}}]}), inventory) is None


def test_parse_experiment_lists_record_problems_with_the_others():
    doc = {"title": "t", "method": [{"type": "action", "name": "a", "provider": {"type": "process", "path": "true"}}],
           "extensions": ext({"rtt": ["api->db"], "placement": "nic"})}
    doc["extensions"][0]["halt"] = {"bogus": 1}
    with pytest.raises(ExperimentInvalid) as info:
        parse_experiment(doc)
    paths = {p for p, _ in info.value.errors}
    assert {"extensions[0].record.placement", "extensions[0].halt.bogus"} <= paths


def test_dry_run_names_what_would_be_recorded(tmp_path, capsys):
    import json

    from chaosinject.cli import main

    doc = {"title": "t", "method": [{"type": "action", "name": "a", "provider": {"type": "process", "path": "true"}}],
           "extensions": ext({"oneway": ["db->api"], "rtt": ["api->db"], "placement": "socket"})}
    path = tmp_path / "e.json"
    path.write_text(json.dumps(doc))
    assert main(["run", str(path), "--dry-run"]) == 0
    assert ("recorded samples: one-way db->api (at the receiver's sockets); RTT api->db; baseline 2s "
            "(extensions[0].record)") in capsys.readouterr().out
