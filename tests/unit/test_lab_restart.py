"""The lab inventory's restart commands and `chaos-inject lab restart ROLE`'s argument checks (no root needed:
everything here is refused or rendered before anything touches the system)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from chaosinject.lab import definition as labdef
from chaosinject.lab.netlab import restart_command
from chaosinject.lab.state import LabSpec
from chaosinject.spec import Inventory

CLI = [sys.executable, "-m", "chaosinject.cli"]


def test_inventory_carries_a_restart_command_per_role():
    spec = LabSpec(prefix="cixy", subnet="10.213.7.0/24", state_dir=Path("/run/chaos-inject/lab x"))
    addrs = labdef.netns_addresses(spec.subnet)
    text = labdef.render_inventory(addrs, netns={r: spec.netns(r) for r in labdef.ROLES}, interface="lab0",
                                   restart={r: restart_command(spec, r) for r in labdef.ROLES})
    inv = Inventory.from_mapping(tomllib.loads(text), source="lab")
    for role in labdef.ROLES:
        argv = shlex.split(inv.get(role).restart)
        assert argv[0] == "exec"
        assert argv[1:] == [sys.executable, "-m", "chaosinject.cli", "lab", "restart", role, "--prefix", "cixy",
                            "--subnet", "10.213.7.0/24", "--state-dir", "/run/chaos-inject/lab x"]
    # without restart commands (the Vagrant lab's inventory) there is no restart key
    plain = Inventory.from_mapping(tomllib.loads(labdef.render_inventory(addrs)), source="lab")
    assert plain.get("api").restart is None


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "lab", *args, "--state-dir", "/nonexistent/chaos-inject-lab"],
                          capture_output=True, text=True)


def test_restart_needs_a_known_role_and_only_restart_takes_one():
    missing = _cli("restart")
    assert missing.returncode == 2 and "ROLE" in missing.stderr
    unknown = _cli("restart", "web")
    assert unknown.returncode == 2 and "invalid choice: 'web'" in unknown.stderr
    extra = _cli("status", "api")
    assert extra.returncode == 2 and "ROLE" in extra.stderr
    assert not Path("/nonexistent/chaos-inject-lab").exists()
