"""``chaos-inject --inventory hosts.yml ...`` and ``sweep --inventory``: the fleet controller.

The controller plans (pure: fleet.plan), then hands each host its part through Ansible (fleet.ansible):
the rounds are fleet.controller's FleetFault (preflight, start, hold, stop; a fleet experiment uses the same):
an unreachable or refusing host refuses the run unless --allow-unreachable; any failure rolls back every
reachable host; SIGINT/SIGTERM/SIGHUP roll back every host after the round under way; per-host progress printed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import crashpoints
from ..errors import InvalidSpec
from ..spec.units import parse_duration_ns
from .controller import FleetApplyFailed, FleetFault, FleetRefused, fleet_task
from .inventory import load_inventory
from .ledger import FleetLedger, clear_swept, orphaned_private_folders, remove_private, watch_stop_request
from .plan import build_fleet_plan, parse_count
from .results import format_fleet_result, write_fleet_run_dir

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_EFFECT = 0, 1, 2, 4
FAULT_OPTIONS = ("delay", "jitter", "distribution", "correlation", "loss", "loss_burst", "loss_state", "corrupt",
                 "duplicate", "reorder", "rate")


def fault_options(args) -> dict[str, Any]:
    """The CLI's fault options, as the fault module takes them (the target's chaos-inject parses them again)."""
    out: dict[str, Any] = {k: getattr(args, k) for k in FAULT_OPTIONS if getattr(args, k, None) not in (None, "")}
    if getattr(args, "partition", False):
        out["partition"] = True
    return out


def _say(args, text: str) -> None:
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        print(text, file=sys.stderr, flush=True)


class _Progress:
    """Per-host lines as Ansible's events arrive."""

    def __init__(self, args, phase: str = ""):
        self.args = args
        self.phase = phase

    def __call__(self, host: str, status: str, res: dict) -> None:
        detail = ""
        if status == "ok":
            counters = res.get("counters") or {}
            matched = sum(int(c.get("matched_packets", 0)) for c in counters.values() if isinstance(c, dict))
            delayed = sum(int(c.get("delayed_packets", 0)) for c in counters.values() if isinstance(c, dict))
            dropped = sum(int(c.get("dropped_packets", 0)) for c in counters.values() if isinstance(c, dict))
            detail = f"{res.get('run_state', '')} run {res.get('run_id', '-')}"
            if counters:
                detail += f" matched {matched} dropped {dropped} delayed {delayed}"
        else:
            msg = str(res.get("msg") or "").strip().splitlines()
            detail = msg[0][:160] if msg else ""
        _say(self.args, f"  [{self.phase}] {host}: {status} {detail}".rstrip())


def cmd_fleet_inject(args, flows: list[str], fault) -> int:
    """``chaos-inject --inventory hosts.yml --flow 'web->db' ...``. ``fault`` (a FaultSpec) was parsed by the CLI:
    bad fault options are refused before any host is contacted."""
    from ..blast import parse_percent
    from .ansible import AnsibleRounds

    if args.record_cgroup or args.detach or args.heartbeat or args.interface or args.netns:
        raise InvalidSpec("with an Ansible inventory, --record-cgroup, --detach, --heartbeat, --interface and "
                          "--netns are not available (each host finds its own interface by route lookup)",
                          field="inventory")
    if args.record and Path(args.record).exists() and any(Path(args.record).iterdir()):
        raise InvalidSpec("the run directory must be new or empty", text=args.record, field="record")
    inventory = load_inventory(args.inventory)
    percent = parse_percent(args.percent) if args.percent is not None else None
    count = parse_count(args.count) if args.count is not None else None
    duration_ns = parse_duration_ns(args.duration, field="duration")
    parse_duration_ns(args.lease, field="lease")
    heartbeat_ns = check_heartbeat_timeout(args.heartbeat_timeout)
    plan = build_fleet_plan(flows, inventory, percent=percent, count=count, seed=args.seed)
    name = new_fleet_run_name()
    task = fleet_task(name, fault_options(args), direction=args.direction, engine=args.engine,
                      duration=args.duration, lease=args.lease, heartbeat_timeout=args.heartbeat_timeout,
                      seed=args.seed)
    _say(args, plan.describe())
    _say(args, f"fleet run {name}: each host ends its fault if not renewed for {args.heartbeat_timeout} "
               f"(controller lost), its rules' lease is {args.lease}")
    progress = _Progress(args)
    with AnsibleRounds(args.inventory, on_event=progress) as rounds:
        ledger = None if args.dry_run else FleetLedger(name, args.inventory, private=rounds.private)
        fleet = FleetFault(rounds, plan, task, heartbeat_ns=heartbeat_ns, progress=progress,
                           warn=lambda text: print(f"chaos-inject: {text}", file=sys.stderr, flush=True),
                           ledger=ledger)
        if not args.dry_run:
            return _run(args, fleet, duration_ns)
        pre = fleet.preflight()                     # --dry-run: each host's own plan (check mode), no change
        for host in fleet.hosts:
            out = pre.outcomes[host]
            _say(args, f"--- {host}: {out.status}\n{out.result.get('plan', out.message)}".rstrip())
        print(json.dumps(fleet.collect(dry_run=True), indent=1) if args.json
              else "dry run: nothing was changed on any host")
        return EXIT_OK if not pre.hosts("failed") and not pre.hosts("unreachable") else EXIT_ERROR


