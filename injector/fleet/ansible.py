"""Rounds of Ansible through ansible-runner (a library call: ``ansible_runner.run``), with our collection.

One round = one play of one task of the chaosinject.fleet collection on some hosts of the user's inventory
(``limit``: nothing runs on a host that is not in it). Each host's outcome comes back from the runner's events:
ok (with the module's result), failed, or unreachable. A FleetSession keeps one private data directory for all
its rounds, so SSH connections are reused (ControlPersist) and renewals stay cheap.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import crashpoints
from ..errors import ChaosInjectError, Unsupported
from .ledger import private_folder_parent

COLLECTIONS_ENV = "CHAOS_INJECT_COLLECTIONS_PATH"
# a file: every round's start and end and Ansible's events, one JSON line each, with wall-clock times (for
# bench/fleet_onset.py --phases: where a round's time goes)
TRACE_ENV = "CHAOS_INJECT_FLEET_TRACE"
# host variables the tasks read: the target's chaos-inject and state directory
CHAOS_INJECT_TASKS = ("fault", "status", "sweep")     # the modules that call the target's chaos-inject
# run_gated's gate on a target: its chaos-inject is there (a POSIX shell command, run by Ansible's raw)
GATE_COMMAND = ("exe={{ chaos_inject_bin | default('chaos-inject') | quote }}; command -v \"$exe\" >/dev/null || "
                "{ echo \"chaos-inject not found: $exe (the install role puts it there)\"; exit 3; }")
TASK_VARS = {"executable": "{{ chaos_inject_bin | default('chaos-inject') }}",
             "state_dir": "{{ chaos_inject_state_dir | default(omit) }}"}


def collections_path() -> str:
    """Where ansible_collections/chaosinject/fleet lives: $CHAOS_INJECT_COLLECTIONS_PATH, else this checkout's
    ansible/ folder."""
    explicit = os.environ.get(COLLECTIONS_ENV)
    candidates = [Path(explicit)] if explicit else []
    candidates.append(Path(__file__).resolve().parents[2] / "ansible")
    for candidate in candidates:
        if (candidate / "ansible_collections" / "chaosinject" / "fleet" / "galaxy.yml").exists():
            return str(candidate)
    raise Unsupported(f"the chaosinject.fleet collection was not found (looked in {', '.join(map(str, candidates))}"
                      f"; set {COLLECTIONS_ENV})")


@dataclass
class HostOutcome:
    host: str
    status: str                          # ok | failed | unreachable | skipped
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        msg = self.result.get("msg") or self.result.get("stderr") or ""
        return str(msg).strip().splitlines()[0] if str(msg).strip() else self.status


@dataclass
class Round:
    task: str
    outcomes: dict[str, HostOutcome]
    rc: int

    def hosts(self, status: str) -> list[str]:
        return sorted(h for h, o in self.outcomes.items() if o.status == status)

    @property
    def ok(self) -> bool:
        return all(o.status == "ok" for o in self.outcomes.values())


class AnsibleRounds:
    """Plays of one task each, against ``inventory`` (a path), through ansible_runner.run."""

    def __init__(self, inventory: str, *, on_event: Callable[[str, str, dict], None] | None = None,
                 connect_timeout_s: int = 5, forks: int = 32, verbose: bool = False):
        try:
            import ansible_runner  # noqa: F401
        except ImportError:
            raise Unsupported("the fleet needs ansible-runner: pip install 'chaos-inject[fleet]' (make setup does)") \
                from None
        self.inventory = os.path.abspath(inventory)
        self.collections = collections_path()
        self.on_event = on_event
        self.connect_timeout_s = connect_timeout_s
        self.forks = forks
        self.verbose = verbose
        # the pid in the name: `sweep --inventory` removes the folder of a controller killed before it wrote a
        # ledger (fleet.ledger.orphaned_private_folders)
        with crashpoints.step("make fleet private folder"):
            self.private = tempfile.mkdtemp(prefix=f"chaos-fleet-{os.getpid()}-", dir=private_folder_parent())
        self._lock = threading.Lock()
        self._trace_path = os.environ.get(TRACE_ENV) or None

    def _trace(self, what: str, **fields: Any) -> None:
        if self._trace_path:
            import json
            import time

            with open(self._trace_path, "a") as handle:
                handle.write(json.dumps({"t": time.time(), "what": what, **fields}) + "\n")

    def close(self) -> None:
        """End the SSH connections this session kept open (ControlPersist masters), then remove its folder. A
        controller killed before this leaves them to end by themselves after ControlPersist (30 s) idle."""
        import glob
        import subprocess

        for socket_path in glob.glob(os.path.join(self.private, "cp", "*")):
            try:
                subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "chaos-inject-fleet"],
                               capture_output=True, timeout=5, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
        with crashpoints.step("remove fleet private folder"):
            shutil.rmtree(self.private, ignore_errors=True)

    def __enter__(self) -> "AnsibleRounds":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _env(self) -> dict[str, str]:
        bindir = os.path.dirname(sys.executable)   # ansible-playbook beside our interpreter (the venv)
        return {
            "PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "ANSIBLE_COLLECTIONS_PATH": self.collections,
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_TIMEOUT": str(self.connect_timeout_s),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(self.private, "cp"),
            "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=30s -o ServerAliveInterval=5 "
                                "-o ServerAliveCountMax=2",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_PYTHON_INTERPRETER": os.environ.get("ANSIBLE_PYTHON_INTERPRETER", "auto_silent"),
            "ANSIBLE_HOME": os.path.join(self.private, "home"),
        }

    def run(self, task: str, args: dict[str, Any], hosts: list[str], *, extravars: dict[str, Any] | None = None,
            check: bool = False) -> Round:
        """Run the collection's module ``task`` (e.g. ``fault``) with ``args`` on ``hosts`` (inventory names)."""
        if not hosts:
            return Round(task, {}, 0)
        play = {"name": f"chaos-inject {task}", "hosts": "all", "gather_facts": False,
                "tasks": [self._task(task, task, args)]}
        rounds = self._play(play, [task], hosts, extravars=extravars, check=check)
        return rounds[task]

    def run_gated(self, task: str, args: dict[str, Any], hosts: list[str], *,
                  extravars: dict[str, Any] | None = None) -> tuple[Round, Round]:
        """One play of two tasks: a gate on every host, then, only if it was ok on every host, the module
        ``task`` with ``args`` on every host. ``any_errors_fatal`` with the linear strategy: every host finishes
        the gate before any host starts the task, and a host failed or unreachable at the gate ends the play on
        all of them, so nothing is changed anywhere. The gate is a ``raw`` command (SSH up, the target's
        chaos-inject there: no module, no Python on the target; at 16 hosts on 2 CPUs the module's own check
        mode, a dry run of chaos-inject on every host, cost seconds); a host that refuses its plan fails the task
        instead, which the caller rolls back. Returns (the gate's round, the task's round; a host it never
        reached is ``not-run``)."""
        gate = f"{task} (gate)"
        play = {"name": f"chaos-inject {task}", "hosts": "all", "gather_facts": False, "any_errors_fatal": True,
                "strategy": "linear", "tasks": [{"name": gate, "ansible.builtin.raw": GATE_COMMAND},
                                                self._task(task, task, args)]}
        rounds = self._play(play, [gate, task], hosts, extravars=extravars, missing="not-run")
        for outcome in rounds[gate].outcomes.values():      # raw says "non-zero return code": say what failed
            if outcome.status == "failed" and (outcome.result.get("stdout") or "").strip():
                outcome.result = {**outcome.result, "msg": outcome.result["stdout"].strip()}
        return rounds[gate], Round(task, rounds[task].outcomes, rounds[task].rc)

    @staticmethod
    def _task(name: str, module: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, f"chaosinject.fleet.{module}": {
            **(TASK_VARS if module in CHAOS_INJECT_TASKS else {}), **args}}

    def _play(self, play: dict[str, Any], names: list[str], hosts: list[str], *,
              extravars: dict[str, Any] | None = None, check: bool = False, missing: str = "failed"
              ) -> dict[str, Round]:
        """Run ``play`` (tasks named ``names``) on ``hosts``; each task's outcomes per host (a host a task has
        no result for: ``missing`` for every task but the first, which is always ``failed``)."""
        import ansible_runner

        outcomes: dict[str, dict[str, HostOutcome]] = {name: {} for name in names}

        def handler(event: dict) -> bool:
            data = event.get("event_data") or {}
            host = data.get("host")
            kind = event.get("event", "")
            status = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
                      "runner_on_skipped": "skipped"}.get(kind)
            if self._trace_path:
                self._trace(kind, task=data.get("task"), host=host, created=event.get("created"),
                            duration=data.get("duration"), remote_s=(data.get("res") or {}).get("took_s"))
            task_name = data.get("task") if data.get("task") in outcomes else names[-1]
            if host and status and host in hosts:
                res = data.get("res") or {}
                if status == "failed" and data.get("ignore_errors"):
                    status = "ok"
                outcomes[task_name][host] = HostOutcome(host, status, res)
                if self.on_event:
                    self.on_event(host, status, res)
            return False      # nothing kept on disk beyond what the runner writes anyway

        with self._lock:
            # ansible-runner keeps what it was given (cmdline, extravars) in env/ and reads it back when a later
            # call does not say: a check round's --check would stick. Each round says everything anew.
            shutil.rmtree(os.path.join(self.private, "env"), ignore_errors=True)
            self._trace("round_start", task=play["name"], check=check, tasks=len(names), hosts=len(hosts))
            runner = ansible_runner.run(
                private_data_dir=self.private, playbook=[play], inventory=self.inventory,
                limit=",".join(hosts), extravars=extravars or {}, envvars=self._env(), forks=min(self.forks,
                                                                                                 len(hosts)),
                quiet=not self.verbose, event_handler=handler, cmdline="--check" if check else None,
                rotate_artifacts=1,
                # without a cancel callback ansible-runner installs SIGINT/SIGTERM handlers of its own (and keeps
                # them): a round always runs to its end; the caller decides what a signal means between rounds
                cancel_callback=lambda: False)
            self._trace("round_end", task=play["name"], check=check, rc=runner.rc)
        for i, name in enumerate(names):
            for host in hosts:          # a host the play never reached (e.g. no match in the inventory)
                if i == 0 or missing == "failed":
                    outcomes[name].setdefault(host, HostOutcome(host, "failed",
                                                                {"msg": "no result from Ansible for this host"}))
                else:
                    outcomes[name].setdefault(host, HostOutcome(host, missing, {"msg": "not run (the play ended "
                                                                                       "before this task)"}))
        if runner.rc not in (0, 2, 4) and all(o.status == "failed" for o in outcomes[names[0]].values()):
            stdout = runner.stdout.read() if runner.stdout else ""
            raise ChaosInjectError(f"ansible-runner ended with {runner.status} (rc {runner.rc}): "
                                   f"{stdout.strip()[-400:]}")
        return {name: Round(name, outcomes[name], runner.rc) for name in names}
