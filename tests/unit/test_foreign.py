"""Chaos Mesh manifests and FIS templates from the seed, translated into our experiment model (no root)."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from chaosinject.experiment.foreign import detect_kind, load_any, translate_chaos_mesh, translate_fis
from chaosinject.experiment.spec import ExperimentInvalid
from chaosinject.spec import Inventory

EXAMPLES = Path(__file__).resolve().parents[2] / "injector/experiment/examples"
CHAOS_MESH = EXAMPLES / "seed-chaos-mesh.yaml"
FIS = EXAMPLES / "seed-fis-template.json"
SEED_TEXT = Path("/work/shared/seed/chaos-engineering.txt")

INVENTORY = """
[hosts.api]
addresses = ["10.9.0.2"]
netns = "ns-api"
labels = {app = "api"}
tags = {Environment = "staging", App = "api"}
restart = "python3 -m http.server 8080"
[hosts.api2]
addresses = ["10.9.0.3"]
netns = "ns-api2"
labels = {app = "api"}
tags = {Environment = "staging", App = "api"}
[hosts.api3]
addresses = ["10.9.0.5"]
netns = "ns-api3"
tags = {Environment = "staging", App = "api"}
[hosts.api4]
addresses = ["10.9.0.6"]
netns = "ns-api4"
tags = {Environment = "staging", App = "api"}
[hosts.api5]
addresses = ["10.9.0.7"]
netns = "ns-api5"
tags = {Environment = "production", App = "api"}
[hosts.db]
addresses = ["10.9.0.4"]
ports = [5432]
netns = "ns-db"
labels = {app = "postgres"}
"""


@pytest.fixture
def inv() -> Inventory:
    return Inventory.from_mapping(tomllib.loads(INVENTORY), source="inv.toml")


def _mesh() -> list:
    return list(yaml.safe_load_all(CHAOS_MESH.read_text()))


def _fis() -> dict:
    return json.loads(FIS.read_text())


def test_examples_are_the_seeds_manifests():
    if not SEED_TEXT.exists():
        pytest.skip(f"{SEED_TEXT} is not on this machine")
    text = SEED_TEXT.read_text()
    for doc in _mesh():     # every document's fields appear in the published text as written
        assert f"name: {doc['metadata']['name']}" in text and f"kind: {doc['kind']}" in text
    assert '"selectionMode": "PERCENT(25)"' in text and '"actionId": "aws:ec2:terminate-instances"' in text
    assert "arn:aws:cloudwatch:us-east-1:123:alarm:ApiErrorRateHigh" in text


def test_detect_kind():
    assert detect_kind(_mesh()) == "chaos-mesh"
    assert detect_kind([_fis()]) == "fis"
    assert detect_kind([json.loads((EXAMPLES / "seed-experiment.json").read_text())]) is None


def test_seed_chaos_mesh_translation(inv):
    doc, notes = translate_chaos_mesh(_mesh(), inv, seed=7, source="seed.yaml")
    pod, net, stress = doc["method"]
    assert all(a["background"] for a in doc["method"])     # applied together, as kubectl apply does
    assert pod["name"] == "api-pod-failure"
    assert pod["provider"]["func"] == "kill_hosts"
    assert pod["provider"]["arguments"]["action"] == "pod-kill"
    assert len(pod["provider"]["arguments"]["hosts"]) == 1 and pod["provider"]["arguments"]["hosts"][0] in ("api", "api2")
    assert net["provider"]["func"] == "network_fault" and net["provider"]["arguments"] == {
        "flow": ["api->db", "api2->db"], "duration": "30s", "direction": "egress", "partition": True}
    assert stress["provider"]["arguments"] == {"workers": 2, "load": 80.0, "duration": "1m", "hosts": ["api", "api2"]}
    text = "\n".join(notes)
    assert "seed 7" in text and "chaos-inject schedule '@every 10m' -- run seed.yaml" in text
    assert "namespaces ['production']: Kubernetes namespaces are ignored" in text
    # the same seed picks the same pod; the picks are the only random part
    assert translate_chaos_mesh(_mesh(), inv, seed=7)[0]["method"][0] == pod


@pytest.mark.parametrize("direction,ours", [("to", "egress"), ("from", "ingress"), ("both", "both")])
def test_network_directions(inv, direction, ours):
    docs = _mesh()
    docs[1]["spec"]["direction"] = direction
    doc, _ = translate_chaos_mesh([docs[1]], inv, seed=1)
    assert doc["method"][0]["provider"]["arguments"]["direction"] == ours


def test_network_delay_loss_and_modes(inv):
    net = copy.deepcopy(_mesh()[1])
    net["spec"].update(action="delay", mode="fixed-percent", value="50", duration="1m30s",
                       delay={"latency": "100ms", "jitter": "10ms", "correlation": "25"})
    args = translate_chaos_mesh([net], inv, seed=1)[0]["method"][0]["provider"]["arguments"]
    assert args["delay"] == "100ms" and args["jitter"] == "10ms" and args["correlation"] == "25%"
    assert args["duration"] == "90s" and len(args["flow"]) == 1          # 50 % of 2 api hosts
    for go, ours in (("1h", "1h"), ("2m0s", "2m"), ("1500ms", "1500ms"), ("250us", "250us")):  # spec.units' format
        net["spec"]["duration"] = go
        assert translate_chaos_mesh([net], inv, seed=1)[0]["method"][0]["provider"]["arguments"]["duration"] == ours
    net["spec"].update(action="loss", loss={"loss": "25"}, mode="fixed", value="2")
    args = translate_chaos_mesh([net], inv, seed=1)[0]["method"][0]["provider"]["arguments"]
    assert args["loss"] == "25%" and args["flow"] == ["api->db", "api2->db"]


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["spec"]["selector"].update(fieldSelectors={"a": "b"}), "selector.fieldSelectors"),
    (lambda d: d["spec"]["selector"].update(nodes=["n1"]), "selector.nodes"),
    (lambda d: d["spec"].update(device="eth0"), "spec.device"),
    (lambda d: d["spec"].update(direction="sideways"), "spec.direction"),
    (lambda d: d["spec"].update(action="netem"), "spec.action"),
    (lambda d: d["spec"]["selector"].update(labelSelectors={"app": "nothing"}), "selector.labelSelectors"),
    (lambda d: d["spec"].update(mode="fixed-percent", value="10"), "spec.value"),      # 10 % of 2 = 0 hosts
    (lambda d: d["spec"].update(mode="sometimes"), "spec.mode"),
    (lambda d: d["spec"].update(duration="soon"), "spec.duration"),
    (lambda d: d["spec"].update(action="loss", loss={"loss": "5", "correlation": "25"}), "loss.correlation"),
    (lambda d: d.update(kind="IOChaos"), ".kind"),
])
def test_chaos_mesh_refusals_name_the_field(inv, edit, field):
    net = copy.deepcopy(_mesh()[1])
    edit(net)
    with pytest.raises(ExperimentInvalid) as err:
        translate_chaos_mesh([net], inv, seed=1)
    assert any(field in path for path, _ in err.value.errors), err.value.errors


def test_stress_memory_and_container_kill_refused(inv):
    docs = _mesh()
    docs[2]["spec"]["stressors"]["memory"] = {"workers": 1, "size": "256MB"}
    docs[0]["spec"]["action"] = "container-kill"
    with pytest.raises(ExperimentInvalid) as err:
        translate_chaos_mesh(docs, inv, seed=1)
    paths = [p for p, _ in err.value.errors]
    assert any(p.endswith("stressors.memory") for p in paths) and any(p.endswith("spec.action") for p in paths)


def test_pod_failure_holds_for_its_duration(inv):
    pod = copy.deepcopy(_mesh()[0])
    pod["spec"].update(action="pod-failure", mode="all", duration="45s")
    args = translate_chaos_mesh([pod], inv, seed=1)[0]["method"][0]["provider"]["arguments"]
    assert args == {"hosts": ["api", "api2"], "action": "pod-failure", "duration": "45s"}


def test_seed_fis_translation(inv):
    doc, notes = translate_fis(_fis(), inv, seed=3, prometheus_url="http://10.0.0.9:9090")
    (act,) = doc["method"]
    # tags Environment=staging, App=api: api..api4 (api5 is production); PERCENT(25) of 4 = 1
    assert act["provider"]["func"] == "kill_hosts" and act["provider"]["arguments"]["action"] == "terminate"
    assert len(act["provider"]["arguments"]["hosts"]) == 1
    halt = doc["extensions"][0]["halt"]["prometheus"]
    assert halt == {"url": "http://10.0.0.9:9090", "max": 0,
                    "query": 'sum(ALERTS{alertname="ApiErrorRateHigh",alertstate="firing"}) or vector(0)'}
    text = "\n".join(notes)
    assert "roleArn ignored" in text and "chaos-inject status" in text and "ApiErrorRateHigh" in text


def test_fis_selection_modes_and_order(inv):
    tpl = _fis()
    tpl["targets"]["ec2-instances"]["selectionMode"] = "COUNT(2)"
    tpl["actions"]["stop"] = {"actionId": "aws:ec2:stop-instances", "targets": {"Instances": "ec2-instances"},
                              "parameters": {"startInstancesAfterDuration": "PT1M30S"},
                              "startAfter": ["wait"]}
    tpl["actions"]["wait"] = {"actionId": "aws:fis:wait", "parameters": {"duration": "PT5S"},
                              "startAfter": ["terminate-ec2"]}
    doc, _ = translate_fis(tpl, inv, seed=3)
    assert [a["name"] for a in doc["method"]] == ["terminate-ec2", "wait", "stop"]
    assert not any(a.get("background") for a in doc["method"])       # startAfter: one after the other
    assert doc["method"][1]["provider"] == {"type": "python", "module": "time", "func": "sleep",
                                            "arguments": {"secs": 5.0}}
    assert doc["method"][2]["provider"]["arguments"]["duration"] == "90s"
    assert len(doc["method"][0]["provider"]["arguments"]["hosts"]) == 2
    tpl["targets"]["ec2-instances"]["selectionMode"] = "ALL"
    assert translate_fis(tpl, inv, seed=3)[0]["method"][0]["provider"]["arguments"]["hosts"] == \
        ["api", "api2", "api3", "api4"]


@pytest.mark.parametrize("edit,field", [
    (lambda t: t["targets"]["ec2-instances"].update(resourceType="aws:rds:db"), "resourceType"),
    (lambda t: t["targets"]["ec2-instances"].update(resourceArns=["arn:aws:ec2:x"]), "resourceArns"),
    (lambda t: t["targets"]["ec2-instances"].update(selectionMode="SOME"), "selectionMode"),
    (lambda t: t["targets"]["ec2-instances"].update(selectionMode="COUNT(9)"), "ec2-instances.value"),
    (lambda t: t["actions"]["terminate-ec2"].update(actionId="aws:ssm:send-command"), "actionId"),
    (lambda t: t["actions"]["terminate-ec2"].update(startAfter=["nothing"]), "actions"),
    (lambda t: t["stopConditions"][0].update(source="aws:sns:topic"), "stopConditions[0].source"),
])
def test_fis_refusals_name_the_field(inv, edit, field):
    tpl = _fis()
    edit(tpl)
    with pytest.raises(ExperimentInvalid) as err:
        translate_fis(tpl, inv, seed=1)
    assert any(field in path for path, _ in err.value.errors), err.value.errors


def test_load_any_parses_into_an_experiment(tmp_path, inv):
    exp, kind, notes = load_any(CHAOS_MESH, inventory=inv, seed=2)
    assert kind == "chaos-mesh" and [a.name for a in exp.method] == ["api-pod-failure", "api-to-db-partition",
                                                                       "api-cpu-stress"]
    exp, kind, _ = load_any(FIS, inventory=inv, seed=2)
    assert kind == "fis" and exp.guard.prometheus_query
    exp, kind, notes = load_any(EXAMPLES / "seed-experiment.json")
    assert kind == "chaos-toolkit" and notes == []


def test_dry_run_shows_the_translation(tmp_path, capsys):
    from chaosinject.cli import main

    inv_path = tmp_path / "inv.toml"
    inv_path.write_text(INVENTORY)
    assert main(["run", str(CHAOS_MESH), "--dry-run", "--inventory", str(inv_path), "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "note: translated from chaos-mesh" in out and "hosts picked with seed 5" in out
    assert "network_fault" in out and "<- FAULT: would apply flow=['api->db', 'api2->db']" in out
    assert "HOST FAULT: would kill the processes" in out and "stress_cpu" in out
    assert main(["run", str(FIS), "--dry-run", "--inventory", str(inv_path), "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "note: translated from fis" in out and "ALERTS{alertname=\"ApiErrorRateHigh\"" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(CHAOS_MESH.read_text().replace("labelSelectors:\n      app: api\n  direction",
                                                  "labelSelectors:\n      app: nobody\n  direction"))
    assert main(["run", str(bad), "--dry-run", "--inventory", str(inv_path)]) == 2
    assert "no inventory host has labels {'app': 'nobody'}" in capsys.readouterr().err
