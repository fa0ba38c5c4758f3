"""``chaos-inject run experiment.json --inventory hosts.yml``: the experiment's network faults on a fleet.

The CLI hands the experiment runner a :class:`FleetCarrier` (the experiment room's FaultCarrier): each network
fault action of the method (``start_network_fault``, ``network_delay``...) becomes one fleet fault, planned from
the Ansible inventory (a flow's source group -> the hosts that carry it, the blast radius over hosts) and carried
by the same rounds as ``chaos-inject --inventory`` (fleet.controller.FleetFault). Probes run on the controller.
A :class:`FleetSession` is what the runner holds: it renews the hosts' heartbeats in a thread until the fault's
duration or a stop (a rollback, a halt, a signal, any failure), then removes it on every reachable host.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..errors import InvalidSpec
from ..experiment.carrier import CarriedFault, FaultCarrier
from ..spec.units import parse_duration_ns
from .controller import FleetFault, fleet_task
from .ledger import FleetLedger, watch_stop_request
from .inventory import load_inventory
from .plan import build_fleet_plan
from .results import write_experiment_fleet_files

__all__ = ["FleetCarrier", "FleetSession", "host_rows"]


def host_rows(result: dict) -> list[dict[str, Any]]:
    """The report's Hosts table rows of one fleet fault's record: host, address, state, verdict, counters."""
    rows = []
    for h in result["hosts"]:
        t = h.get("totals") or {}
        rows.append({"host": h["host"], "address": h.get("address"), "state": h.get("state") or h["status"],
                     "verdict": h["verdict"], "run_id": h.get("run_id"), "matched": t.get("matched_packets", 0),
                     "dropped": t.get("dropped_packets", 0), "delayed": t.get("delayed_packets", 0),
                     "message": h.get("message")})
    for host in result.get("left_out", []):
        for row in rows:
            if row["host"] == host:
                row["message"] = "left out: unreachable at the start"
    return rows


class FleetSession(CarriedFault):
    """One fleet fault held for an experiment: started (active on every host) by the carrier, renewed in a
    thread, removed on every reachable host when its duration ends or ``stop()`` is called."""

    def __init__(self, fleet: FleetFault, *, duration_ns: int, fault_text: str, direction: str, engine: str,
                 on_end: Callable[[], None] | None = None):
        self.fleet = fleet
        self.run_id = fleet.name
        self.state = "pending"
        self.duration_ns = duration_ns
        self.fault_text = fault_text
        self.direction = direction
        self.engine = engine
        self._on_end = on_end
        self._stop = threading.Event()
        self._stop_state = "completed"
        self._active_ns: int | None = None
        self._removing_ns: int | None = None
        self._removed_ns: int | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, *, allow_unreachable: bool = False) -> "FleetSession":
        """Check and apply on every host (FleetFault.begin: raises FleetRefused, nothing changed, or
        FleetApplyFailed after rolling back every reachable host), then hold."""
        try:
            self.fleet.begin(allow_unreachable=allow_unreachable)
        except BaseException:
            self.state = "failed"
            self._end()
            raise
        self._active_ns = time.monotonic_ns()
        self.state = "running"
        end = self.fleet.clock() + self.duration_ns / 1e9
        self._thread = threading.Thread(target=self._hold, args=(end,), daemon=True, name=f"fleet-{self.run_id}")
        self._thread.start()
        # `chaos-inject stop RUN_ID` (this fleet run's id; the controller's ledger's stop file), as the CLI's fleet
        # inject obeys it: the round under way finishes, then every host is rolled back; the fault ends stopped
        watch_stop_request(self.fleet.ledger, self._stop_requested, self._stop, name=f"fleet-stop-{self.run_id}")
        return self

    def _stop_requested(self) -> None:
        if not self._stop.is_set() and self.state == "running":
            self._stop_state = "stopped"
        self._stop.set()

    def _hold(self, end: float) -> None:
        try:
            self.fleet.hold(end, self._stop)
        except Exception as exc:  # noqa: BLE001 - a round that raised: remove the fault, report it
            self.error = f"{type(exc).__name__}: {exc}"
            self._stop_state = "failed"
        finally:
            self._removing_ns = time.monotonic_ns()
            try:
                self.fleet.stop()
            except Exception as exc:  # noqa: BLE001 - the hosts end it within the heartbeat timeout anyway
                self.error = self.error or f"removal: {type(exc).__name__}: {exc}"
                self._stop_state = "failed"
            self._removed_ns = time.monotonic_ns()
            if self._stop_state != "failed" and not self.fleet.ended_everywhere():
                self._stop_state = "failed"
                final = self.fleet.final_round
                lost = ", ".join(final.hosts("unreachable") + final.hosts("failed")) if final else "every host"
                self.error = self.error or (f"the removal did not reach {lost} (a host ends its fault by itself "
                                            "within the heartbeat timeout)")
            self.state = self._stop_state
            self._end()

    def _end(self) -> None:
        if self._on_end is not None:
            self._on_end()

    def stop(self, state: str = "stopped") -> None:
        if self._thread is None:
            return
        if not self._stop.is_set() and self.state == "running":
            self._stop_state = state
        self._stop.set()
        self._thread.join()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- what the runner reads ---------------------------------------------------------------------------
    @property
    def active_span_ns(self) -> tuple[int, int | None] | None:
        return None if self._active_ns is None else (self._active_ns, self._removed_ns)

    @property
    def removal_started_ns(self) -> int | None:
        return self._removing_ns

    def counters(self) -> dict[str, dict[str, int]]:
        """Per host and rule (``host/rule``): the final record once removed, else the last renewal's."""
        if self.fleet.final_round is not None:
            results = {h: o.result for h, o in self.fleet.final_round.outcomes.items() if o.status == "ok"}
            results = {**self.fleet.last, **{h: r for h, r in results.items() if r.get("counters")}}
        else:
            results = self.fleet.last
        return {f"{host}/{rule}": dict(c) for host, res in sorted(results.items())
                for rule, c in sorted((res.get("counters") or {}).items()) if isinstance(c, dict)}

    def result(self) -> dict:
        return self.fleet.collect()

    def describe(self) -> dict[str, Any]:
        plan = self.fleet.plan
        out = {"run_id": self.run_id, "state": self.state, "engine": self.engine,
               "flows": list(plan.flows), "fault": self.fault_text, "direction": self.direction,
               "duration_s": self.duration_ns / 1e9, "counters": self.counters(),
               "carrier": "fleet", "hosts": host_rows(self.result()),
               "choices": [c.describe() for c in plan.choices]}
        if self.error:
            out["error"] = self.error
        return out


