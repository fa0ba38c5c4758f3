"""`chaos-inject`: the parser and the dispatch to each command's module; the commands are the package's rooms
(inject, sweep, status here at start-up; the others imported only when they run, see _COMMAND_PARSERS)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import ChaosInjectError, CleanupFailed, InvalidSpec, NotPermitted, Unsupported
from .exits import EXIT_ERROR, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from .inject import add_inject_arguments, cmd_inject
from .status import add_status_parser, cmd_status
from .sweep import add_sweep_parser, cmd_sweep

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


# Commands whose parser lives in their own module: (module, the function that adds it). A run builds only its own
# command's parser; the others are a line of help each, so `--help` and `status` import none of those modules
# (start-up time: bench/startup_time.py). The help lines are the modules' own (tests/unit/test_cli_startup.py).
_COMMAND_PARSERS = {
    "demo": (".demo", "add_demo_parser"),
    "run": (".experiment", "add_run_parser"),
    "lab": (".lab", "add_lab_parser"),
    "stop": (".stop", "add_stop_parser"),
    "schedule": (".schedule", "add_schedule_parser"),
    "cpu-stress": (".host", "add_host_parsers"),
    "kill-process": (".host", "add_host_parsers"),
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
    add_inject_arguments(inject)
    add_sweep_parser(sub)
    add_status_parser(sub)
    doctor = sub.add_parser("doctor", help="what this kernel supports, which engine serves which fault, and the "
                                           "delay engine's precision measured now (a ~1 s self-test)")
    doctor.add_argument("--no-self-test", action="store_true",
                        help="print the delay engine's cited precision instead of measuring it")
    doctor.add_argument("--warm-cache", action="store_true",
                        help="also compile every classifier variant this kernel uses into the program cache, so "
                             "no fault waits for bcc (~1 s each; after an install or a kernel upgrade)")
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
            from .doctor import cmd_doctor

            return cmd_doctor(args)
        if args.command == "lab":
            from .lab import run_lab_command

            return run_lab_command(args)
        if args.command == "run":
            from .experiment import cmd_run
            from .fleet import fleet_carrier

            return cmd_run(args, carrier=fleet_carrier(args))
        if args.command == "stop":
            from .stop import cmd_stop

            return cmd_stop(args)
        if args.command == "schedule":
            from .schedule import cmd_schedule

            return cmd_schedule(args, build_parser=build_parser)
        if args.command in ("cpu-stress", "kill-process"):
            from .host import cmd_cpu_stress, cmd_kill_process

            return (cmd_cpu_stress if args.command == "cpu-stress" else cmd_kill_process)(args)
        if args.command == "notebook":
            from .notebook import cmd_notebook

            return cmd_notebook(args)
        if args.command == "demo":
            from .demo import cmd_demo

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
