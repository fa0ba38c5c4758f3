"""vagrant/inventory.py: the lab VMs as an Ansible inventory (user and key from `vagrant ssh-config`, here a
stand-in `vagrant` on PATH), read back by the fleet's own loader and planned as the seed's flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chaosinject.fleet.inventory import load_inventory
from chaosinject.fleet.plan import build_fleet_plan

VAGRANT_DIR = Path(__file__).resolve().parents[2] / "vagrant"

FAKE_VAGRANT = """#!/bin/sh
# `vagrant ssh-config VM` as vagrant-libvirt prints it: the machine's key first, then the insecure one
printf 'Host %s\\n  HostName 192.168.121.7\\n  User vagrant\\n  Port 22\\n  IdentityFile "/w/machines/%s/private_key"\\n  IdentityFile /root/.vagrant.d/insecure_private_key\\n' "$2" "$2"
"""


def test_groups_addresses_keys_and_the_seed_flow_from_the_api_vm(tmp_path):
    fake = tmp_path / "bin" / "vagrant"
    fake.parent.mkdir()
    fake.write_text(FAKE_VAGRANT)
    fake.chmod(0o755)
    out = tmp_path / "hosts.yml"
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    subprocess.run([sys.executable, str(VAGRANT_DIR / "inventory.py"), str(out)], cwd=VAGRANT_DIR, env=env,
                   check=True, capture_output=True, text=True)
    data = json.loads(out.read_text())
    api = data["all"]["children"]["api"]["hosts"]["lab-api"]
    assert api["ansible_user"] == "vagrant" and api["ansible_ssh_private_key_file"] == "/w/machines/api/private_key"
    assert data["all"]["vars"]["ansible_become"] is True
    inv = load_inventory(out)
    assert {g: inv.groups[g] for g in ("api", "db", "prometheus")} == {
        "api": ("lab-api",), "db": ("lab-db",), "prometheus": ("lab-prometheus",)}
    assert [str(a) for a in inv.hosts["lab-prometheus"].addresses] == ["192.168.56.12"]
    plan = build_fleet_plan(["api->db/tcp"], inv)
    assert plan.hosts == ("lab-api",)
    assert list(plan.assignments["lab-api"]) == ["192.168.56.10->192.168.56.11:5432/tcp"]
