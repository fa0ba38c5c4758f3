"""Requested vs achieved, from the kernel's counters: the proof of what a run did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .plan import Plan
from .spec.units import format_ratio_percent

if TYPE_CHECKING:  # analysis (scipy, numpy) is imported when a summary is made, after the fault: off the inject path
    from chaosinject.analysis import ConfidenceInterval

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Achieved:
    """One fault's outcome over one flow: what was asked, what the kernel counted, the interval."""

    what: str                      # loss | corrupt | duplicate
    requested_ratio: float
    events: int
    trials: int
    interval: ConfidenceInterval

    @property
    def ratio(self) -> float:
        return self.events / self.trials if self.trials else float("nan")

    @property
    def consistent(self) -> bool | None:
        """Whether the request lies inside the achieved ratio's confidence interval (None: no packets)."""
        if not self.trials:
            return None
        return self.interval.low <= self.requested_ratio <= self.interval.high


@dataclass(frozen=True)
class FlowSummary:
    flow: str
    counters: dict[str, int]
    achieved: tuple[Achieved, ...]
    requested_delay_ns: int = 0


def totals_by_flow(plan: Plan, counters: dict[int, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Counts add up over a flow's rules; statistics (delay_*) are taken from its busiest rule."""
    out: dict[str, dict[str, int]] = {}
    busiest: dict[str, int] = {}
    for rule in plan.rules:
        per_rule = counters.get(rule.rule_id, {})
        total = out.setdefault(rule.flow, {})
        matched = per_rule.get("matched_packets", 0)
        take_stats = matched >= busiest.get(rule.flow, -1)
        if take_stats:
            busiest[rule.flow] = matched
        for name, value in per_rule.items():
            if name.startswith("delay_") and name != "delayed_packets":
                if take_stats:
                    total[name] = value
            else:
                total[name] = total.get(name, 0) + value
    return out


def summarize(plan: Plan, counters: dict[int, dict[str, int]]) -> list[FlowSummary]:
    out = []
    fault_of_flow = {rule.flow: plan.fault_of(rule) for rule in plan.rules}
    for flow, total in totals_by_flow(plan, counters).items():
        fault = fault_of_flow[flow]
        matched = total.get("matched_packets", 0)
        achieved = []
        if fault.partition or fault.loss_ratio or fault.loss_burst or fault.loss_state:
            achieved.append(_achieved("loss", fault.expected_loss_ratio, total.get("dropped_packets"), matched))
        survivors = matched - total.get("dropped_packets", 0)
        if fault.duplicate_ratio:
            achieved.append(_achieved("duplicate", fault.duplicate_ratio, total.get("duplicated_packets"),
                                      survivors))
        if fault.corrupt_ratio:
            # packets without payload (pure ACKs) cannot be corrupted, so this ratio can sit below the request
            achieved.append(_achieved("corrupt", fault.corrupt_ratio, total.get("corrupted_packets"),
                                      survivors))
        out.append(FlowSummary(flow=flow, counters=total, achieved=tuple(a for a in achieved if a),
                               requested_delay_ns=fault.delay_ns))
    return out


def _achieved(what: str, requested: float, events: int | None, trials: int) -> Achieved | None:
    if events is None:
        return None  # this engine does not count it
    from chaosinject.analysis import proportion_ci

    return Achieved(what=what, requested_ratio=requested, events=events, trials=trials,
                    interval=proportion_ci(events, trials, CONFIDENCE, "clopper-pearson"))


def format_hold(c: dict[str, int], requested_ns: int) -> str:
    """The delay engine's achieved hold per packet (its delay_* counters) beside the request."""
    ci = ""
    if "delay_p50_ci_low_ns" in c:
        ci = (f", {CONFIDENCE:.0%} CI of the median [{c['delay_p50_ci_low_ns'] / 1e6:.3f}, "
              f"{c['delay_p50_ci_high_ns'] / 1e6:.3f}] ms")
    n = f" over {c['delay_samples']} packets" if c.get("delay_samples") else ""
    asked = f"requested {requested_ns / 1e6:.3f} ms: " if requested_ns else ""
    return (f"  delay     {asked}achieved median {c['delay_p50_ns'] / 1e6:.3f} ms, p99 "
            f"{c.get('delay_p99_ns', 0) / 1e6:.3f} ms{ci} (hold per packet{n}, {hold_clock(c)})")


def hold_clock(c: dict[str, int]) -> str:
    """Where the engine's hold per packet was timed."""
    if c.get("delay_kernel_measured"):
        lost = c.get("delay_samples_lost", 0)
        return ("measured in the kernel: from our classifier to the device's transmit, net_dev_start_xmit"
                + (f"; {lost} samples lost to a full ring" if lost else ""))
    return "held in userspace: from its receipt off NFQUEUE to the verdict that releases it"


def format_summary(summaries: list[FlowSummary]) -> str:
    lines = []
    for summary in summaries:
        c = summary.counters
        counted = ", ".join(f"{label} {c[key]}" for key, label in (
            ("dropped_packets", "dropped"), ("corrupted_packets", "corrupted"), ("duplicated_packets", "duplicated"),
            ("delayed_packets", "delayed"), ("expired_packets", "passed after lease expiry"))
            if key in c and (c[key] or key in ("dropped_packets", "corrupted_packets", "duplicated_packets")))
        lines.append(f"flow {summary.flow}: matched {c.get('matched_packets', 0)} packets "
                     f"({c.get('matched_bytes', 0)} bytes)" + (f", {counted}" if counted else ""))
        if "delay_p50_ns" in c:
            lines.append(format_hold(c, summary.requested_delay_ns))
        for a in summary.achieved:
            if not a.trials:
                lines.append(f"  {a.what:9s} requested {format_ratio_percent(a.requested_ratio)}, "
                             "achieved: no packets matched — the fault had no effect")
                continue
            verdict = "consistent with the request" if a.consistent else "NOT consistent with the request"
            lines.append(f"  {a.what:9s} requested {format_ratio_percent(a.requested_ratio)}, achieved "
                         f"{format_ratio_percent(a.ratio)} ({a.events}/{a.trials}), "
                         f"{CONFIDENCE:.0%} CI [{format_ratio_percent(a.interval.low)}, "
                         f"{format_ratio_percent(a.interval.high)}]: {verdict}")
    return "\n".join(lines)