class FleetCarrier(FaultCarrier):
    """Carries an experiment's network faults to the hosts of an Ansible inventory. ``rounds_factory(inventory,
    on_event)`` makes each fault's AnsibleRounds (a test passes a fake)."""

    def __init__(self, inventory: str, *, percent: float | None = None, count: int | None = None,
                 seed: int | None = None, allow_unreachable: bool = False, heartbeat_timeout: str = "15s",
                 say: Callable[[str], None] | None = None, rounds_factory=None):
        from .command import check_heartbeat_timeout

        self.inventory_path = inventory
        self.inventory = load_inventory(inventory)
        self.percent, self.count, self.seed = percent, count, seed
        self.allow_unreachable = allow_unreachable
        self.heartbeat_timeout = heartbeat_timeout
        self.heartbeat_ns = check_heartbeat_timeout(heartbeat_timeout)
        self.say = say or (lambda text: None)
        self.rounds_factory = rounds_factory
        self.sessions: list[FleetSession] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def _rounds(self, name: str):
        say = self.say

        def on_event(host: str, status: str, res: dict) -> None:
            if status != "ok":
                msg = str(res.get("msg") or "").strip().splitlines()
                say(f"  fleet {name} {host}: {status} {msg[0][:160] if msg else ''}".rstrip())

        if self.rounds_factory is not None:
            return self.rounds_factory(self.inventory_path, on_event)
        from .ansible import AnsibleRounds

        return AnsibleRounds(self.inventory_path, on_event=on_event)

    def start_fault(self, flows: list[str], *, duration: str, direction: str, engine: str, lease: str,
                    seed: int | None, netns: str | None, interface: str | None,
                    fault: dict[str, Any]) -> FleetSession:
        from .command import new_fleet_run_name

        if netns or interface:
            raise InvalidSpec("on a fleet each host finds its own interface by route lookup: no netns or "
                              "interface in the experiment's fault actions", field="netns" if netns else "interface")
        duration_ns = parse_duration_ns(duration, field="duration")
        parse_duration_ns(lease, field="lease")
        plan = build_fleet_plan(flows, self.inventory, percent=self.percent, count=self.count, seed=self.seed)
        name = new_fleet_run_name()
        task = fleet_task(name, fault, direction=direction, engine=engine, duration=duration, lease=lease,
                          heartbeat_timeout=self.heartbeat_timeout, seed=seed)
        for line in plan.describe().splitlines():
            self.say(line)
        rounds = self._rounds(name)
        # the controller's ledger (fleet.ledger): with real Ansible rounds (a test's fake rounds touch no host)
        private = getattr(rounds, "private", None)
        ledger = FleetLedger(name, self.inventory_path, private=private) if private else None
        fleet = FleetFault(rounds, plan, task, heartbeat_ns=self.heartbeat_ns,
                           warn=lambda text: self.say(f"fleet {name}: {text}"), ledger=ledger)
        fault_text = ", ".join(f"{k} {v}" if v is not True else k for k, v in fault.items())
        session = FleetSession(fleet, duration_ns=duration_ns, fault_text=fault_text, direction=direction,
                               engine=engine, on_end=getattr(rounds, "close", None))
        try:
            session.start(allow_unreachable=self.allow_unreachable)     # check and apply (FleetFault.begin)
        except BaseException as exc:
            with self._lock:
                if fleet.last or fleet.final_round is not None:     # some host was asked: a result to record
                    self.sessions.append(session)
                else:                                               # refused: no host was changed
                    self.refused.append(f"{name}: {exc}")
            raise
        with self._lock:
            self.sessions.append(session)
        self.say(f"fleet {name}: active on {', '.join(fleet.hosts)}; each host ends it if not renewed for "
                 f"{self.heartbeat_timeout}")
        return session

    def describe_plan(self, flows: list[str]) -> str:
        """The fleet plan of a fault on ``flows`` (hosts, their flows, the blast radius), nothing contacted."""
        plan = build_fleet_plan(flows, self.inventory, percent=self.percent, count=self.count, seed=self.seed)
        return plan.describe()

    def stop_all(self) -> None:
        """Every fault this carrier started, removed on every reachable host (the runner's rollback does this
        already; the CLI calls it again on its way out, whatever happened)."""
        with self._lock:
            sessions = list(self.sessions)
        for session in sessions:
            session.stop("stopped")

    def write_run_files(self, run_dir) -> dict:
        """fleet.json and fleet-counters.csv in the experiment's run directory; returns fleet.json's data."""
        with self._lock:
            sessions = list(self.sessions)
        return write_experiment_fleet_files(run_dir, [s.result() for s in sessions], unstarted=self.refused)
