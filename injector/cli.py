"""Command line: argument parsing and presentation only; the work is done by plan/runner/kernel."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time

from . import __version__
from .errors import ChaosInjectError, CleanupFailed, Interrupted, InvalidSpec, NotPermitted, Unsupported
from .plan import DEFAULT_LEASE_NS, DIRECTIONS
from .spec import (FaultSpec, Inventory, parse_duration_ns, parse_loss_burst, parse_loss_state,
                   parse_percent_ratio)
from .spec.fault import DISTRIBUTIONS
from .spec.units import format_duration_ns, parse_rate_bps

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNSUPPORTED, EXIT_NO_EFFECT = 0, 1, 2, 3, 4
SUBCOMMANDS = ("inject", "sweep", "status", "demo", "doctor", "lab", "run", "stop", "schedule", "cpu-stress",
               "kill-process", "notebook")

EPILOG = """\
examples:
  sudo chaos-inject --flow 'api->db' --loss 10% --duration 60s
  sudo chaos-inject --from api --to db --loss 10% --duration 60s     (the same flow, no quoting needed)
  sudo chaos-inject --flow '10.0.0.1->10.0.0.2:5432/tcp' --loss-burst 1%,25% --duration 2m
  sudo chaos-inject --flow 'api->[fd00::2]:53/udp' --partition --duration 30s --direction both
  sudo chaos-inject --flow 'api->db' --loss 5% --duration 60s --dry-run
  sudo chaos-inject status --json      sudo chaos-inject sweep      sudo chaos-inject demo
  sudo chaos-inject --flow 'api->db' --delay 200ms --duration 60s --detach    (then: chaos-inject stop RUN_ID)
  sudo chaos-inject schedule '@every 10m' --count 6 -- --flow 'api->db' --loss 5% --duration 60s

direction is seen from the flow's source: egress faults SRC->DST packets as they leave the source's
interface, ingress faults the DST->SRC replies as they arrive there, both does both.
Faults end by themselves: each rule carries a lease (--lease) renewed while chaos-inject runs; if it is
killed, packets stop being affected within one lease, and `chaos-inject sweep` removes what is left.
engines (--engine auto picks the most precise one this kernel can run; `chaos-inject doctor` shows them):
  ebpf      loss, burst loss, partition, corrupt, duplicate: decided per packet in the classifier
  netem     every fault: the classifier steers the flow into a netem leaf (kernels with sch_netem)
  edt       delay/jitter set as departure times in the classifier, held by sch_fq; + the ebpf faults
  userspace delay/jitter held in this process via NFQUEUE (kernels with neither netem nor fq): measured
            added-delay error +0.1 ms median, +0.2-0.7 ms p99 at 3,000 packets/s on a loaded 2-core host
