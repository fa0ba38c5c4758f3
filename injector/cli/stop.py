"""`chaos-inject stop RUN_ID|--all`: ask live runs (CLI, detached, library, host faults) to end, and wait for their
rollback (the work: supervisor.stop_runs)."""

from __future__ import annotations

import json

from ..errors import InvalidSpec
from ..spec import parse_duration_ns
from ..supervisor import stop_runs
from .exits import EXIT_ERROR, EXIT_OK


def add_stop_parser(sub) -> None:
    stop = sub.add_parser("stop", help="end a running fault (CLI, detached or library run) and wait for its "
                                       "rollback")
    which = stop.add_mutually_exclusive_group(required=True)
    which.add_argument("run_ids", nargs="*", default=[], metavar="RUN_ID")
    which.add_argument("--all", action="store_true", help="every live run")
    stop.add_argument("--timeout", default="15s", metavar="DURATION", help="how long to wait (default 15s)")
    stop.add_argument("--json", action="store_true")


def cmd_stop(args) -> int:
    if not args.all and not args.run_ids:
        raise InvalidSpec("name a RUN_ID (see `chaos-inject status`) or --all", field="stop")
    timeout_s = parse_duration_ns(args.timeout, field="timeout") / 1e9
    outcomes = stop_runs(None if args.all else list(args.run_ids), timeout_s=timeout_s)
    if args.json:
        print(json.dumps([o.__dict__ for o in outcomes], indent=1))
    else:
        if not outcomes:
            print("no live runs")
        for o in outcomes:
            text = {"stopped": f"stopped ({o.state or 'stopped'}); every object it created has been removed",
                    "already-gone": f"had already ended ({o.state or 'finished'})",
                    "dead": "its process is dead: the rules have expired; run `chaos-inject sweep`",
                    "timeout": f"did not end within {timeout_s:g}s (its owner reads the request every second; "
                               "see `chaos-inject status`)"}[o.outcome]
            print(f"{o.run_id}: {text}")
    return EXIT_ERROR if any(o.outcome in ("timeout", "dead") for o in outcomes) else EXIT_OK
