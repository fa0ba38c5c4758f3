"""What the fleet's options mean on the command line: is ``--inventory`` an Ansible inventory (then inject, run and
sweep go through the fleet), and the carrier that takes `run`'s network faults to its hosts."""

from __future__ import annotations

import argparse
import sys


def fleet_carrier(args: argparse.Namespace):
    """``run X --inventory hosts.yml`` (an Ansible inventory): the fleet carries the experiment's faults."""
    if not args.inventory or not is_ansible_inventory(args.inventory):
        return None
    from ..blast import parse_percent
    from ..fleet.carrier import FleetCarrier
    from ..fleet.plan import parse_count

    say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    return FleetCarrier(args.inventory, percent=parse_percent(args.percent) if args.percent is not None else None,
                        count=parse_count(args.count) if args.count is not None else None, seed=args.seed,
                        allow_unreachable=args.allow_unreachable, heartbeat_timeout=args.heartbeat_timeout,
                        say=say)


def is_ansible_inventory(path: str) -> bool:
    """Our TOML inventory ends in .toml; anything else given to --inventory is Ansible's (YAML, INI, a folder)."""
    return not str(path).endswith(".toml")
