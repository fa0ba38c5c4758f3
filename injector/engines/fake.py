"""Fake engine: records the steps it is asked to take and simulates counters. For tests without root.

Drops are drawn per packet from a seeded RNG (``seed``), as a real engine's are: the achieved ratio varies around
the requested one, so a verdict of "consistent" is earned, not built in. ``drop_ratio`` makes the fake drop at a
ratio other than the one asked for (an engine that misbehaves), to show the summary catches it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..kernel.owner import KernelOwner
from ..plan import Plan


@dataclass
class FakeEngine:
    name: str = "fake"
    packets_per_renew: int = 1000
    fail_on_apply: BaseException | None = None
    seed: int = 0
    drop_ratio: float | None = None     # None: the fault's own expected loss ratio
    steps: list[tuple] = field(default_factory=list)
    _counters: dict[int, dict[str, int]] = field(default_factory=dict)
    _plan: Plan | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def check(self, plan: Plan) -> None:
        self.steps.append(("check", plan.run_id))

    def apply(self, plan: Plan, owner: KernelOwner, expires_ns: int) -> None:
        self._plan = plan
        self.steps.append(("apply", len(plan.rules), expires_ns))
        owner.callback(lambda: self.steps.append(("undo",)))
        if self.fail_on_apply is not None:
            raise self.fail_on_apply
        self._counters = {r.rule_id: {"matched_packets": 0, "matched_bytes": 0, "dropped_packets": 0,
                                      "dropped_bytes": 0, "corrupted_packets": 0, "duplicated_packets": 0,
                                      "expired_packets": 0} for r in plan.rules}

    def renew(self, expires_ns: int) -> None:
        self.steps.append(("renew", expires_ns))
        assert self._plan is not None
        for rule in self._plan.rules:
            ratio = self._plan.fault_of(rule).expected_loss_ratio if self.drop_ratio is None else self.drop_ratio
            ctr = self._counters[rule.rule_id]
            ctr["matched_packets"] += self.packets_per_renew
            ctr["matched_bytes"] += 100 * self.packets_per_renew
            dropped = sum(self._rng.random() < ratio for _ in range(self.packets_per_renew))
            ctr["dropped_packets"] += dropped
            ctr["dropped_bytes"] += 100 * dropped

    def counters(self) -> dict[int, dict[str, int]]:
        return {k: dict(v) for k, v in self._counters.items()}
