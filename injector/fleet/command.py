"""``chaos-inject --inventory hosts.yml ...`` and ``sweep --inventory``: the fleet controller.

The controller plans (pure: fleet.plan), then hands each host its part through Ansible (fleet.ansible):
1. preflight: the fault module in check mode on every chosen host (reachable? chaos-inject there? the host's own
   dry-run plan accepted?). An unreachable or refusing host refuses the run, unless --allow-unreachable (then the
   run goes on with the others and says which were left out);
2. apply: ``fault state=present`` on every host; any failure rolls back every reachable host;
3. renew: the same task again every third of the heartbeat timeout (idempotent: it renews the heartbeat and
   returns the counters), per-host progress printed;
4. end: ``fault state=absent`` collects every host's final record (also on SIGINT/SIGTERM: rollback).
The controller keeps no state a host's safety depends on: killed, or cut off, each host ends its fault when its
heartbeat goes stale (within the heartbeat timeout), and its in-kernel lease ends it if its supervisor dies too.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidSpec
from ..files import write_json_atomic
from ..spec.units import parse_duration_ns
from .inventory import load_inventory
from .plan import FleetPlan, build_fleet_plan, parse_count

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
    heartbeat_ns = parse_duration_ns(args.heartbeat_timeout, field="heartbeat-timeout")
    if heartbeat_ns < 2_000_000_000:
        raise InvalidSpec("the heartbeat timeout is at least 2s (Ansible renews it every third)",
                          text=args.heartbeat_timeout, field="heartbeat-timeout")
    plan = build_fleet_plan(flows, inventory, percent=percent, count=count, seed=args.seed)
    name = f"fleet-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    task = {"name": name, "fault": fault_options(args), "direction": args.direction, "engine": args.engine,
            "duration": args.duration, "lease": args.lease, "heartbeat_timeout": args.heartbeat_timeout}
    if args.seed is not None:
        task["seed"] = args.seed
    host_flows = {"chaos_fleet_flows": {h: list(f) for h, f in plan.assignments.items()}}
    task["flows"] = "{{ chaos_fleet_flows[inventory_hostname] }}"
    _say(args, plan.describe())
    _say(args, f"fleet run {name}: each host ends its fault if not renewed for {args.heartbeat_timeout} "
               f"(controller lost), its rules' lease is {args.lease}")
    hosts = list(plan.hosts)
    progress = _Progress(args)
    with AnsibleRounds(args.inventory, on_event=progress) as rounds:
        progress.phase = "preflight"
        pre = rounds.run("fault", task, hosts, extravars=host_flows, check=True)
        bad = pre.hosts("failed")
        unreachable = pre.hosts("unreachable")
        if args.dry_run:
            for host in hosts:
                out = pre.outcomes[host]
                _say(args, f"--- {host}: {out.status}\n{out.result.get('plan', out.message)}".rstrip())
            print(json.dumps(_result_json(name, plan, pre.outcomes, dry_run=True), indent=1) if args.json
                  else "dry run: nothing was changed on any host")
            return EXIT_OK if not bad and not unreachable else EXIT_ERROR
        if bad:
            print("chaos-inject: refused: the plan failed on " + "; ".join(
                f"{h}: {pre.outcomes[h].message}" for h in bad) + "; nothing was changed", file=sys.stderr)
            return EXIT_ERROR
        if unreachable:
            what = ", ".join(f"{h} ({pre.outcomes[h].message})" for h in unreachable)
            if not args.allow_unreachable:
                print(f"chaos-inject: refused: unreachable: {what}; nothing was changed on any host "
                      "(--allow-unreachable runs on the others)", file=sys.stderr)
                return EXIT_ERROR
            print(f"chaos-inject: --allow-unreachable: running WITHOUT {what}", file=sys.stderr)
            hosts = [h for h in hosts if h not in unreachable]
            if not hosts:
                print("chaos-inject: no reachable host left", file=sys.stderr)
                return EXIT_ERROR
        return _run(args, rounds, progress, name, plan, task, host_flows, hosts, duration_ns, heartbeat_ns,
                    left_out=unreachable)


def _run(args, rounds, progress, name, plan, task, host_flows, hosts, duration_ns, heartbeat_ns, *,
         left_out) -> int:
    """Apply, renew, end. A signal (SIGINT, SIGTERM, SIGHUP) is noted and acted on between rounds: the round
    under way finishes (seconds), then every host is rolled back."""
    absent = {"name": name, "state": "absent"}
    stop = threading.Event()
    stopped: list[str] = []

    def on_signal(signum, _frame):
        if not stopped:
            stopped.append(signal.Signals(signum).name)
            print(f"chaos-inject: {stopped[0]}: rolling back every host after the current round", file=sys.stderr)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    started = time.monotonic()
    try:
        progress.phase = "apply"
        applied_start = time.monotonic()
        applied = rounds.run("fault", task, hosts, extravars=host_flows)
        if not applied.ok:
            failed = [h for h in hosts if applied.outcomes[h].status != "ok"]
            print("chaos-inject: the fault failed on " + "; ".join(
                f"{h}: {applied.outcomes[h].status}: {applied.outcomes[h].message}" for h in failed)
                + "; rolling back every reachable host", file=sys.stderr)
            progress.phase = "rollback"
            back = rounds.run("fault", absent, [h for h in hosts if applied.outcomes[h].status != "unreachable"])
            left = back.hosts("failed") + back.hosts("unreachable")
            if left:
                print(f"chaos-inject: rollback did not reach {', '.join(left)}: their faults end within the "
                      f"heartbeat timeout ({args.heartbeat_timeout}); then `chaos-inject sweep --inventory`",
                      file=sys.stderr)
            return EXIT_ERROR
        active_at = time.monotonic()
        _say(args, f"fault active on {len(hosts)} host(s) {active_at - started:.1f}s after the command")
        last = {h: applied.outcomes[h].result for h in hosts}
        interval = heartbeat_ns / 3e9
        end = active_at + duration_ns / 1e9
        progress.phase = "renew"
        last_start = applied_start
        slow_said = False
        while time.monotonic() < end and not stop.is_set():
            # renewals are paced by their starts: a round takes seconds (an ansible-playbook per round)
            if stop.wait(max(0.0, min(last_start + interval - time.monotonic(), end - time.monotonic()))):
                break
            if time.monotonic() >= end:
                break
            last_start = time.monotonic()
            tick = rounds.run("fault", task, hosts, extravars=host_flows)
            took = time.monotonic() - last_start
            if took > interval and not slow_said:
                slow_said = True
                print(f"chaos-inject: WARNING: a renewal round took {took:.1f}s, more than a third of the "
                      f"heartbeat timeout ({args.heartbeat_timeout}): hosts may end their fault early; give a "
                      "longer --heartbeat-timeout", file=sys.stderr)
            for h, out in tick.outcomes.items():
                if out.status == "ok":
                    last[h] = out.result
                else:
                    print(f"chaos-inject: renewal failed on {h} ({out.status}: {out.message}); its fault ends "
                          f"within {args.heartbeat_timeout} unless the next renewal reaches it", file=sys.stderr)
            if all(last.get(h, {}).get("run_state") not in ("running", None) for h in hosts):
                break                                   # every host's run has ended by itself
        progress.phase = "end"
        final = rounds.run("fault", absent, hosts)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    stopped_by = stopped[0] if stopped else None
    result = _result_json(name, plan, final.outcomes, left_out=left_out, stopped_by=stopped_by)
    if args.record:
        write_fleet_run_dir(args.record, result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_fleet_result(result))
    if final.hosts("failed") or final.hosts("unreachable"):
        return EXIT_ERROR
    if stopped_by:
        return 128 + {"SIGINT": 2, "SIGTERM": 15, "SIGHUP": 1}[stopped_by]
    if result["verdict"] == "no-effect":
        return EXIT_NO_EFFECT
    return EXIT_OK if result["verdict"] == "ok" else EXIT_ERROR


def _totals(counters: dict) -> dict[str, int]:
    totals: dict[str, int] = {}
    for rule in (counters or {}).values():
        if isinstance(rule, dict):
            for key, value in rule.items():
                if isinstance(value, (int, float)):
                    totals[key] = totals.get(key, 0) + int(value)
    return totals


def host_verdict(outcome_status: str, res: dict) -> str:
    """ok: the run ran and its rules matched packets; no-effect: it ran but matched none; failed otherwise."""
    if outcome_status != "ok":
        return "failed"
    state = res.get("run_state")
    if state in ("failed", "gone", None):
        return "failed"
    if state == "planned":
        return "planned"
    return "ok" if _totals(res.get("counters") or {}).get("matched_packets", 0) > 0 else "no-effect"


def _result_json(name, plan: FleetPlan, outcomes, *, dry_run: bool = False, left_out=(), stopped_by=None) -> dict:
    hosts = []
    for host in plan.hosts:
        out = outcomes.get(host)
        if out is None:
            hosts.append({"host": host, "status": "left-out", "verdict": "not-run"})
            continue
        res = out.result
        hosts.append({"host": host, "address": plan.addresses.get(host), "status": out.status,
                      "run_id": res.get("run_id"), "state": res.get("run_state"),
                      "stop_reason": res.get("stop_reason"), "flows": list(plan.assignments[host]),
                      "counters": res.get("counters") or {}, "totals": _totals(res.get("counters") or {}),
                      "plan": res.get("plan"), "message": None if out.status == "ok" else out.message,
                      "verdict": host_verdict(out.status, res)})
    verdicts = [h["verdict"] for h in hosts if h["verdict"] != "not-run"]
    overall = ("planned" if dry_run else "failed" if "failed" in verdicts else
               "no-effect" if verdicts and all(v == "no-effect" for v in verdicts) else
               "partial" if "no-effect" in verdicts else "ok")
    return {"fleet_run": name, "flows": list(plan.flows), "stopped_by": stopped_by, "left_out": list(left_out),
            "choices": [{"group": c.group, "members": list(c.members), "chosen": list(c.chosen), "why": c.why}
                        for c in plan.choices],
            "hosts": hosts, "verdict": overall}


def format_fleet_result(result: dict) -> str:
    lines = [f"fleet run {result['fleet_run']}: verdict {result['verdict']}"
             + (f" (stopped by {result['stopped_by']}; every host rolled back)" if result["stopped_by"] else "")]
    for h in result["hosts"]:
        t = h.get("totals", {})
        lines.append(f"  {h['host']:<12} {h['verdict']:<9} {h.get('state') or h['status']:<10} run "
                     f"{h.get('run_id') or '-'}  matched {t.get('matched_packets', 0)} dropped "
                     f"{t.get('dropped_packets', 0)} delayed {t.get('delayed_packets', 0)}"
                     + (f"  ({h['message']})" if h.get("message") else ""))
    if result["left_out"]:
        lines.append(f"  left out (unreachable at the start): {', '.join(result['left_out'])}")
    return "\n".join(lines)


def write_fleet_run_dir(path: str, result: dict) -> Path:
    """One run directory for the fleet: fleet.json (per-host and overall verdict) and counters.csv with a host
    column (one row per host and rule)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "fleet.json", result, dir_mode=0o755, sort_keys=False, default=str)
    keys = sorted({k for h in result["hosts"] for rule in (h.get("counters") or {}).values()
                   if isinstance(rule, dict) for k in rule})
    rows = ["host,rule," + ",".join(keys)]
    for h in result["hosts"]:
        for rule_id, counters in sorted((h.get("counters") or {}).items()):
            rows.append(f"{h['host']},{rule_id}," + ",".join(str(counters.get(k, 0)) for k in keys))
    (folder / "counters.csv").write_text("\n".join(rows) + "\n")
    return folder


def cmd_fleet_sweep(args) -> int:
    """``chaos-inject sweep --inventory hosts.yml``: every host of the inventory, stopped and swept."""
    from .ansible import AnsibleRounds

    inventory = load_inventory(args.inventory)
    hosts = sorted(inventory.hosts)
    progress = _Progress(args, "sweep")
    with AnsibleRounds(args.inventory, on_event=progress) as rounds:
        done = rounds.run("sweep", {}, hosts, check=bool(getattr(args, "dry_run", False)))
    report = {h: {"status": o.status, "stopped": o.result.get("stopped", []),
                  "swept_runs": (o.result.get("swept") or {}).get("swept_runs", []),
                  "message": None if o.status == "ok" else o.message} for h, o in sorted(done.outcomes.items())}
    if args.json:
        print(json.dumps({"hosts": report}, indent=1))
    else:
        for host, r in report.items():
            print(f"{host}: {r['status']}" + (f", stopped {len(r['stopped'])} fleet run(s)" if r["stopped"] else "")
                  + (f", swept {len(r['swept_runs'])} dead run(s)" if r["swept_runs"] else "")
                  + (f" ({r['message']})" if r["message"] else ""))
    return EXIT_OK if done.ok else EXIT_ERROR

