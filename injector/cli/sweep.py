"""`chaos-inject sweep`: remove what dead runs left behind (here, or on every host of an Ansible inventory)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InvalidSpec
from .exits import EXIT_ERROR, EXIT_OK
from .fleet import is_ansible_inventory


def add_sweep_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="remove what dead runs left behind (live runs are left alone)")
    sweep.add_argument("--json", action="store_true")
    sweep.add_argument("--inventory", metavar="FILE", help="an Ansible inventory: stop every fleet fault and sweep "
                       "every host of it (through Ansible)")
    sweep.add_argument("--dry-run", action="store_true", help="say what would be removed, change nothing")


def cmd_sweep(args: argparse.Namespace) -> int:
    if getattr(args, "inventory", None):
        if not is_ansible_inventory(args.inventory):
            raise InvalidSpec("sweep --inventory takes an Ansible inventory (YAML or INI); a local sweep needs none",
                              text=args.inventory, field="inventory")
        from ..fleet.command import cmd_fleet_sweep

        return cmd_fleet_sweep(args)
    from ..kernel.sweep import describe, final_record, leftovers, stray_files, sweep

    if getattr(args, "dry_run", False):
        runs, strays = leftovers(), stray_files()
        if args.json:
            print(json.dumps({"dry_run": True, "dead_runs": runs, "stray_files": strays}, indent=1))
            return EXIT_OK
        for run in runs:
            print(f"dead run {run['run_id']} ({run['kind']}, pid {run['pid']}): sweep would")
            for action in run["actions"]:
                print(f"  {action['action']}")
            if not run["actions"]:
                print("  delete its empty ledger")
        for stray in strays:
            print(f"sweep would remove {stray['path']} ({stray['why']})")
        print(f"{len(runs)} dead run(s), {len(strays)} stray file(s); nothing changed (dry run)")
        return EXIT_OK
    report = sweep()
    if args.json:
        print(json.dumps({"swept_runs": report.swept_runs, "removed": report.removed,
                          "live_runs": report.live_runs, "failures": report.failures,
                          "clsacts_kept": report.clsacts_kept, "fleet_runs": report.fleet_runs}, indent=1))
    else:
        for entry in report.removed:
            if entry["kind"] == "restart":  # a kill-process run died holding its target down
                print(f"restarted what a dead run killed: {entry.get('unit') or entry.get('command')}")
                continue
            if entry["kind"] in ("process", "lab-dir", "netns-lab") or entry.get("members"):  # the labs' objects
                print(f"done: {describe(entry)}")
                continue
            # a dead writer's half-written copy; a gone run's side file; a dead experiment runner's status
            if entry["kind"] in ("temp-file", "run-file", "experiment-status"):
                print(f"removed {entry['path']}")
                continue
            print(f"removed {entry['kind']} on {entry.get('ifname')}"
                  + (f" (netns {entry['netns']})" if entry.get("netns") else ""))
        for kept in report.clsacts_kept:  # a clsact we made, kept while anything is attached to it
            print(f"kept clsact on {kept['ifname']}" + (f" (netns {kept['netns']})" if kept.get("netns") else "")
                  + f": {kept['why']}")
        print(f"swept {len(report.swept_runs)} dead run(s); {len(report.live_runs)} live run(s) left alone")
        for run in report.fleet_runs:  # a dead fleet controller's ledger: its hosts are other machines
            print(f"left fleet run {run['run_id']} (hosts {', '.join(run['hosts'])}): "
                  f"`chaos-inject sweep --inventory {run['inventory']}` cleans them and clears it")
        runs = [r for r in report.swept_runs if final_record(r)]   # the VM lab's, the probe's, the demo's: no run record
        if runs:
            print(f"recorded as failed (owner died; swept): {', '.join(runs)}; see `status`")
        for run_id, entry, error in report.failures:
            print(f"FAILED to remove {entry['kind']} of run {run_id}: {error}", file=sys.stderr)
    return EXIT_ERROR if report.failures else EXIT_OK
