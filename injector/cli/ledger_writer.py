"""The one writer of the VM lab's ledger for its bash scripts (vagrant/lib/nslibvirt.sh), not a subcommand:

    python -m chaosinject.cli.ledger_writer open RUN_ID --owner PID [--tag TAG]
    python -m chaosinject.cli.ledger_writer add RUN_ID netns NAME | process PID [--role ROLE] | lab-dir PATH
    python -m chaosinject.cli.ledger_writer close RUN_ID

Each call rewrites the ledger atomically (kernel/ledger.py, the same ledgers as every run's: `sweep` and `status`
read them). ``open`` names the owner (the script's pid; its start time is read here, so a reused pid is never taken
for it); ``add`` is called before the object is made, except for a process (its pid exists only once it runs: its
start time is read here, and the namespace entry covers the moment between); ``close`` after the script's own
teardown. Exit 0 on success, 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..kernel.ledger import Ledger, ledger_dir, process_start_ticks

KIND = "vm-lab"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaosinject.cli.ledger_writer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    op = sub.add_parser("open")
    op.add_argument("run_id")
    op.add_argument("--owner", type=int, required=True)
    op.add_argument("--tag", default="")
    add = sub.add_parser("add")
    add.add_argument("run_id")
    add.add_argument("kind", choices=("netns", "process", "lab-dir"))
    add.add_argument("value")
    add.add_argument("--role", default="process")
    close = sub.add_parser("close")
    close.add_argument("run_id")
    return parser


def _valid_run_id(run_id: str) -> str:
    if not run_id or "/" in run_id or run_id.startswith(".") or not run_id.startswith("vm-"):
        raise ValueError(f"not a VM lab run id (vm-...): {run_id!r}")
    return run_id


def _load(run_id: str) -> Ledger:
    path = ledger_dir() / f"{_valid_run_id(run_id)}.json"
    ledger = Ledger.load(path)
    if ledger.meta.get("kind") != KIND:
        raise ValueError(f"{path} is not a VM lab ledger")
    return ledger


def entry_for(kind: str, value: str, role: str) -> dict | None:
    """The ledger entry of one object (None: a process that has already ended, nothing to record)."""
    if kind == "netns":
        return {"kind": "netns", "name": value, "members": "kill"}
    if kind == "lab-dir":
        return {"kind": "lab-dir", "path": os.path.abspath(value)}
    pid = int(value)
    ticks = process_start_ticks(pid)
    return None if ticks is None else {"kind": "process", "pid": pid, "starttime": ticks, "role": role}


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "open":
        ticks = process_start_ticks(args.owner)
        if ticks is None:
            raise ValueError(f"owner {args.owner} is not running")
        ledger = Ledger(run_id=_valid_run_id(args.run_id), meta={"kind": KIND, "tag": args.tag},
                        pid=args.owner, pid_start_ticks=ticks)
        if ledger.path.exists():
            raise ValueError(f"{ledger.path} exists already")
        ledger.save()
        return 0
    ledger = _load(args.run_id)
    if args.action == "close":
        ledger.delete()
        return 0
    entry = entry_for(args.kind, args.value, args.role)
    if entry is not None and entry not in ledger.entries:
        ledger.append(entry)
    return 0


def main() -> int:
    try:
        return run(sys.argv[1:])
    except (ValueError, OSError) as exc:
        print(f"ledger_writer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
