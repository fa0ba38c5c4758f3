"""Blast radius (AWS FIS ``PERCENT(n)``): fault only a seeded share of a flow's targets. Pure, no I/O.

A flow's targets are its (source address, destination address) pairs of one IP version: ``api->db`` with db at
four addresses has four. ``percent`` keeps ceil(P % of them), at least one, chosen by a seeded generator so the
same seed picks the same targets; each kept pair becomes a flow of its own (same ports and protocol).
Flows with a single target, or a '*' side, are kept whole.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from .errors import InvalidSpec
from .spec.flow import FlowSpec, IPNetwork


@dataclass(frozen=True)
class Selection:
    flow: FlowSpec                       # as given
    chosen: tuple[FlowSpec, ...]         # what will be faulted
    total: int                           # how many targets there were

    def describe(self, percent: float) -> str:
        if self.total <= 1:
            return f"{self.flow.text or self.flow}: 1 target, faulted (percent applies to several)"
        picked = ", ".join(_pair_text(f) for f in self.chosen)
        return f"{self.flow.text or self.flow}: {percent:g}% of {self.total} targets -> {len(self.chosen)}: {picked}"


def parse_percent(value: float | int | str) -> float:
    """1-100, as ``25``, ``25%`` or ``PERCENT(25)``."""
    text = str(value).strip()
    if text.upper().startswith("PERCENT(") and text.endswith(")"):
        text = text[8:-1]
    text = text.rstrip("%").strip()
    try:
        percent = float(text)
    except ValueError:
        raise InvalidSpec("percent must be a number in (0, 100], e.g. 25 or 25%", text=str(value),
                          field="percent") from None
    if not 0 < percent <= 100 or math.isnan(percent):
        raise InvalidSpec("percent must be in (0, 100]", text=str(value), field="percent")
    return percent


def targets_of(flow: FlowSpec) -> list[tuple[IPNetwork, IPNetwork]]:
    return [(s, d) for s in flow.src.networks for d in flow.dst.networks if s.version == d.version]


def select(flow: FlowSpec, percent: float, rng: random.Random) -> Selection:
    pairs = targets_of(flow)
    if len(pairs) <= 1:
        return Selection(flow, (flow,), max(1, len(pairs)))
    keep = max(1, math.ceil(len(pairs) * percent / 100 - 1e-9))
    picked = sorted(rng.sample(range(len(pairs)), keep))
    chosen = []
    for index in picked:
        src, dst = pairs[index]
        one = replace(flow, src=replace(flow.src, networks=(src,)), dst=replace(flow.dst, networks=(dst,)))
        chosen.append(replace(one, text=f"{flow.text or flow} [{_pair_text(one)}]"))
    return Selection(flow, tuple(chosen), len(pairs))


def apply_percent(flows: list[FlowSpec], percent: float | None, seed: int | None) -> tuple[list[FlowSpec],
                                                                                           list[Selection]]:
    """The flows to fault and what was chosen. ``percent`` None or 100 keeps everything."""
    if percent is None:
        return list(flows), []
    rng = random.Random(seed)
    selections = [select(flow, percent, rng) for flow in flows]
    return [f for s in selections for f in s.chosen], selections


def _pair_text(flow: FlowSpec) -> str:
    def addr(net: IPNetwork) -> str:
        return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return f"{addr(flow.src.networks[0])}->{addr(flow.dst.networks[0])}"
