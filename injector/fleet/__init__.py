"""The fleet: chaos-inject's faults on the hosts of an Ansible inventory, carried by Ansible (ansible-runner and
the chaosinject.fleet collection in this repository's ansible/ folder). No netlink, no bcc here: each host runs
its own chaos-inject; this room plans, chooses hosts and drives the rounds.

- inventory: an Ansible inventory read by ansible-core (groups, ansible_host, host vars)
- plan: group flows -> per-host flows; blast radius over hosts (percent / count, seeded)
- ansible: rounds of one collection task through ansible_runner.run
- command: the CLI's fleet commands (inject, sweep)
"""

from .inventory import FleetHost, FleetInventory, load_inventory
from .plan import FleetPlan, HostChoice, build_fleet_plan, parse_count, select_hosts

__all__ = ["FleetHost", "FleetInventory", "FleetPlan", "HostChoice", "build_fleet_plan", "load_inventory",
           "parse_count", "select_hosts"]
