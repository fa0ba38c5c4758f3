"""`chaos-inject inject` (the default command): its arguments, the fault they describe, the run in the foreground
(or handed to a detached supervisor, or to the fleet for an Ansible inventory), progress and the summary."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import Interrupted, InvalidSpec
from ..plan import DEFAULT_LEASE_NS, DIRECTIONS
from ..spec import (FaultSpec, Inventory, parse_duration_ns, parse_loss_burst, parse_loss_state,
                    parse_percent_ratio)
from ..spec.fault import DISTRIBUTIONS
from ..spec.units import format_duration_ns, parse_rate_bps
from .exits import EXIT_NO_EFFECT, EXIT_OK
from .fleet import is_ansible_inventory


def add_inject_arguments(p: argparse.ArgumentParser) -> None:
    target = p.add_argument_group("target")
    target.add_argument("--flow", action="append", metavar="'SRC->DST[/tcp|/udp]'",
                        help="flow to fault; sides are inventory names, IP, CIDR, IP:PORT, [IPv6]:PORT or '*'. "
                             "Quote it: unquoted, the shell reads '>' as a redirect. Repeatable.")
    target.add_argument("--from", dest="flow_from", metavar="SRC", help="with --to: the flow SRC->DST, no quoting "
                        "needed (--from api --to db)")
    target.add_argument("--to", dest="flow_to", metavar="DST[/tcp|/udp]", help="the flow's destination (with --from)")
    target.add_argument("--inventory", metavar="FILE", help="TOML inventory of names (default: "
                        "$CHAOS_INJECT_INVENTORY, else /etc/chaos-inject/inventory.toml); an Ansible inventory "
                        "(YAML or INI, not .toml) runs the fault on its hosts through Ansible: the fleet")
    target.add_argument("--count", metavar="N", help="with an Ansible inventory: fault N hosts of each source "
                        "group (FIS COUNT(N)), chosen with --seed")
    target.add_argument("--allow-unreachable", action="store_true", help="with an Ansible inventory: run on the "
                        "reachable hosts when some are not (default: refuse the run)")
    target.add_argument("--interface", metavar="IFNAME", help="attach here instead of the route lookup")
    target.add_argument("--netns", metavar="NAME", help="network namespace of the flow's source")
    target.add_argument("--direction", choices=DIRECTIONS, default="egress")
    target.add_argument("--percent", metavar="P", help="blast radius (FIS PERCENT(P)): fault ceil(P%%) of a flow's "
                        "(source, destination) address pairs when its names resolve to several; seeded by --seed")
    fault = p.add_argument_group("fault (combinable, except --partition)")
    fault.add_argument("--loss", metavar="P%", help="random loss, e.g. 10%%")
    fault.add_argument("--loss-burst", metavar="P[,R[,1-H[,1-K]]]",
                       help="Gilbert-Elliott burst loss in percent, netem gemodel order, e.g. 1%%,25%%")
    fault.add_argument("--loss-state", metavar="P13[,P31[,P32[,P23[,P14]]]]",
                       help="netem's 4-state loss model in percent, netem's order and defaults (netem engine)")
    fault.add_argument("--partition", action="store_true", help="drop every packet of the flow")
    fault.add_argument("--corrupt", metavar="P%", help="flip one random payload bit in P%% of packets")
    fault.add_argument("--duplicate", metavar="P%", help="send P%% of packets twice")
    fault.add_argument("--delay", metavar="DURATION", help="added one-way delay, e.g. 200ms")
    fault.add_argument("--jitter", metavar="DURATION", help="delay variation (needs --delay)")
    fault.add_argument("--distribution", choices=DISTRIBUTIONS, help="of the jitter (default uniform)")
    fault.add_argument("--correlation", metavar="P%", help="correlation of successive delays")
    fault.add_argument("--reorder", metavar="P%", help="send P%% of packets at once, ahead of delayed ones")
    fault.add_argument("--rate", metavar="RATE", help="limit the flow's rate, e.g. 1mbit, 100kbit")
    run = p.add_argument_group("run")
    run.add_argument("--engine", choices=("auto", "ebpf", "netem", "edt", "userspace"), default="auto",
                     help="auto picks the most precise engine this kernel has for the fault (see `doctor`)")
    run.add_argument("--duration", required=True, metavar="DURATION", help="hard limit, e.g. 60s, 5m")
    run.add_argument("--lease", default=format_duration_ns(DEFAULT_LEASE_NS), metavar="DURATION",
                     help="rules switch themselves off this long after the injector stops renewing them "
                          "(default %(default)s)")
    run.add_argument("--heartbeat", metavar="FILE", help="dead-man switch: end the fault (state halted) when FILE "
                     "was not touched for --heartbeat-timeout (a remote controller renews it; the fleet does)")
    run.add_argument("--heartbeat-timeout", default="15s", metavar="DURATION",
                     help="with --heartbeat: how stale FILE may get (default %(default)s)")
    run.add_argument("--seed", type=int, help="seed the in-kernel PRNG: the same packets meet the same fate")
    run.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    run.add_argument("--detach", action="store_true", help="return once the fault is active, leaving a supervisor "
                     "that renews the lease until --duration or `chaos-inject stop RUN_ID`; prints the run id")
    run.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    run.add_argument("-q", "--quiet", action="store_true", help="no live progress")
    record = p.add_argument_group("recording (docs/run-directory.md)")
    record.add_argument("--record", metavar="DIR", help="record latency before, during and after the fault and "
                        "write the run directory DIR (one-way packet latency where both ends' interfaces are in the "
                        "inventory; TCP RTT of a TCP flow's connections made by any process of this host)")
    record.add_argument("--baseline", default="5s", metavar="DURATION",
                        help="with --record: recording before the fault is applied (default %(default)s)")
    record.add_argument("--recovery", default="5s", metavar="DURATION",
                        help="with --record: recording after it was removed (default %(default)s)")
    record.add_argument("--record-cgroup", metavar="DIR", help="with --record: a cgroup v2 directory holding the "
                        "receiving (or connecting) process: one-way latency matched at its sockets, which also "
                        "sees holds after tc ingress, and TCP RTT samples of its connections only")


def parse_fault(args: argparse.Namespace) -> FaultSpec:
    return FaultSpec(
        loss_ratio=parse_percent_ratio(args.loss, field="loss") if args.loss else 0.0,
        loss_burst=parse_loss_burst(args.loss_burst) if args.loss_burst else None,
        loss_state=parse_loss_state(args.loss_state) if args.loss_state else None,
        partition=bool(args.partition),
        corrupt_ratio=parse_percent_ratio(args.corrupt, field="corrupt") if args.corrupt else 0.0,
        duplicate_ratio=parse_percent_ratio(args.duplicate, field="duplicate") if args.duplicate else 0.0,
        delay_ns=parse_duration_ns(args.delay, field="delay") if args.delay else 0,
        jitter_ns=parse_duration_ns(args.jitter, field="jitter") if args.jitter else 0,
        distribution=args.distribution,
        delay_correlation_ratio=parse_percent_ratio(args.correlation, field="correlation") if args.correlation
        else 0.0,
        reorder_ratio=parse_percent_ratio(args.reorder, field="reorder") if args.reorder else 0.0,
        rate_bps=parse_rate_bps(args.rate, field="rate") if args.rate else 0,
    )


def cmd_inject(args: argparse.Namespace) -> int:
    from ..blast import parse_percent
    from ..prepare import prepare

    flows = _flows_from_args(args)
    if args.inventory and is_ansible_inventory(args.inventory):
        from ..fleet.command import cmd_fleet_inject

        return cmd_fleet_inject(args, flows, parse_fault(args))
    if args.count is not None or args.allow_unreachable:
        raise InvalidSpec("--count and --allow-unreachable choose hosts of an Ansible inventory (--inventory "
                          "hosts.yml)", field="count" if args.count is not None else "allow-unreachable")
    inventory = Inventory.discover(args.inventory)
    fault = parse_fault(args)
    duration_ns = parse_duration_ns(args.duration, field="duration")
    lease_ns = parse_duration_ns(args.lease, field="lease")
    percent = parse_percent(args.percent) if args.percent is not None else None
    baseline_ns, recovery_ns = _check_record_args(args)
    heartbeat = None
    if args.heartbeat and not args.detach:
        raise InvalidSpec("--heartbeat is for a detached run (--detach), which a remote controller keeps alive",
                          field="heartbeat")
    if args.heartbeat:
        heartbeat = (args.heartbeat, parse_duration_ns(args.heartbeat_timeout, field="heartbeat-timeout"))
    # without the capability probe for a dry run: it would create (and remove) a namespace
    prepared = prepare(flows, fault, interface=args.interface, netns=args.netns, direction=args.direction,
                       duration_ns=duration_ns, lease_ns=lease_ns, seed=args.seed, engine=args.engine,
                       inventory=inventory, percent=percent, probe_kernel=not args.dry_run)
    plan, engine_name, why = prepared.plan, prepared.plan.engine, prepared.why
    if args.dry_run:
        from ..engines.dryrun import dry_run_warnings

        print(prepared.describe(percent))
        for warning in dry_run_warnings(fault, args.engine):
            print(warning)
        print("dry run: nothing was changed")
        return EXIT_OK
    if args.detach:
        return _report_detached(prepared, percent, as_json=args.json, quiet=args.quiet, heartbeat=heartbeat)

    from ..engines.select import make_engine
    from ..runner import run_plan
    from ..summary import format_summary, summarize

    show_progress = not args.quiet and not args.json
    if show_progress:
        print(prepared.describe(percent), file=sys.stderr)
    reporter = _ProgressPrinter(plan) if show_progress else None
    if show_progress:
        print(f"engine {engine_name}: {why}", file=sys.stderr)
    recording = None
    if args.record:
        from ..record.runrecord import format_recording, record_run

        live: dict = {}

        def run(update_live):
            update_live(live)

            def progress(p):
                update_live(live)
                if reporter:
                    reporter(p)
            return run_plan(plan, make_engine(engine_name), on_progress=progress, extra_status={"recording": live})
        try:
            result, recording, notes = record_run(plan, run, args.record, baseline_ns=baseline_ns,
                                                  recovery_ns=recovery_ns, cgroup=args.record_cgroup)
        except Interrupted:
            print(f"chaos-inject: interrupted during the baseline; no fault was applied; {args.record} holds "
                  "what was recorded", file=sys.stderr)
            return 130
    else:
        result = run_plan(plan, make_engine(engine_name), on_progress=reporter)
    if reporter:
        reporter.finish()
    summaries = summarize(plan, result.counters)
    if recording is not None:
        _save_summary(recording, _summary_json(plan, result, summaries))
    if args.json:
        out = _summary_json(plan, result, summaries)
        if recording is not None:
            out["recording"] = {"run_dir": str(recording.run_dir), "recorders": recording.summaries,
                                "latency_shift": recording.meta["latency_shift"], "notes": notes}
        print(json.dumps(out, indent=1))
    else:
        how = "completed" if not result.interrupted else f"stopped by {result.stop_reason}" \
            if result.stop_reason.startswith("SIG") else f"{result.stop_reason} by request (chaos-inject stop)"
        print(f"run {plan.run_id} {how} after {result.elapsed_ns / 1e9:.1f}s; every object it created "
              "has been removed")
        print(format_summary(summaries))
        if recording is not None:
            print(format_recording(recording, plan, notes))
    if result.stop_reason.startswith("SIG"):
        return 128 + {"SIGINT": 2, "SIGTERM": 15, "SIGHUP": 1}.get(result.stop_reason, 0)
    if not any(s.counters.get("matched_packets") for s in summaries):
        print("chaos-inject: no packet matched the flow: the fault had no effect", file=sys.stderr)
        return EXIT_NO_EFFECT
    return EXIT_OK


def _flows_from_args(args: argparse.Namespace) -> list[str]:
    """--flow (repeatable) and --from/--to; a flow cut by a shell redirect is explained, naming the file."""
    from ..spec.shellsafe import cut_flow_message, looks_cut, redirect_target

    flows = list(args.flow or [])
    for text in flows:
        if looks_cut(text):
            raise InvalidSpec(cut_flow_message(text, created=redirect_target()), field="flow")
    if (args.flow_from is None) != (args.flow_to is None):
        raise InvalidSpec("--from and --to go together (--from SRC --to DST is the flow SRC->DST)",
                          field="from" if args.flow_to is None else "to")
    if args.flow_from is not None:
        flows.append(f"{args.flow_from}->{args.flow_to}")
    if not flows:
        raise InvalidSpec("no flow: give --flow 'SRC->DST' (quoted) or --from SRC --to DST", field="flow")
    return flows


def _summary_json(plan, result, summaries) -> dict:
    return {
        "run_id": plan.run_id, "plan": plan.to_dict(), "stop_reason": result.stop_reason,
        "elapsed_s": result.elapsed_ns / 1e9,
        "flows": [{"flow": s.flow, "counters": s.counters,
                   "achieved": [{"fault": a.what, "requested_ratio": a.requested_ratio, "events": a.events,
                                 "trials": a.trials, "ratio": a.ratio if a.trials else None,
                                 "ci95": [a.interval.low, a.interval.high], "consistent": a.consistent}
                                for a in s.achieved]} for s in summaries],
    }


def _check_record_args(args: argparse.Namespace) -> tuple[int, int]:
    """--record options checked before anything is prepared: bad input changes nothing."""
    if not args.record:
        if args.record_cgroup:
            raise InvalidSpec("--record-cgroup needs --record DIR", field="record-cgroup")
        return 0, 0
    from pathlib import Path

    if args.detach:
        raise InvalidSpec("--record runs in the foreground; it cannot be combined with --detach", field="record")
    if Path(args.record).exists() and (not Path(args.record).is_dir() or any(Path(args.record).iterdir())):
        raise InvalidSpec("the run directory must be new or empty", text=args.record, field="record")
    if args.record_cgroup and not Path(args.record_cgroup, "cgroup.procs").exists():
        raise InvalidSpec("not a cgroup v2 directory", text=args.record_cgroup, field="record-cgroup")
    return (parse_duration_ns(args.baseline, field="baseline", allow_zero=True),
            parse_duration_ns(args.recovery, field="recovery", allow_zero=True))


def _save_summary(recording, summary: dict) -> None:
    """The achieved-vs-requested summary, saved with the run (summary.json beside meta.json)."""
    summary = {**summary, "latency_shift": recording.meta.get("latency_shift", []),
               "recorders": recording.summaries}
    from ..files import write_json_atomic

    write_json_atomic(recording.run_dir / "summary.json", summary, dir_mode=0o755, sort_keys=False, default=str)


class _ProgressPrinter:
    """One live line on a terminal; a line every few seconds otherwise."""

    def __init__(self, plan):
        self.plan = plan
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def __call__(self, progress) -> None:
        from ..summary import totals_by_flow

        totals = totals_by_flow(self.plan, progress.counters)
        matched = sum(t.get("matched_packets", 0) for t in totals.values())
        dropped = sum(t.get("dropped_packets", 0) for t in totals.values())
        requested = self.plan.faults[0].expected_loss_ratio if len(self.plan.faults) == 1 else None
        ratio = f" ({dropped / matched:.2%} achieved, {requested:.2%} requested)" \
            if matched and requested is not None and (requested or dropped) else ""
        line = (f"[{progress.elapsed_ns / 1e9:6.1f}s / {self.plan.duration_ns / 1e9:.0f}s] matched {matched} "
                f"dropped {dropped}{ratio}")
        if self.tty:
            print("\r" + line.ljust(100), end="", file=sys.stderr, flush=True)
        elif time.monotonic() - self.last_line >= 5:
            print(line, file=sys.stderr, flush=True)
            self.last_line = time.monotonic()

    def finish(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _report_detached(prepared, percent: float | None, *, as_json: bool, quiet: bool,
                     heartbeat: tuple[str, int] | None = None) -> int:
    """``inject --detach``: start the supervisor; print the run id once the fault is active."""
    from ..supervisor import DetachFailed, detach

    plan = prepared.plan
    if not quiet and not as_json:
        print(prepared.describe(percent), file=sys.stderr)
        print(f"engine {plan.engine}: {prepared.why}", file=sys.stderr)
    try:
        detached = detach(plan, plan.engine, heartbeat=heartbeat)
    except DetachFailed as exc:
        print(f"chaos-inject: {exc}", file=sys.stderr)
        return exc.exit_code
    if as_json:
        print(json.dumps({"run_id": detached.run_id, "pid": detached.pid, "state": "running",
                          "duration_s": plan.duration_ns / 1e9, "log": detached.log_path}))
    else:
        print(detached.run_id)
        if not quiet:
            print(f"run {detached.run_id} is active for {plan.duration_ns / 1e9:g}s, supervised by pid "
                  f"{detached.pid}; `chaos-inject stop {detached.run_id}` ends it early (log "
                  f"{detached.log_path})", file=sys.stderr)
    return EXIT_OK
