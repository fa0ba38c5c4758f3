"""Building a run the way the CLI does: flow texts and fault options -> a Plan with its engine chosen
(``prepare``), and ``start_fault``, the library's one call that prepares and starts a FaultSession. The run's
lifecycle itself is session.py's."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import InvalidSpec
from .plan import Plan
from .session import FaultSession
from .spec.units import parse_duration_ns


@dataclass
class Prepared:
    plan: Plan
    why: str                      # why this engine
    selections: list              # blast-radius choices (chaosinject.blast.Selection), empty without percent

    def describe(self, percent: float | None = None) -> str:
        text = self.plan.describe()
        if self.selections:
            text += "\nblast radius:\n" + "\n".join(f"  {s.describe(percent or 100)}" for s in self.selections)
        return text


def prepare(flows: list[str], fault, *, interface: str | None = None, netns: str | None = None,
            direction: str = "egress", duration_ns: int, lease_ns: int | None = None, seed: int | None = None,
            engine: str = "auto", inventory=None, percent: float | None = None, probe_kernel: bool = True,
            run_id: str | None = None) -> Prepared:
    """Flow texts + a FaultSpec -> a Plan with its engine chosen (the capability probe runs unless
    ``probe_kernel`` is False, as for a dry run). Raises InvalidSpec/Unsupported before any change."""
    from .blast import apply_percent
    from .plan import DEFAULT_LEASE_NS, build_plan
    from .spec import Inventory, parse_flow
    from .targets import resolve_interface

    if isinstance(flows, str):
        flows = [flows]
    if not isinstance(inventory, Inventory):
        inventory = Inventory.discover(inventory)
    specs = [parse_flow(text, inventory) for text in flows]
    specs, selections = apply_percent(specs, percent, seed)
    targets = [(flow, resolve_interface(flow, interface, netns)) for flow in specs]
    if not probe_kernel:
        name, why = engine, "requested"
        if engine == "auto":  # stateless faults always go to the eBPF engine; the rest depends on the kernel
            name = "ebpf" if not fault.needs_queueing and not fault.reorder_ratio else "auto (chosen at run time)"
            why = "dry run: no capability probe"
    else:
        from .engines.select import choose_engine
        from .errors import NotPermitted
        from .kernel.probe import probe

        if os.geteuid() != 0:
            raise NotPermitted("chaos-inject needs root (CAP_NET_ADMIN and CAP_BPF); run it with sudo")
        name, why = choose_engine(fault, probe(), engine)
    plan = build_plan(targets, fault, direction=direction, duration_ns=duration_ns,
                      lease_ns=lease_ns or DEFAULT_LEASE_NS, seed=seed, engine=name, run_id=run_id)
    return Prepared(plan, why, selections)


def _percent(value, field: str) -> float:
    from .spec import parse_percent_ratio

    if not isinstance(value, str):
        raise InvalidSpec("give a percentage with its sign, e.g. '10%'", text=repr(value), field=field)
    return parse_percent_ratio(value, field=field)


def fault_from_options(*, delay=None, jitter=None, distribution=None, correlation=None, loss=None,
                       loss_burst=None, partition: bool = False, corrupt=None, duplicate=None, reorder=None,
                       rate=None):
    """The CLI's fault options as keyword arguments, same syntax ('200ms', '10%', '1mbit')."""
    from .spec import FaultSpec, parse_loss_burst
    from .spec.units import parse_rate_bps

    return FaultSpec(
        loss_ratio=_percent(loss, "loss") if loss is not None else 0.0,
        loss_burst=parse_loss_burst(loss_burst) if loss_burst else None,
        partition=bool(partition),
        corrupt_ratio=_percent(corrupt, "corrupt") if corrupt is not None else 0.0,
        duplicate_ratio=_percent(duplicate, "duplicate") if duplicate is not None else 0.0,
        delay_ns=parse_duration_ns(delay, field="delay") if delay is not None else 0,
        jitter_ns=parse_duration_ns(jitter, field="jitter", allow_zero=True) if jitter is not None else 0,
        distribution=distribution,
        delay_correlation_ratio=_percent(correlation, "correlation") if correlation is not None else 0.0,
        reorder_ratio=_percent(reorder, "reorder") if reorder is not None else 0.0,
        rate_bps=parse_rate_bps(rate, field="rate") if rate else 0,
    )


def start_fault(flow: str | list[str] | None = None, interface: str | None = None, *, delay=None, jitter=None,
                distribution: str | None = None, correlation=None, loss=None, loss_burst=None,
                partition: bool = False, corrupt=None, duplicate=None, reorder=None, rate=None,
                duration, direction: str = "egress", engine: str = "auto", inventory=None,
                netns: str | None = None, seed: int | None = None, lease="3s", percent=None,
                kind: str = "library") -> FaultSession:
    """Apply a fault now and return its running FaultSession (stop() it, or use it as a context manager).

    ``flow`` as on the command line ("api->db", "10.0.0.1->10.0.0.2:5432/tcp"; several as a list); without a
    flow, ``interface`` is required and every packet through it is faulted ("*->*"). Durations and
    percentages carry their units ('200ms', '10%'). ``duration`` is mandatory: the fault ends by itself then,
    whatever the caller does. The ledger, lease and `chaos-inject status/sweep/stop` are the CLI's.
    """
    from .blast import parse_percent

    if flow is None:
        if not interface:
            raise InvalidSpec("give a flow (e.g. 'api->db') or an interface to fault all its traffic",
                              field="flow")
        flow = "*->*"
    if duration is None:
        raise InvalidSpec("a fault needs a duration (e.g. '60s'): it must never outlive its run",
                          field="duration")
    fault = fault_from_options(delay=delay, jitter=jitter, distribution=distribution, correlation=correlation,
                               loss=loss, loss_burst=loss_burst, partition=partition, corrupt=corrupt,
                               duplicate=duplicate, reorder=reorder, rate=rate)
    prepared = prepare(flow if isinstance(flow, list) else [flow], fault, interface=interface, netns=netns,
                       direction=direction, duration_ns=parse_duration_ns(duration, field="duration"),
                       lease_ns=parse_duration_ns(lease, field="lease"), seed=seed, engine=engine, inventory=inventory,
                       percent=parse_percent(percent) if percent is not None else None)
    session = FaultSession(prepared.plan, kind=kind, extra_status={"engine_reason": prepared.why})
    return session.start()
