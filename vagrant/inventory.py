"""The lab VMs as an Ansible inventory, for `chaos-inject run ... --inventory` from the machine that runs them:
    python vagrant/inventory.py OUT.yml        (in the Vagrant project: vagrant/, with the lab's environment)
Groups api, db and prometheus (one VM each, hosts lab-api, lab-db, lab-prometheus: a host named like its group
makes Ansible warn); ansible_host is the VM's lab address (lab.json's vagrant subnet), so flows between the groups
resolve to the addresses the services use; chaos_inject_ports are the roles' ports (`api->db` means db:5432).
User and key come from `vagrant ssh-config` (vagrant-libvirt replaced the insecure key at `vagrant up`); the
fault module runs as root through sudo (become) with the chaos-inject that provision/chaos-inject.sh installed.
vagrant/lab.sh writes it (CHAOS_LAB_CONTROLLER=host); on a laptop's `vagrant up` it works the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chaosinject.lab.definition import load_definition, vagrant_addresses

CHAOS_BIN = "/usr/local/bin/chaos-inject"     # provision/chaos-inject.sh's link to its venv


def ssh_config(vm: str) -> dict[str, str]:
    """`vagrant ssh-config VM` as {option: first value} (IdentityFile may be listed more than once)."""
    out = subprocess.run(["vagrant", "ssh-config", vm], capture_output=True, text=True, check=True).stdout
    conf: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key not in conf:
            conf[key] = value.strip().strip('"')
    return conf


def inventory() -> dict:
    d = load_definition()
    addrs = vagrant_addresses(d)
    children = {}
    for vm, roles in d["vagrant"]["vms"].items():
        conf = ssh_config(vm)
        ports = [p for role in roles for p in d["hosts"][role]["ports"]]
        children[vm] = {"vars": {"chaos_inject_ports": ports} if ports else {}, "hosts": {f"lab-{vm}": {
            "ansible_host": addrs[roles[0]], "ansible_user": conf["User"],
            "ansible_ssh_private_key_file": conf["IdentityFile"]}}}
    return {"all": {"vars": {
        "ansible_become": True, "ansible_python_interpreter": "/usr/bin/python3", "chaos_inject_bin": CHAOS_BIN,
        # the VMs are made and destroyed by this lab: new host keys every time
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"},
        "children": children}}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    Path(argv[0]).write_text(json.dumps(inventory(), indent=1) + "\n")     # JSON is YAML
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
