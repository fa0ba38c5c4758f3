"""`chaos-inject cpu-stress` and `chaos-inject kill-process`: the host faults as runs with the network faults'
guarantees.

Each is a run like an injection: input checked before anything happens (exit 2), a ledger and a status file
(`status` lists it, `stop RUN_ID` ends it), SIGINT/SIGTERM/SIGHUP end it cleanly (130/143), its final state
goes to the history. What outlives a SIGKILL: CPU workers end by themselves (they watch their parent, and
have their own deadline); a killed process whose run held it down is restarted by `chaos-inject sweep` from
the ledger's ``restart`` entry, written before any signal is sent.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InvalidSpec
from ..hostrun import HostRun
from ..spec import parse_percent_ratio
from ..spec.units import parse_duration_s


def add_host_parsers(sub) -> None:
    cpu = sub.add_parser("cpu-stress", help="N worker processes, each at L %% of one CPU, for a duration "
                         "(Chaos Mesh StressChaos cpu); measured load reported")
    cpu.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    cpu.add_argument("--load", default="100%", help="per worker, percent of one CPU (default 100%%)")
    cpu.add_argument("--duration", required=True, help="e.g. 30s (required: a stress never outlives its run)")
    cpu.add_argument("--json", action="store_true", help="the final result as JSON on stdout")
    kill = sub.add_parser("kill-process", help="stop a systemd unit, or processes by pid/name (SIGTERM, SIGKILL "
                          "after --grace); with --hold, restart them after it (Chaos Mesh pod-kill/pod-failure)")
    target = kill.add_mutually_exclusive_group(required=True)
    target.add_argument("--service", metavar="UNIT", help="a systemd unit (needs systemd as PID 1)")
    target.add_argument("--pid", type=int)
    target.add_argument("--name", help="command name, as in /proc/PID/comm")
    kill.add_argument("--mode", choices=("single", "one", "all"), default="single",
                      help="--name matching several processes: refuse (single), a seeded pick (one), all")
    kill.add_argument("--seed", type=int)
    kill.add_argument("--grace", default="5s", help="SIGTERM -> SIGKILL wait (default 5s)")
    kill.add_argument("--restart", metavar="CMD", help="shell command that brings a pid/name target back")
    kill.add_argument("--hold", help="keep it down this long, then restart (default: restart at once, as "
                      "pod-kill; without --restart a pid/name target stays down)")
    kill.add_argument("--json", action="store_true")


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _report(status: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(status, indent=1, default=str))
    else:
        print(text)


def cmd_cpu_stress(args: argparse.Namespace) -> int:
    from ..hostfaults.cpu import CpuStress

    load = parse_percent_ratio(args.load, field="load") * 100
    duration_s = parse_duration_s(args.duration, field="duration")
    stress = CpuStress(args.workers, load, duration_s)  # validates workers, load, duration: nothing started yet
    run = HostRun("cpu-stress", f"cpu stress {args.workers} worker(s) at {load:g}% for {args.duration}",
                  duration_s)
    with run.running() as owner:
        stress.start()
        owner.callback(stress.stop)  # workers end with the run on every exit path
        run.extra["pids"] = stress.pids
        run.active()
        run.hold(duration_s + 1.0, done=lambda: not stress.poll())
    result = stress.stop()
    status = run.finish(workers=result.workers, load_percent=result.load_percent,
                        achieved_percent=round(result.achieved_percent, 2), cpu_s=round(result.cpu_s, 3),
                        ran_s=round(result.elapsed_s, 3), waited_percent=_round(result.waited_percent, 2))
    waited = "" if result.waited_percent is None else \
        f"; each waited {result.waited_percent:.1f}% of the time for a CPU (the host's other load)"
    _report(status, args.json, f"cpu-stress {run.run_id}: {run.state}; {result.workers} worker(s) asked "
            f"{result.load_percent:g}%, achieved {result.achieved_percent:.1f}% of one CPU each over "
            f"{result.elapsed_s:.1f}s (measured from /proc utime+stime){waited}")
    return run.exit_code()


def cmd_kill_process(args: argparse.Namespace) -> int:
    from ..hostfaults.process import RESTART_MARKER_ENV, ProcessKill
    from ..kernel.ledger import process_start_ticks

    grace_s = parse_duration_s(args.grace, field="grace")
    hold_s = parse_duration_s(args.hold, field="hold") if args.hold else 0.0
    if args.restart is not None and not args.restart.strip():
        raise InvalidSpec("the restart command is empty", field="--restart")
    fault = ProcessKill(args.service, pid=args.pid, name=args.name, restart_command=args.restart,
                        grace_s=grace_s, mode=args.mode, seed=args.seed)
    # before any run exists: a missing process or a host without systemd is an error with nothing done
    if args.service:
        from ..errors import Unsupported
        from ..hostfaults.process import systemd_is_init

        if not systemd_is_init():
            raise Unsupported(f"cannot stop unit {args.service}: systemd is not PID 1 here; name the process "
                              "with --pid or --name and give --restart")
    targets = fault.choose_targets()  # fixed now: the ledger records them, inject() signals only them
    run = HostRun("kill-process", f"kill {fault.target}" + (f", held {args.hold}" if args.hold else ""), hold_s)
    with run.running() as owner:
        # the restart entry goes into the ledger before any signal: `sweep` brings the service back if we die
        # holding it down
        entry = {"kind": "restart", "unit": args.service, "command": args.restart,
                 "pids": {str(p): process_start_ticks(p) for p in targets}, "marker": run.run_id}
        fault.restart_env = {RESTART_MARKER_ENV: run.run_id}  # sweep sees what our restart already started
        owner.ledger.append(entry)

        def restore() -> None:  # on every exit path (owner's LIFO close); restore() itself runs once
            fault.restore()
            if entry in owner.ledger.entries:
                owner.ledger.remove_entry(entry)

        owner.callback(restore)
        result = fault.inject()
        run.extra.update(pids=list(result.pids), signals=dict(result.signals), stopped_s=round(result.stopped_s, 4))
        run.active()
        if hold_s:
            run.hold(hold_s)
        restore()  # here, not only at close: a failed restart is the run's error (failed), not a cleanup's
    result = fault.result
    status = run.finish(restarted=bool(result and result.restarted),
                        restart_pid=result.restart_pid if result else None)
    if result is None:
        text = f"kill-process {run.run_id}: {run.state}: {run.error}"
    else:
        text = (f"kill-process {run.run_id}: {run.state}; {fault.target}: "
                + ", ".join(f"{p} {s}" for p, s in result.signals.items())
                + f"; gone after {result.stopped_s * 1000:.1f} ms; "
                + ("restarted" if result.restarted else "NOT restarted (no --restart)" if not args.service
                   else "not restarted"))
    _report(status, args.json, text)
    return run.exit_code()


__all__ = ["add_host_parsers", "cmd_cpu_stress", "cmd_kill_process"]