exit codes: 0 done, 1 failed, 2 bad input, 3 not supported here / not root, 4 the fault matched no packet,
130/143 interrupted (everything was still removed).
"""


def _add_inject_arguments(p: argparse.ArgumentParser) -> None:
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


# Commands whose parser lives in their own module: (module, the function that adds it). A run builds only its own
# command's parser; the others are a line of help each, so `--help` and `status` import none of those modules
# (start-up time: bench/startup_time.py). The help lines are the modules' own (tests/unit/test_cli_startup.py).
_COMMAND_PARSERS = {
    "demo": (".lab.labdemo", "add_demo_parser"),
    "run": (".experiment.cli", "add_run_parser"),
    "lab": (".lab.labcli", "add_lab_parser"),
    "stop": (".supervisor", "add_stop_parser"),
    "schedule": (".schedule", "add_schedule_parser"),
    "cpu-stress": (".hostcli", "add_host_parsers"),
    "kill-process": (".hostcli", "add_host_parsers"),
    "notebook": (".notebook", "add_notebook_parser"),
}
_COMMAND_HELP = {
    "demo": "the seed's experiment on the netns lab: delay api->db, 503 not 500, report (what `make demo` runs); "
            "--quick: a loss fault between two throwaway namespaces",
    "run": "run a Chaos Toolkit experiment file (JSON or YAML)",
    "lab": "the netns lab: api, PostgreSQL, Prometheus and a load generator in namespaces of their own",
    "stop": "end a running fault (CLI, detached or library run) and wait for its rollback",
    "schedule": "run a fault (or an experiment) at each tick of a schedule, never overlapping: schedule SPEC "
                "[--count N] -- <inject args | run FILE>",
    "cpu-stress": "N worker processes, each at L %% of one CPU, for a duration (Chaos Mesh StressChaos cpu); "
                  "measured load reported",
    "kill-process": "stop a systemd unit, or processes by pid/name (SIGTERM, SIGKILL after --grace); with --hold, "
                    "restart them after it (Chaos Mesh pod-kill/pod-failure)",
    "notebook": "open the post-experiment notebook on a run directory in JupyterLab",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` (the first argument), only that command's own parser in full."""
    parser = argparse.ArgumentParser(
        prog="chaos-inject", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Per-flow network faults (delay, jitter, loss, burst loss, partition, corruption, duplication, "
                    "reordering, rate) through a BPF classifier, netem or NFQUEUE, with leases, ledgers and measured "
                    "results; Chaos Toolkit experiments, the netns lab, host faults.")
    parser.add_argument("--version", action="version", version=f"chaos-inject {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inject = sub.add_parser("inject", help="apply a fault (the default command)", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inject_arguments(inject)
    sweep = sub.add_parser("sweep", help="remove what dead runs left behind (live runs are left alone)")
    sweep.add_argument("--json", action="store_true")
    sweep.add_argument("--inventory", metavar="FILE", help="an Ansible inventory: stop every fleet fault and sweep "
                       "every host of it (through Ansible)")
    sweep.add_argument("--dry-run", action="store_true", help="say what would be removed, change nothing")
    status = sub.add_parser("status", help="list active faults (state, counters) and recently finished runs")
    status.add_argument("--json", action="store_true")
    status.add_argument("--recent", type=int, metavar="N", help="also list the last N finished runs with their "
                        "final state (default: 5 in text, 0 with --json)")
    sub.add_parser("doctor", help="what this kernel supports, and which engine serves which fault")
    for name, (module, adder) in _COMMAND_PARSERS.items():
        if name in sub.choices:
            continue  # added with another command by the same function (cpu-stress, kill-process)
        if command is None or _COMMAND_PARSERS.get(command) == (module, adder):
            getattr(importlib.import_module(module, __package__), adder)(sub)
        else:  # only its line in the list of commands: its module is not imported
            sub.add_parser(name, help=_COMMAND_HELP[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "inject")
    logging.basicConfig(level=logging.WARNING, format="chaos-inject: %(levelname)s: %(message)s")
    job = None
    if argv and argv[0] == "schedule" and "--" in argv:  # everything after -- is the scheduled job's command
        job, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    args = build_parser(argv[0] if argv else "").parse_args(argv)
    if args.command == "schedule":
        args.job = job
    try:
        if args.command == "inject":
            return cmd_inject(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "doctor":
            from .engines.select import doctor_report
            from .kernel.probe import probe

            print(doctor_report(probe()))
            return EXIT_OK
        if args.command == "lab":
            from .lab.labcli import run_lab_command

            return run_lab_command(args)
        if args.command == "run":
            from .experiment.cli import cmd_run

            return cmd_run(args, carrier=_fleet_carrier(args))
        if args.command == "stop":
            from .supervisor import cmd_stop

            return cmd_stop(args)
        if args.command == "schedule":
            from .schedule import cmd_schedule

            return cmd_schedule(args, build_parser=build_parser, cmd_inject=cmd_inject)
        if args.command in ("cpu-stress", "kill-process"):
            from .hostcli import cmd_cpu_stress, cmd_kill_process

            return (cmd_cpu_stress if args.command == "cpu-stress" else cmd_kill_process)(args)
        if args.command == "notebook":
            from .notebook import cmd_notebook

            return cmd_notebook(args)
        if args.command == "demo":
            from .lab.labdemo import cmd_demo

            return cmd_demo(args)
        build_parser("").print_help()
        return EXIT_USAGE
    except InvalidSpec as exc:
        print(f"chaos-inject: invalid input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (Unsupported, NotPermitted) as exc:
        print(f"chaos-inject: cannot run here: {exc}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    except CleanupFailed as exc:
        print(f"chaos-inject: CLEANUP FAILED: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ChaosInjectError as exc:
        print(f"chaos-inject: {exc}", file=sys.stderr)
        return EXIT_ERROR


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
    from .blast import parse_percent
    from .prepare import prepare

    flows = _flows_from_args(args)
    if args.inventory and _is_ansible_inventory(args.inventory):
        from .fleet.command import cmd_fleet_inject

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
        from .engines.dryrun import dry_run_warnings

        print(prepared.describe(percent))
        for warning in dry_run_warnings(fault, args.engine):
            print(warning)
        print("dry run: nothing was changed")
        return EXIT_OK
    if args.detach:
        from .supervisor import report_detached

        return report_detached(prepared, percent, as_json=args.json, quiet=args.quiet, heartbeat=heartbeat)

    from .engines.select import make_engine
    from .runner import run_plan
    from .summary import format_summary, summarize

    show_progress = not args.quiet and not args.json
    if show_progress:
        print(prepared.describe(percent), file=sys.stderr)
    reporter = _ProgressPrinter(plan) if show_progress else None
    if show_progress:
        print(f"engine {engine_name}: {why}", file=sys.stderr)
    recording = None
    if args.record:
        from .record.runrecord import format_recording, record_run

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
    from .spec.shellsafe import cut_flow_message, looks_cut, redirect_target

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
    from .files import write_json_atomic

    write_json_atomic(recording.run_dir / "summary.json", summary, dir_mode=0o755, sort_keys=False, default=str)


class _ProgressPrinter:
    """One live line on a terminal; a line every few seconds otherwise."""

    def __init__(self, plan):
        self.plan = plan
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def __call__(self, progress) -> None:
        from .summary import totals_by_flow

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


def _fleet_carrier(args: argparse.Namespace):
    """``run X --inventory hosts.yml`` (an Ansible inventory): the fleet carries the experiment's faults."""
    if not args.inventory or not _is_ansible_inventory(args.inventory):
        return None
    from .blast import parse_percent
    from .fleet.carrier import FleetCarrier
    from .fleet.plan import parse_count

    say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    return FleetCarrier(args.inventory, percent=parse_percent(args.percent) if args.percent is not None else None,
                        count=parse_count(args.count) if args.count is not None else None, seed=args.seed,
                        allow_unreachable=args.allow_unreachable, heartbeat_timeout=args.heartbeat_timeout,
                        say=say)


def _is_ansible_inventory(path: str) -> bool:
    """Our TOML inventory ends in .toml; anything else given to --inventory is Ansible's (YAML, INI, a folder)."""
    return not str(path).endswith(".toml")


def cmd_sweep(args: argparse.Namespace) -> int:
    if getattr(args, "inventory", None):
        if not _is_ansible_inventory(args.inventory):
            raise InvalidSpec("sweep --inventory takes an Ansible inventory (YAML or INI); a local sweep needs none",
                              text=args.inventory, field="inventory")
        from .fleet.command import cmd_fleet_sweep

        return cmd_fleet_sweep(args)
    from .kernel.sweep import leftovers, sweep

    if getattr(args, "dry_run", False):
        runs = leftovers()
        if args.json:
            print(json.dumps({"dry_run": True, "dead_runs": runs}, indent=1))
            return EXIT_OK
        for run in runs:
            print(f"dead run {run['run_id']} ({run['kind']}, pid {run['pid']}): sweep would")
            for action in run["actions"]:
                print(f"  {action['action']}")
            if not run["actions"]:
                print("  delete its empty ledger")
        print(f"{len(runs)} dead run(s); nothing changed (dry run)")
        return EXIT_OK
    report = sweep()
    if args.json:
        print(json.dumps({"swept_runs": report.swept_runs, "removed": report.removed,
                          "live_runs": report.live_runs, "failures": report.failures,
                          "clsacts_kept": report.clsacts_kept}, indent=1))
    else:
        for entry in report.removed:
            if entry["kind"] == "restart":  # a kill-process run died holding its target down
                print(f"restarted what a dead run killed: {entry.get('unit') or entry.get('command')}")
                continue
            if entry["kind"] == "temp-file":  # a state file's half-written copy (its writer died before renaming)
                print(f"removed {entry['path']}")
                continue
            print(f"removed {entry['kind']} on {entry.get('ifname')}"
                  + (f" (netns {entry['netns']})" if entry.get("netns") else ""))
        for kept in report.clsacts_kept:  # a clsact we made, kept while anything is attached to it
            print(f"kept clsact on {kept['ifname']}" + (f" (netns {kept['netns']})" if kept.get("netns") else "")
                  + f": {kept['why']}")
        print(f"swept {len(report.swept_runs)} dead run(s); {len(report.live_runs)} live run(s) left alone")
        if report.swept_runs:
            print(f"recorded as failed (owner died; swept): {', '.join(report.swept_runs)}; see `status`")
        for run_id, entry, error in report.failures:
            print(f"FAILED to remove {entry['kind']} of run {run_id}: {error}", file=sys.stderr)
    return EXIT_ERROR if report.failures else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .kernel.ledger import Ledger, describe

    runs = []
    for ledger in Ledger.all():
        status = ledger.read_status() or {}
        alive = ledger.owner_alive
        runs.append({"run_id": ledger.run_id, "pid": ledger.pid, "alive": alive,
                     "flows": ledger.meta.get("flows"), "engine": ledger.meta.get("engine"),
                     "kind": ledger.meta.get("kind", "cli"),
                     # the status file is written once the fault is active: before that, pending
                     "state": (status.get("state", "running") if status else "pending") if alive else "dead",
                     "objects": len(ledger.entries), "status": status,
                     **({} if alive else {"sweep_would": [describe(e) for e in reversed(ledger.entries)]})})
    from .kernel.ledger import recent_finished

    recent = args.recent if args.recent is not None else (0 if args.json else 5)
    finished = recent_finished(recent) if recent > 0 else []
    from .livestatus import live_experiments

    experiments = live_experiments()
    if args.json:
        print(json.dumps(runs + [{"run_id": e["run_id"], "pid": e["pid"], "alive": True, "kind": "experiment",
                                  "state": e.get("state"), "status": e} for e in experiments]
                         + [{"run_id": f.get("run_id"), "alive": False, "finished": True,
                                  "kind": f.get("kind"), "state": f.get("state"), "status": f}
                                 for f in finished], indent=1))
        return EXIT_OK
    if not runs:
        print("no active faults")
    for e in experiments:
        print(f"{e['run_id']}  pid {e['pid']}  experiment  {e.get('state')} ({e.get('step')})  {e.get('title', '')}"
              + (f"  halt: {e['halt']}" if e.get("halt") else ""))
    for run in runs:
        st = run["status"]
        state = run["state"] if run["alive"] else "DEAD (its rules have expired; run `chaos-inject sweep`)"
        print(f"{run['run_id']}  pid {run['pid']}  {run['kind']}  {state}  flows {', '.join(run['flows'] or [])}  "
              f"{st.get('fault', '')}")
        if not run["alive"]:
            for action in run.get("sweep_would", []):
                print(f"  sweep would: {action}")
        if st:
            print(f"  elapsed {st.get('elapsed_s', 0):.1f}s, remaining {st.get('remaining_s', 0):.1f}s")
            for rule in st.get("rules", []):
                c = st.get("counters", {}).get(str(rule["id"]), {})
                print(f"  #{rule['id']} {rule['match']} on {rule['interface']}: matched "
                      f"{c.get('matched_packets', 0)} dropped {c.get('dropped_packets', 0)} corrupted "
                      f"{c.get('corrupted_packets', 0)} duplicated {c.get('duplicated_packets', 0)}")
            for r in (st.get("recording") or {}).get("recorders", []):
                p50 = r.get("recent_p50_ms")
                print(f"  recording {r['source']}: {r['samples']} samples, lost {r['lost']}"
                      + (f", latest median {p50:.3f} ms" if p50 is not None else ""))
    if finished:
        print("recently finished:")
        for f in finished:
            ended = time.strftime("%H:%M:%S", time.localtime(f.get("updated", 0)))
            what = f.get("fault") or f.get("title") or ""
            print(f"  {f.get('run_id')}  {f.get('kind', '')}  {f.get('state')}  at {ended}  {what}"
                  + (f"  ({f['error']})" if f.get("error") else ""))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
