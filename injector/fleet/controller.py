"""One fault on the hosts of a fleet plan, carried by Ansible rounds of the collection's ``fault`` module.

The rounds the CLI's fleet inject and a fleet experiment share (:class:`FleetFault`):
1. ``preflight()``: the module in check mode on every chosen host (reachable? chaos-inject there? the host's own
   dry-run plan accepted?); ``admit()`` refuses on a failed or unreachable host, or (``allow_unreachable``)
   leaves the unreachable ones out and says so;
2. ``start()``: ``state=present`` on every host; if any host fails, every reachable host is rolled back and
   :class:`FleetApplyFailed` raised;
3. ``hold()``: the same task again every third of the heartbeat timeout (idempotent: it renews the host's
   heartbeat and returns its counters) until the end, a stop, or every host's run ended by itself;
4. ``stop()``: ``state=absent`` on every host, which also brings back each host's final record;
   ``collect()`` merges them (fleet.results).
``begin()`` is a lighter 1 and 2 in one Ansible play when the rounds can (``run_gated``: a gate on every host,
SSH up and its chaos-inject there, a shell command and no module; then the apply on every host,
``any_errors_fatal``), so a run pays ansible-playbook's start-up and the SSH connections once and no host's dry
run: a host failed or unreachable at the gate still refuses the run before any host is changed; a host that
refuses its plan fails the apply, and every host is rolled back. With ``allow_unreachable`` (the unreachable ones
are left out, then the rest started) it is 1 (the module's check mode) then 2.
The controller keeps no state a host's safety depends on: killed, or cut off, each host ends its fault when its
heartbeat goes stale, and its in-kernel lease ends it if its supervisor dies too. With a ``ledger``
(fleet.ledger.FleetLedger) it notes, before the start round, which hosts it will touch, and clears them as they
come back clean, so ``status`` and ``sweep --inventory`` know what a killed controller left. The rounds that
change hosts are crash points (crashpoints.step): "start on hosts", "renew on hosts" (once), "stop on hosts",
"roll back on hosts"; the ledger's writes are "write fleet ledger" / "delete fleet ledger".
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .. import crashpoints
from ..errors import ApplyFailed
from .plan import FleetPlan
from .results import result_json

__all__ = ["FleetApplyFailed", "FleetFault", "FleetRefused", "fleet_task"]

FLOWS_VAR = "chaos_fleet_flows"


class FleetRefused(ApplyFailed):
    """The preflight refused the run: nothing was changed on any host."""


class FleetApplyFailed(ApplyFailed):
    """The fault failed on some host; every reachable host was rolled back (``not_reached``: those it was not)."""

    def __init__(self, message: str, not_reached: list[str]):
        super().__init__(message)
        self.not_reached = not_reached


def fleet_task(name: str, fault: dict[str, Any], *, direction: str, engine: str, duration: str, lease: str,
               heartbeat_timeout: str, seed: int | None = None) -> dict[str, Any]:
    """The fault module's arguments for one fleet run (each host's flows come from a host variable)."""
    task = {"name": name, "fault": dict(fault), "direction": direction, "engine": engine, "duration": duration,
            "lease": lease, "heartbeat_timeout": heartbeat_timeout,
            "flows": "{{ %s[inventory_hostname] }}" % FLOWS_VAR}
    if seed is not None:
        task["seed"] = seed
    return task


class FleetFault:
    """One fleet fault's rounds. ``rounds``: an AnsibleRounds (or anything with its ``run``); ``progress``: an
    object whose ``phase`` attribute names the round under way (the CLI's per-host lines), optional."""

    def __init__(self, rounds, plan: FleetPlan, task: dict[str, Any], *, heartbeat_ns: int, progress=None,
                 warn: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 ledger=None):
        self.rounds = rounds
        self.ledger = ledger                        # a FleetLedger, or None (nothing noted on this machine)
        self.plan = plan
        self.task = task
        self.name = task["name"]
        self.heartbeat_ns = heartbeat_ns
        self.progress = progress
        self.warn = warn or (lambda text: None)
        self.clock = clock
        self.hosts: list[str] = list(plan.hosts)
        self.left_out: list[str] = []
        self.extravars = {FLOWS_VAR: {h: list(f) for h, f in plan.assignments.items()}}
        self.last: dict[str, dict] = {}            # host -> its last ok result (counters, run_state)
        self.preflight_round = None
        self.final_round = None
        self._last_round_start: float | None = None
        self._lock = threading.Lock()               # stop() from another thread than hold()'s

    def _phase(self, name: str) -> None:
        if self.progress is not None:
            self.progress.phase = name

    def _round(self, args: dict[str, Any], hosts: list[str], *, check: bool = False):
        return self.rounds.run("fault", args, hosts, extravars=self.extravars, check=check)

    # -- 1. preflight ------------------------------------------------------------------------------------
    def preflight(self):
        self._phase("preflight")
        self.preflight_round = self._round(self.task, self.hosts, check=True)
        return self.preflight_round

    def admit(self, *, allow_unreachable: bool) -> list[str]:
        """After preflight(): raise FleetRefused, or return the hosts left out (unreachable, allowed)."""
        pre = self.preflight_round
        bad, unreachable = pre.hosts("failed"), pre.hosts("unreachable")
        if bad:
            raise FleetRefused("refused: the check failed on " + "; ".join(
                f"{h}: {pre.outcomes[h].message}" for h in bad) + "; nothing was changed")
        if unreachable:
            what = ", ".join(f"{h} ({pre.outcomes[h].message})" for h in unreachable)
            if not allow_unreachable:
                raise FleetRefused(f"refused: unreachable: {what}; nothing was changed on any host "
                                   "(--allow-unreachable runs on the others)")
            self.warn(f"--allow-unreachable: running WITHOUT {what}")
            self.hosts = [h for h in self.hosts if h not in unreachable]
            self.left_out = unreachable
            if not self.hosts:
                raise FleetRefused("no reachable host left")
        return self.left_out

    # -- 1 and 2 in one play ----------------------------------------------------------------------------------
    def begin(self, *, allow_unreachable: bool = False):
        """preflight(), admit(), start(): in one play (``rounds.run_gated``) unless ``allow_unreachable`` or the
        rounds cannot; raises FleetRefused (nothing changed on any host) or FleetApplyFailed (rolled back) as
        they do; returns the apply's round."""
        gated = getattr(self.rounds, "run_gated", None)
        if allow_unreachable or gated is None:
            self.preflight()
            self.admit(allow_unreachable=allow_unreachable)
            return self.start()
        self._phase("preflight+apply")
        if self.ledger is not None:
            self.ledger.plan(self.hosts)            # before any host is asked: every host it may touch
        self._last_round_start = self.clock()
        with crashpoints.step("start on hosts"):
            self.preflight_round, applied = gated("fault", self.task, self.hosts, extravars=self.extravars)
        if not self.preflight_round.ok:
            changed = applied.hosts("ok") + applied.hosts("failed") + applied.hosts("unreachable")
            if not changed:                         # as it must be: the play ended at the check
                if self.ledger is not None:
                    self.ledger.cleared(self.hosts)
                self.admit(allow_unreachable=False)     # raises FleetRefused with the hosts and why
            # (not reached: any_errors_fatal ends the play at the check) some host got the fault: roll back
        return self._after_apply(applied)

    # -- 2. start ----------------------------------------------------------------------------------------
    def start(self):
        """Apply on every host; on any failure roll back every reachable host and raise FleetApplyFailed."""
        self._phase("apply")
        if self.ledger is not None:
            self.ledger.plan(self.hosts)            # before any host is asked: every host it may touch
        self._last_round_start = self.clock()
        with crashpoints.step("start on hosts"):
            applied = self._round(self.task, self.hosts)
        return self._after_apply(applied)

    def _after_apply(self, applied):
        if applied.ok:
            self.last = {h: applied.outcomes[h].result for h in self.hosts}
            if self.ledger is not None:
                self.ledger.started(self.hosts)
            return applied
        failed = [h for h in self.hosts if applied.outcomes[h].status != "ok"]
        message = "the fault failed on " + "; ".join(
            f"{h}: {applied.outcomes[h].status}: {applied.outcomes[h].message}" for h in failed)
        if self.ledger is not None:
            self.ledger.started(h for h in self.hosts if applied.outcomes[h].status == "ok")
        self._phase("rollback")
        with crashpoints.step("roll back on hosts"):
            back = self._round({"name": self.name, "state": "absent"},
                               [h for h in self.hosts if applied.outcomes[h].status != "unreachable"])
        self.final_round = back
        if self.ledger is not None:
            # an unreachable host may still have taken the fault: it stays in the ledger for sweep --inventory
            self.ledger.cleared(back.hosts("ok"))
        not_reached = sorted(back.hosts("failed") + back.hosts("unreachable") + applied.hosts("unreachable"))
        message += "; every reachable host was rolled back"
        if not_reached:
            message += (f"; not reached: {', '.join(not_reached)} (their faults end within the heartbeat timeout; "
                        "then `chaos-inject sweep --inventory`)")
        raise FleetApplyFailed(message, not_reached)

    # -- 3. hold -----------------------------------------------------------------------------------------
    @property
    def renew_interval_s(self) -> float:
        return self.heartbeat_ns / 3e9

    def renew(self):
        self._phase("renew")
        self._last_round_start = self.clock()
        with crashpoints.step("renew on hosts", once=True):     # every third of the heartbeat: one crash point
            tick = self._round(self.task, self.hosts)
        took = self.clock() - self._last_round_start
        if took > self.renew_interval_s:
            self.warn(f"WARNING: a renewal round took {took:.1f}s, more than a third of the heartbeat timeout "
                      f"({self.heartbeat_ns / 1e9:g}s): hosts may end their fault early; give a longer "
                      "--heartbeat-timeout")
        for h, out in tick.outcomes.items():
            if out.status == "ok":
                self.last[h] = out.result
            else:
                self.warn(f"renewal failed on {h} ({out.status}: {out.message}); its fault ends within the "
                          f"heartbeat timeout ({self.heartbeat_ns / 1e9:g}s) unless the next renewal reaches it")
        return tick

    def all_ended(self) -> bool:
        """Every host's run has ended by itself (its duration, a halt there)."""
        return all(self.last.get(h, {}).get("run_state") not in ("running", None) for h in self.hosts)

    def hold(self, end: float, stop: threading.Event) -> None:
        """Renew every third of the heartbeat timeout (paced by the rounds' starts: a round takes seconds) until
        ``end`` (this clock), ``stop`` is set, or every host's run ended by itself."""
        interval = self.renew_interval_s
        while self.clock() < end and not stop.is_set():
            start = self._last_round_start if self._last_round_start is not None else self.clock()
            if stop.wait(max(0.0, min(start + interval - self.clock(), end - self.clock()))):
                break
            if self.clock() >= end:
                break
            self.renew()
            if self.all_ended():
                break

    # -- 4. stop and collect -----------------------------------------------------------------------------
    def stop(self):
        """``state=absent`` on every host (once; later calls return the same round): each host's final record."""
        with self._lock:
            if self.final_round is None:
                self._phase("end")
                with crashpoints.step("stop on hosts"):
                    self.final_round = self._round({"name": self.name, "state": "absent"}, self.hosts)
                if self.ledger is not None:
                    self.ledger.cleared(self.final_round.hosts("ok"))
            return self.final_round

    def ended_everywhere(self) -> bool:
        """stop() reached every host (nothing is left on a host we know of)."""
        final = self.final_round
        return final is not None and not final.hosts("failed") and not final.hosts("unreachable")

    def collect(self, *, stopped_by: str | None = None, dry_run: bool = False) -> dict:
        """The merged record: the final round's outcomes (the preflight's for a dry run; while the fault is
        held, the last renewal's)."""
        from .ansible import HostOutcome

        source = self.preflight_round if dry_run else self.final_round
        if source is not None:
            outcomes = dict(source.outcomes)
        else:
            outcomes = {h: HostOutcome(h, "ok", res) for h, res in self.last.items()}
        return result_json(self.name, self.plan, outcomes, dry_run=dry_run, left_out=self.left_out,
                           stopped_by=stopped_by)
