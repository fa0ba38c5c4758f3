"""The lab's one definition and its generators (no root): what both the netns lab and the VMs are given."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from chaosinject.errors import InvalidSpec
from chaosinject.lab import definition as labdef
from chaosinject.lab.state import LabSpec
from chaosinject.spec import Inventory, parse_flow
from chaosinject.spec.inventory import DEFAULT_PATHS

REPO = Path(__file__).resolve().parents[2]


def test_netns_addresses_follow_the_definition_inside_the_subnet():
    d = labdef.load_definition()
    addrs = labdef.netns_addresses("10.213.5.0/24", d)
    net = ipaddress.ip_network("10.213.5.0/24")
    assert set(addrs.by_role) == set(labdef.ROLES)
    assert len(set(addrs.by_role.values())) == len(labdef.ROLES)  # one namespace, one address
    for role, a in addrs.by_role.items():
        assert ipaddress.ip_address(a) in net and a == str(net.network_address + d["hosts"][role]["offset"])
    assert labdef.host_address("10.213.5.0/24", d) == "10.213.5.1"


def test_vagrant_roles_share_their_vm_address():
    addrs = labdef.vagrant_addresses()
    assert addrs["load"] == addrs["api"] and len({addrs["api"], addrs["db"], addrs["prometheus"]}) == 3


def test_inventory_resolves_api_to_db_with_netns_and_interface():
    addrs = labdef.netns_addresses("10.213.0.0/24")
    text = labdef.render_inventory(addrs, netns={r: f"cilab-{r}" for r in labdef.ROLES}, interface="lab0")
    inv = Inventory.from_mapping(tomllib.loads(text), source="lab")
    assert inv.get("db").ports == (5432,) and inv.get("api").netns == "cilab-api"
    assert inv.get("prometheus").ports == (9090,) and inv.get("load").ports == ()
    flow = parse_flow("api->db", inv)
    assert flow.src.networks == (ipaddress.ip_network("10.213.0.10/32"),) and flow.src.netns == "cilab-api"
    assert flow.dst.networks == (ipaddress.ip_network("10.213.0.11/32"),) and flow.dst.ports == (5432,)
    assert Path("/run/chaos-inject/lab/inventory.toml") in DEFAULT_PATHS  # found with no --inventory
    # labels/tags for Chaos Mesh selectors and FIS resourceTags (the seed's app: api -> app: postgres)
    assert [h.name for h in inv.select({"app": "api"})] == ["api"]
    assert [h.name for h in inv.select({"app": "postgres"})] == ["db"]
    assert [h.name for h in inv.select({"Environment": "staging", "App": "api"})] == ["api"]


def test_db_config_listens_on_the_lab_address_with_its_own_socket_dir():
    addrs = labdef.netns_addresses("10.213.9.0/24")
    files = labdef.render_db(addrs, socket_dir="/run/x/db")
    assert "listen_addresses = '10.213.9.11'" in files["lab.conf"]
    assert "unix_socket_directories = '/run/x/db'" in files["lab.conf"]  # never the system cluster's
    assert "10.213.9.0/24 scram-sha-256" in files["pg_hba.conf"]
    d = labdef.load_definition()
    assert f"generate_series(1, {d['db']['items']})" in files["seed-db.sql"]
    # single-user mode (-j) ends a statement at ';' + an empty line
    for sql in (files["seed-cluster.sql"], files["seed-db.sql"]):
        assert all(stmt.strip().endswith(";") for stmt in sql.split("\n\n") if stmt.strip())


def test_api_prometheus_and_load_configs_point_at_each_other():
    addrs = labdef.netns_addresses("10.213.0.0/24")
    api = json.loads(labdef.render_api(addrs)["api.json"])
    assert (api["listen"], api["port"], api["db"]["host"], api["db"]["port"]) == ("10.213.0.10", 8080,
                                                                                  "10.213.0.11", 5432)
    assert api["db_timeout_s"] == 1.0
    prom = labdef.render_prometheus(addrs)["prometheus.yml"]
    assert "scrape_interval: 1s" in prom and "targets: ['10.213.0.10:8080']" in prom
    load = json.loads(labdef.render_load(addrs, log_path="/x/requests.bin")["load.json"])
    assert load["url"] == "http://10.213.0.10:8080/items" and load["rate_per_s"] == 50


def test_service_argv_is_the_systemd_execstart(tmp_path):
    addrs = labdef.vagrant_addresses()
    argv = labdef.service_argv("prometheus", addrs, conf_dir=tmp_path, data_dir=tmp_path / "data")
    assert f"--web.listen-address={addrs['prometheus']}:9090" in argv
    unit = labdef.render_unit("db", labdef.service_argv("db", addrs, conf_dir=tmp_path, data_dir=tmp_path),
                              pythonpath="/vagrant")
    assert "User=postgres" in unit and "KillSignal=SIGINT" in unit and f"-D {tmp_path}" in unit
    with pytest.raises(ValueError, match="unknown lab role"):
        labdef.service_argv("cache", addrs, conf_dir=tmp_path, data_dir=tmp_path)


def test_render_cli_writes_every_role_for_the_vms(tmp_path):
    for role in (*labdef.ROLES, "inventory"):
        assert labdef.main(["render", role, "--out", str(tmp_path / role), "--data-dir", str(tmp_path / "data")]) == 0
    assert (tmp_path / "db" / "chaos-lab-db.service").exists() and (tmp_path / "db" / "lab.conf").exists()
    assert "192.168.56.11" in (tmp_path / "db" / "lab.conf").read_text()
    unit = (tmp_path / "api" / "chaos-lab-api.service").read_text()
    assert f"--config {tmp_path / 'api' / 'api.json'}" in unit and "PYTHONPATH=/opt/chaos-inject/python" in unit
    assert Inventory.load(tmp_path / "inventory" / "inventory.toml").get("db").addresses[0].exploded == "192.168.56.11"


@pytest.mark.parametrize("kw, field", [
    ({"prefix": "Lab"}, "prefix"), ({"prefix": "a-very-long-prefix"}, "prefix"),
    ({"subnet": "8.8.8.0/24"}, "subnet"), ({"subnet": "10.213.0.0/30"}, "subnet"), ({"subnet": "nope"}, "subnet"),
    ({"subnet": "fd00::/64"}, "subnet"), ({"db_timeout_s": 0}, "db_timeout_s"), ({"load_rate_per_s": -5}, "load"),
])
def test_lab_spec_refuses_bad_input(kw, field):
    with pytest.raises(InvalidSpec, match=field):
        LabSpec(**kw)


def test_vagrantfile_syntax():
    if not shutil.which("ruby"):
        pytest.skip("ruby missing: `sudo make setup` installs it (Debian ruby) for `ruby -c`")
    out = subprocess.run(["ruby", "-c", str(REPO / "vagrant" / "Vagrantfile")], capture_output=True, text=True)
    assert out.returncode == 0 and "Syntax OK" in out.stdout, out.stderr


STUB = r"""
require "json"
$vms = {}
class Node
  def initialize(name) @name = name end
  def method_missing(*) self end
  def vm() self end
  def network(kind, ip:, **) $vms[@name]["ip"] = ip end
  def provision(kind, path:, **) $vms[@name]["provision"] << path end
  def define(name) $vms[name] = {"provision" => []}; yield Node.new(name) end
