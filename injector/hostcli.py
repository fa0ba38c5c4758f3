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
import os
import secrets
import signal
import sys
import time
from typing import Any

from .errors import ChaosInjectError, Interrupted, InvalidSpec
from .spec import parse_duration_ns, parse_percent_ratio

EXIT_OK, EXIT_ERROR = 0, 1
TICK_S = 0.05          # stop requests and CPU samples (the last sample before a worker exits counts)
STATUS_EVERY_S = 0.5


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


def _seconds(text: str, field: str) -> float:
    return parse_duration_ns(text, field=field) / 1e9


class _HostRun:
    """Ledger, status file, stop requests and signals for one host fault (no kernel objects of its own)."""

    def __init__(self, kind: str, describe: str, duration_s: float):
        from .kernel.owner import KernelOwner

        self.kind, self.describe, self.duration_s = kind, describe, duration_s
        self.run_id = f"{kind}-{secrets.token_hex(4)}"
        self.owner = KernelOwner(self.run_id, meta={"kind": kind, "flows": [], "fault": describe,
                                                    "engine": "host"})
        self.started = time.time()
        self.t0 = time.monotonic()
        self.extra: dict[str, Any] = {}

    def status(self, state: str, **more: Any) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        return {"run_id": self.run_id, "pid": os.getpid(), "kind": self.kind, "engine": "host", "state": state,
                "flows": [], "fault": self.describe, "started": self.started, "updated": time.time(),
                "elapsed_s": elapsed, "duration_s": self.duration_s,
                "remaining_s": max(0.0, self.duration_s - elapsed) if state == "running" else 0.0,
                "rules": [], "counters": {}, **self.extra, **more}

    def write(self, state: str = "running") -> None:
        self.owner.ledger.write_status(self.status(state))

    def wait(self, seconds: float, done=lambda: False) -> str | None:
        """Sleep up to ``seconds``; a `chaos-inject stop` request ends it early (returns that state)."""
        end = time.monotonic() + seconds
        written = time.monotonic()
        while time.monotonic() < end and not done():
            requested = self.owner.ledger.stop_requested()
            if requested:
                return requested if requested in ("stopped", "halted") else "stopped"
            time.sleep(min(TICK_S, max(0.0, end - time.monotonic())))
            if time.monotonic() - written >= STATUS_EVERY_S:  # the status file is fsynced: not every tick
                self.write()
                written = time.monotonic()
        return None

    def final(self, state: str, **more: Any) -> dict[str, Any]:
        from .kernel.ledger import record_final

        status = self.status(state, **more)
        try:
            record_final(status)
        except OSError:
            pass
        return status


def _report(status: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(status, indent=1, default=str))
    else:
        print(text)


def cmd_cpu_stress(args: argparse.Namespace) -> int:
    from .hostfaults.cpu import CpuStress

    load = parse_percent_ratio(args.load, field="load") * 100
    duration_s = _seconds(args.duration, "duration")
    stress = CpuStress(args.workers, load, duration_s)  # validates workers, load, duration: nothing started yet
    run = _HostRun("cpu-stress", f"cpu stress {args.workers} worker(s) at {load:g}% for {args.duration}",
                   duration_s)
    state, error = "completed", None
    try:
        with run.owner as owner:
            stress.start()
            owner.callback(stress.stop)  # workers end with the run on every exit path
            run.extra["pids"] = stress.pids
            run.write()
            state = run.wait(duration_s + 1.0, done=lambda: (stress._sample(), not stress.running)[1]) or state
    except Interrupted as exc:
        state, error = "stopped", exc
    except ChaosInjectError as exc:
        state, error = "failed", exc
    result = stress.stop()
    status = run.final(state, stop_reason=_stop_reason(state, error),
                       error=str(error) if error and state == "failed" else None,
                       workers=result.workers, load_percent=result.load_percent,
                       achieved_percent=round(result.achieved_percent, 2), cpu_s=round(result.cpu_s, 3),
                       ran_s=round(result.elapsed_s, 3))
    _report(status, args.json, f"cpu-stress {run.run_id}: {state}; {result.workers} worker(s) asked "
            f"{result.load_percent:g}%, achieved {result.achieved_percent:.1f}% of one CPU each over "
            f"{result.elapsed_s:.1f}s (measured from /proc utime+stime)")
    return _exit(state, error)


def cmd_kill_process(args: argparse.Namespace) -> int:
    from .hostfaults.process import ProcessKill
    from .kernel.ledger import process_start_ticks

    grace_s = _seconds(args.grace, "grace")
    hold_s = _seconds(args.hold, "hold") if args.hold else 0.0
    if args.restart is not None and not args.restart.strip():
        raise InvalidSpec("the restart command is empty", field="--restart")
    fault = ProcessKill(args.service, pid=args.pid, name=args.name, restart_command=args.restart,
                        grace_s=grace_s, mode=args.mode, seed=args.seed)
    # before any run exists: a missing process or a host without systemd is an error with nothing done
    if args.service:
        from .errors import Unsupported
        from .hostfaults.process import systemd_is_init

        if not systemd_is_init():
            raise Unsupported(f"cannot stop unit {args.service}: systemd is not PID 1 here; name the process "
                              "with --pid or --name and give --restart")
    targets = fault.choose_targets()  # fixed now: the ledger records them, inject() signals only them
    run = _HostRun("kill-process", f"kill {fault.target}" + (f", held {args.hold}" if args.hold else ""), hold_s)
    state, error, result = "completed", None, None
    try:
        with run.owner as owner:
            # the restart entry goes into the ledger before any signal: `sweep` brings the service back if
            # we die holding it down
            entry = {"kind": "restart", "unit": args.service, "command": args.restart,
                     "pids": {str(p): process_start_ticks(p) for p in targets}}
            owner.ledger.append(entry)

            def restore() -> None:  # once, on every exit path (owner's LIFO close)
                fault.restore()
                if entry in owner.ledger.entries:
                    owner.ledger.remove_entry(entry)

            owner.callback(restore)
            result = fault.inject()
            run.extra.update(pids=list(result.pids), signals=dict(result.signals),
                             stopped_s=round(result.stopped_s, 4))
            run.write()
            if hold_s:
                state = run.wait(hold_s) or state
            restore()
    except Interrupted as exc:
        state, error = "stopped", exc
    except ChaosInjectError as exc:
        state, error = "failed", exc
    result = result or fault.result
    status = run.final(state, stop_reason=_stop_reason(state, error),
                       error=str(error) if error and state == "failed" else None,
                       restarted=bool(result and result.restarted),
                       restart_pid=result.restart_pid if result else None)
    if result is None:
        text = f"kill-process {run.run_id}: {state}: {error}"
    else:
        text = (f"kill-process {run.run_id}: {state}; {fault.target}: "
                + ", ".join(f"{p} {s}" for p, s in result.signals.items())
                + f"; gone after {result.stopped_s * 1000:.1f} ms; "
                + ("restarted" if result.restarted else "NOT restarted (no --restart)" if not args.service
                   else "not restarted"))
    _report(status, args.json, text)
    return _exit(state, error)


def _stop_reason(state: str, error: BaseException | None) -> str | None:
    if isinstance(error, Interrupted):
        return signal.Signals(error.signum).name
    return None if state == "completed" else state


def _exit(state: str, error: BaseException | None) -> int:
    if isinstance(error, Interrupted):
        return 128 + error.signum
    if state == "failed":
        print(f"chaos-inject: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


__all__ = ["add_host_parsers", "cmd_cpu_stress", "cmd_kill_process"]
