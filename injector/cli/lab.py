"""`chaos-inject lab up|down|status [--json]`: the argument group and its presentation (work in netlab)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..lab.definition import ROLES
from ..lab.state import DEFAULT_STATE_DIR, LabSpec


def add_lab_parser(sub) -> None:
    lab = sub.add_parser(
        "lab", help="the netns lab: api, PostgreSQL, Prometheus and a load generator in namespaces of their own",
        description="`lab up` builds the lab (idempotent; a broken lab is rebuilt), `lab down` removes exactly "
                    "what `lab up` made, `lab status` says what runs, `lab restart ROLE` restarts one role's "
                    "service (the inventory's restart command: a pod-kill's service comes back). While it is "
                    "up, --flow api->db resolves with no --inventory.")
    lab.add_argument("action", choices=("up", "down", "status", "restart"))
    lab.add_argument("role", nargs="?", choices=ROLES, help="restart: the role whose service to restart")
    lab.add_argument("--json", action="store_true", help="print the lab's addresses, URLs and paths as JSON")
    lab.add_argument("--db-timeout", type=float, metavar="SECONDS", help="api's database deadline (default 1)")
    lab.add_argument("--rate", type=float, metavar="PER_S", help="load generator's requests per second (default: 50, or 40%% of the api's capacity measured "
                          "at lab up where that is less)")
    lab.add_argument("--prefix", default="cilab", help=argparse.SUPPRESS)       # parallel labs (tests)
    lab.add_argument("--subnet", default="10.213.0.0/24", help=argparse.SUPPRESS)
    lab.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)


def _print_info(info) -> None:
    print(f"lab {info.prefix} up on {info.subnet} (this host: {info.host_address})")
    for role, address in info.addresses.items():
        ports = ",".join(map(str, info.ports.get(role, []))) or "-"
        pid = info.processes.get(role, "?")
        print(f"  {role:<11} {address:<15} ports {ports:<5} netns {info.netns[role]:<20} pid {pid}")
    print(f"  api         {info.api_url}   (db timeout {info.db_timeout_s:g} s)")
    print(f"  prometheus  {info.prometheus_url}")
    print(f"  inventory   {info.inventory_path}")
    print(f"  requests    {info.request_log} ({info.load_text()})")


def run_lab_command(args: argparse.Namespace) -> int:
    from ..errors import InvalidSpec
    from ..lab.netlab import lab_down, lab_restart, lab_status, lab_up

    spec = LabSpec(prefix=args.prefix, subnet=args.subnet, state_dir=args.state_dir,
                   db_timeout_s=args.db_timeout, load_rate_per_s=args.rate)
    if (args.action == "restart") != (args.role is not None):
        raise InvalidSpec("a ROLE goes with `lab restart` (and only there)", text=args.role or "",
                          field="lab ROLE")
    start = time.monotonic()
    if args.action == "restart":
        info = lab_restart(args.role, spec)
        if args.json:
            print(json.dumps({"role": args.role, "pid": info.processes[args.role],
                              "seconds": round(time.monotonic() - start, 3)}))
        else:
            print(f"lab {args.role} restarted (pid {info.processes[args.role]}) in "
                  f"{time.monotonic() - start:.1f} s")
        return 0
    if args.action == "up":
        info = lab_up(spec)
        if args.json:
            print(json.dumps({**info.to_dict(), "seconds": round(time.monotonic() - start, 3)}, indent=2))
        else:
            _print_info(info)
            print(f"ready in {time.monotonic() - start:.1f} s; `chaos-inject lab down` removes it")
        return 0
    if args.action == "down":
        removed = lab_down(spec)
        if args.json:
            print(json.dumps({"removed": removed, "seconds": round(time.monotonic() - start, 3)}))
        else:
            print(f"lab removed in {time.monotonic() - start:.1f} s" if removed else "no lab was up")
        return 0
    status = lab_status(spec)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    elif status.up:
        _print_info(status.info)
    else:
        print("lab: " + "; ".join(status.problems))
    return 0 if status.up else 1