def check_heartbeat_timeout(text: str) -> int:
    heartbeat_ns = parse_duration_ns(text, field="heartbeat-timeout")
    if heartbeat_ns < 2_000_000_000:
        raise InvalidSpec("the heartbeat timeout is at least 2s (Ansible renews it every third)",
                          text=text, field="heartbeat-timeout")
    return heartbeat_ns


def new_fleet_run_name() -> str:
    return f"fleet-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _run(args, fleet: FleetFault, duration_ns: int) -> int:
    """Apply, hold, end. A signal (SIGINT, SIGTERM, SIGHUP) or `chaos-inject stop RUN_ID` (the ledger's stop
    request) is noted and acted on between rounds: the round under way finishes (seconds), then every host is
    rolled back."""
    stop = threading.Event()
    stopped: list[str] = []

    def stopping(why: str) -> None:
        if not stopped:
            stopped.append(why)
            print(f"chaos-inject: {why}: rolling back every host after the current round", file=sys.stderr)
        stop.set()

    def on_signal(signum, _frame):
        stopping(signal.Signals(signum).name)

    watch_stop_request(fleet.ledger, lambda: stopping("stop request"), stop)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started = time.monotonic()
    try:
        try:
            fleet.begin(allow_unreachable=getattr(args, "allow_unreachable", False))   # check, then apply
        except (FleetRefused, FleetApplyFailed) as exc:
            print(f"chaos-inject: {exc}", file=sys.stderr)
            return EXIT_ERROR
        active_at = time.monotonic()
        _say(args, f"fault active on {len(fleet.hosts)} host(s) {active_at - started:.1f}s after the command")
        fleet.hold(active_at + duration_ns / 1e9, stop)
        fleet.stop()
    finally:
        stop.set()                                 # ends the stop-request watcher
        for s, handler in old.items():
            signal.signal(s, handler)
    stopped_by = stopped[0] if stopped else None
    result = fleet.collect(stopped_by=stopped_by)
    if args.record:
        write_fleet_run_dir(args.record, result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_fleet_result(result))
    if not fleet.ended_everywhere():
        return EXIT_ERROR
    if stopped_by in ("SIGINT", "SIGTERM", "SIGHUP"):
        return 128 + {"SIGINT": 2, "SIGTERM": 15, "SIGHUP": 1}[stopped_by]
    if stopped_by:                                 # `chaos-inject stop`: asked for, done
        return EXIT_OK
    if result["verdict"] == "no-effect":
        return EXIT_NO_EFFECT
    return EXIT_OK if result["verdict"] == "ok" else EXIT_ERROR


def cmd_fleet_sweep(args) -> int:
    """``chaos-inject sweep --inventory hosts.yml``: every host of the inventory, stopped and swept; then the
    ledgers of dead controllers of this inventory lose the hosts that came back clean (fleet.ledger)."""
    from .ansible import AnsibleRounds

    inventory = load_inventory(args.inventory)
    hosts = sorted(inventory.hosts)
    dry_run = bool(getattr(args, "dry_run", False))
    progress = _Progress(args, "sweep")
    with AnsibleRounds(args.inventory, on_event=progress) as rounds:
        with crashpoints.step("sweep hosts") if not dry_run else contextlib.nullcontext():
            done = rounds.run("sweep", {}, hosts, check=dry_run)
    ledgers = clear_swept(args.inventory, done.hosts("ok"), inventory_hosts=hosts, dry_run=dry_run)
    folders = orphaned_private_folders()          # dead controllers' Ansible folders (no ledger needed)
    if not dry_run:
        for folder in folders:
            remove_private(str(folder))
    report = {h: {"status": o.status, "stopped": o.result.get("stopped", []),
                  "swept_runs": (o.result.get("swept") or {}).get("swept_runs", []),
                  "message": None if o.status == "ok" else o.message} for h, o in sorted(done.outcomes.items())}
    if args.json:
        print(json.dumps({"hosts": report, "controller_ledgers": ledgers, "dry_run": dry_run,
                          "controller_folders": [str(f) for f in folders]}, indent=1))
    else:
        for host, r in report.items():
            print(f"{host}: {r['status']}" + (f", stopped {len(r['stopped'])} fleet run(s)" if r["stopped"] else "")
                  + (f", swept {len(r['swept_runs'])} dead run(s)" if r["swept_runs"] else "")
                  + (f" ({r['message']})" if r["message"] else ""))
        for led in ledgers:
            verb = "would clear" if dry_run else "cleared"
            print(f"fleet run {led['run_id']} (dead controller): {verb} {', '.join(led['cleared']) or 'no host'}"
                  + (f"; still to clean: {', '.join(led['left'])}" if led["left"] else
                     ("; its ledger would go" if dry_run else "; its ledger is gone")))
        for folder in folders:
            print(f"{'would remove' if dry_run else 'removed'} a dead controller's Ansible folder {folder}")
    return EXIT_OK if done.ok else EXIT_ERROR

