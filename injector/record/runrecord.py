"""Recording around a planned fault run, as ``chaos-inject --record DIR`` does it (and any caller may).

``record_run(plan, run, run_dir, ...)``: recorders chosen from the plan's rules, baseline phase before the
fault is applied, fault phase while ``run()`` (e.g. runner.run_plan) applies it, recovery after everything
was undone; writes the run directory and returns the Recording with the measured shifts.

Where recorders attach, per rule (rule.match is in packet direction):
* one-way: stamped at the packets' sender interface (the rule's own interface for an egress rule; the flow
  destination's inventory interface for an ingress rule; without one, the peer of the rule's interface when
  that is a veth whose other end is on this host, in any namespace); matched at the receiver's interface (tc placement)
  or, with ``cgroup``, by sockets of that cgroup (socket placement). A side without a known interface
  (inventory ``interface`` + ``netns``) leaves the flow without one-way samples, and the notes say so.
* RTT: TCP connections of the flow made by processes in ``cgroup``; without one, by any process of this host
  or its namespaces (sock_ops on the cgroup v2 root, the flow filtered in the kernel), so ``--record`` alone
  records RTT for a TCP flow.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Callable

from ..errors import Interrupted
from ..plan import Interface, Plan
from .bpf_recorder import PacketFlow
from .build import build_recorders
from .oneway import placement_sees
from .recording import Recording


def recorders_for_plan(plan: Plan, *, cgroup: str | Path | None = None) -> tuple[list, list[str]]:
    """(recorders, notes): what can be recorded for this plan, and why anything cannot. More TCP flows than
    one RTT recorder holds: InvalidSpec (field ``flow``), before anything is built."""
    flows = {f.text or str(f): f for f in plan.flows}
    groups: dict[tuple, list[PacketFlow]] = {}
    notes: list[str] = []
    rtt_flows: list[PacketFlow] = []
    for rule in plan.rules:
        try:
            packets = PacketFlow.from_rule(rule)
        except ValueError as exc:
            notes.append(f"#{rule.rule_id}: not recorded: {exc}")
            continue
        if packets.protocol in (None, "tcp", 6):
            rtt_flows.append(packets)
        spec = flows.get(rule.flow)
        far = Interface(spec.dst.interface, spec.dst.netns) if spec and spec.dst.interface else None
        if far is None and rule.interface is not None:
            far = _peer_of(rule.interface)
        if rule.match.hook == "egress":
            sender, receiver = rule.interface, far
        else:
            sender, receiver = far, rule.interface
        if sender is None:
            notes.append(f"#{rule.rule_id}: no one-way samples: the sender of {packets.src}->{packets.dst} has no "
                         f"interface in the inventory and {rule.interface} is not a veth whose peer is on this "
                         "host (give the destination host `interface` and `netns`)")
            continue
        if cgroup is None and receiver is None:
            notes.append(f"#{rule.rule_id}: no one-way samples: the receiver has no interface in the inventory "
                         f"and {rule.interface} is not a veth whose peer is on this host (give the destination "
                         "host `interface` and `netns` in the inventory, or --record-cgroup holding the receiving "
                         "process)")
            continue
        key = (sender, None if cgroup is not None else receiver)
        groups.setdefault(key, []).append(packets)
        placement = "socket" if cgroup is not None else "tc"
        if not placement_sees(plan.engine, rule.match.hook, placement):
            notes.append(f"#{rule.rule_id}: one-way samples at the {placement} placement do not include what the "
                         f"{plan.engine} engine holds on {rule.match.hook}" + _advice(plan.engine, rule.match.hook))
    rtt_cgroup = cgroup
    if rtt_flows and cgroup is None:
        rtt_cgroup, why = _rtt_root(rtt_flows)
        if why:
            notes.append(why)
            rtt_flows = []
    recorders = build_recorders(groups, rtt_flows, cgroup=cgroup, rtt_cgroup=rtt_cgroup, rtt_field="flow")
    if cgroup is None:
        for r in recorders:
            if r.source == "rtt":
                r.optional = True  # not asked for by name: if it cannot attach, the run goes on with a note
    return recorders, notes


def _peer_of(iface: Interface) -> Interface | None:
    """The other end of the rule's interface when it is a veth with its peer on this host (the flow's next
    hop: packets leaving one end arrive at the other), found without an inventory; else None."""
    from ..kernel.peers import veth_peer  # read-only netlink queries

    peer = veth_peer(iface.name, iface.netns)
    return None if peer is None else Interface(peer[0], peer[1], how=f"veth peer of {iface.name}")


def _rtt_root(flows: list[PacketFlow]) -> tuple[Path | None, str | None]:
    """(the cgroup v2 root, None) for RTT of every process's connections, or (None, why not) when there is
    no cgroup v2 hierarchy or more flows than one RTT recorder holds (given a cgroup, that is an error; here
    RTT was not asked for by name, so the run goes on and the note says what would make it possible)."""
    from ..errors import InvalidSpec
    from ..kernel.record_program import cgroup2_root  # ctypes only: importable without bcc or root
    from .build import rtt_flows as kept_rtt_flows

    try:
        kept_rtt_flows(flows, field="flow")
        return cgroup2_root(), None
    except InvalidSpec as exc:
        return None, f"no TCP RTT samples: {exc}"
    except Exception as exc:  # Unsupported: no cgroup v2 mounted
        return None, (f"no TCP RTT samples: {exc} (mount one: `mount -t cgroup2 none /sys/fs/cgroup`, or give "
                      "--record-cgroup)")


def _advice(engine: str, hook: str) -> str:
    if engine == "userspace" and hook == "egress":
        return (" (it takes packets in the sender's OUTPUT hook, before any tc hook; measure its delay with "
                "--direction ingress and --record-cgroup, or from TCP RTT, recorded for a /tcp flow)")
    return " (record at the socket placement: --record-cgroup with the receiving process in it)"


def record_run(plan: Plan, run: Callable[[Callable[[dict], None]], object], run_dir: str | Path, *,
               baseline_ns: int, recovery_ns: int, cgroup: str | Path | None = None,
               sleep: Callable[[float], None] = time.sleep):
    """Baseline, then ``run(update_live)`` (which applies, holds and undoes the fault), then recovery.

    ``update_live(status_dict)`` fills a dict with the recorders' current figures (for `status`).
    Returns (whatever ``run`` returned, the finished Recording, notes).
    """
    recorders, notes = recorders_for_plan(plan, cgroup=cgroup)
    rec = Recording(run_dir, recorders, flow=", ".join(f.text or str(f) for f in plan.flows),
                    fault=plan.faults[0].to_dict() if len(plan.faults) == 1 else {"faults": [f.to_dict() for f in plan.faults]},
                    engine=plan.engine, seed=plan.seed, run_id=plan.run_id,
                    meta={"direction": plan.direction, "rules": plan.to_dict()["rules"], "notes": notes,
                          "baseline_ns": baseline_ns, "recovery_ns": recovery_ns})

    def update_live(into: dict) -> None:
        into.clear()
        into.update({"run_dir": str(rec.run_dir), "phase": rec.phases.current, "recorders": rec.live()})

    result = None
    with rec:  # leaving it any way (also Ctrl-C) writes the directory and releases the recorders
        try:
            sleep(baseline_ns / 1e9)
        except KeyboardInterrupt:
            raise Interrupted(signal.SIGINT) from None  # before any fault: nothing was applied
        rec.mark("fault")
        try:
            result = run(update_live)
        finally:
            rec.mark("recovery")
            _align_to_the_fault(rec.phases, result)
            counters = getattr(result, "counters", None)
            if counters:
                rec.set_counters(counters, plan.rules)
        if not str(getattr(result, "stop_reason", "")).startswith("SIG"):  # a signal ended the run: no wait
            try:
                sleep(recovery_ns / 1e9)
            except KeyboardInterrupt:
                pass  # the fault is already gone; keep what was recorded
    return result, rec, notes


def _align_to_the_fault(phases, result) -> None:
    """Raw samples are labelled by the windows at write time: the fault phase is when the fault was active
    (not while the engine compiled and attached it), the recovery starts once it was removed; samples while it
    was being applied or taken off are in no phase. (In-kernel histograms count by the live marks.)"""
    active = getattr(result, "active_ns", None)
    began, removed = getattr(result, "removal_started_ns", None), getattr(result, "removed_ns", None)
    if not active or not began or not removed:
        return
    fault_start, recovery_start = phases.starts.get("fault"), phases.starts.get("recovery")
    if fault_start is None or recovery_start is None or not fault_start <= active <= began <= removed <= recovery_start:
        return
    phases.starts["fault"] = active
    phases.ends["fault"] = began
    phases.starts["recovery"] = removed


def requested_shifts(plan: Plan) -> dict[tuple[str, str], int]:
    """Delay each flow's samples should show, per source: one-way the delay (either direction's packets pay
    it once), RTT the sum over the directions faulted."""
    by_hook: dict[str, dict[str, int]] = {}
    for rule in plan.rules:
        hooks = by_hook.setdefault(rule.flow, {})
        hooks[rule.match.hook] = max(hooks.get(rule.match.hook, 0), plan.fault_of(rule).delay_ns)
    out = {}
    for flow, hooks in by_hook.items():
        out[(flow, "oneway")] = max(hooks.values())
        out[(flow, "rtt")] = sum(hooks.values())
    return out


def format_recording(rec: Recording, plan: Plan, notes: list[str]) -> str:
    """The summary's recording lines: measured shift per flow and placement against the request, and what
    the one-way recorder saw arrive (an independent check of drops)."""
    requested = requested_shifts(plan)
    lines = [f"recorded  run directory {rec.run_dir}"]
    for s in rec.summaries:
        lines.append(f"  {s['source']:6s} at {s['placement']}: {s['samples']} samples in phases, "
                     f"{s['events']} events, lost {s['lost']}" + (" (ring buffer full or memory cap: see meta.json)"
                                                                  if s["lost"] else ""))
        if s["source"] != "oneway":
            continue
        where = "at the receiver's interface" if s["placement"] == "tc" else "at a socket of the cgroup"
        for f in s.get("flows", []):
            stamped, matched = f.get("stamped", 0), f.get("matched", 0)
            if stamped and not matched:
                lines.append(f"  arrived   {f['flow']} {f['src']}->{f['dst']}: none of {stamped} stamped packets "
                             f"was seen {where}" + (" (is the receiving process in --record-cgroup?)"
                                                    if s["placement"] == "socket" else ""))
            elif stamped:
                lines.append(f"  arrived   {f['flow']} {f['src']}->{f['dst']}: {matched}/{stamped} stamped packets "
                             f"seen {where} ({(stamped - matched) / stamped:.2%} dropped on the way or still in "
                             "flight when recording stopped)")
    hooks: dict[str, set[str]] = {}
    for rule in plan.rules:
        if plan.fault_of(rule).delay_ns:
            hooks.setdefault(rule.flow, set()).add(rule.match.hook)
    for shift in rec.shifts:
        want = requested.get((shift.flow, shift.source))
        ask = f"; requested +{want / 1e6:.3f} ms" if want else ""
        if want and shift.source == "oneway" and shift.placement in ("tc", "socket") and not any(
                placement_sees(plan.engine, hook, shift.placement) for hook in hooks.get(shift.flow, ())):
            ask += f" (not visible at the {shift.placement} placement: see the note)"
        lines.append(f"  latency   {shift.flow}: {shift.describe()}{ask}")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)