end
module Vagrant
  def self.configure(v) yield Node.new(nil) end
end
load ARGV[0]
puts JSON.generate($vms)
"""


def test_vagrantfile_defines_the_vms_of_the_definition(tmp_path):
    """The Vagrantfile evaluated with a stub Vagrant: VMs, addresses and provisioning scripts as lab.json says."""
    if not shutil.which("ruby"):
        pytest.skip("ruby missing: `sudo make setup` installs it (Debian ruby)")
    stub = tmp_path / "stub.rb"
    stub.write_text(STUB)
    out = subprocess.run(["ruby", str(stub), str(REPO / "vagrant" / "Vagrantfile")], capture_output=True, text=True,
                         cwd=REPO / "vagrant")
    assert out.returncode == 0, out.stderr
    vms = json.loads(out.stdout.strip().splitlines()[-1])
    d, addrs = labdef.load_definition(), labdef.vagrant_addresses()
    assert set(vms) == set(d["vagrant"]["vms"])
    for name, roles in d["vagrant"]["vms"].items():
        assert vms[name]["ip"] == addrs[roles[0]]
        assert vms[name]["provision"] == ["provision/common.sh", "provision/chaos-inject.sh",
                                          *(f"provision/{r}.sh" for r in roles)]
        for path in vms[name]["provision"]:
            script = REPO / "vagrant" / path
            assert script.exists()
            assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_lab_facade_all_is_complete():
    import chaosinject.lab as lab

    for name in lab.__all__:
        assert getattr(lab, name) is not None
    with pytest.raises(AttributeError):
        lab.nothing_here  # noqa: B018
