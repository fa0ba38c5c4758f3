"""The userspace engine's per-rule holds: the delay drawn for each packet (netem's model), the hold times kept
(a uniform reservoir) and the achieved figures computed from them.

No I/O here: ``engines/userspace.py`` receives and releases the packets and calls into this room for the delay
of each one and for what it reports. Read on every lease renewal, so no statistics package import (see
``common.median_ranks_95``).
"""

from __future__ import annotations

import math
import random
import statistics
from array import array
from dataclasses import dataclass, field

from ..plan import PlannedRule
from ..spec.fault import FaultSpec
from .common import median_ranks_95

SAMPLE_CAP = 4096            # hold-time samples kept per rule (reservoir: uniform over the run; sorting them
                             # in counters() holds the GIL, so few: ~0.3 ms, not a late release)
NETEM_UNIFORM = "uniform"
_NORMAL = statistics.NormalDist()


@dataclass
class RuleState:
    """One rule's queue, its delay model and what was held on it so far."""

    rule: PlannedRule
    queue: int
    rng: random.Random
    jitter: "JitterModel | None" = None   # the rule's own fault (flows of one run may differ)
    copy: bool = False    # egress: copy the packet, drop the original at once, send the copy at release time
    mtu: int = 0          # ... if it fits the device MTU (a longer local datagram is fragmented after our hook)
    last_u: float = 0.5
    queued_packets: int = 0
    queued_bytes: int = 0
    delayed_packets: int = 0
    released_early: int = 0
    samples: array = field(default_factory=lambda: array("q"))    # hold time (verdict - receive)
    lateness: array = field(default_factory=lambda: array("q"))   # hold time - the delay drawn for the packet
    seen: int = 0
    max_hold_ns: int = 0


class JitterModel:
    """netem's delay model: ``delay + jitter * X`` with X from the distribution, negative results clipped to 0.

    uniform: X uniform in [-1, 1]; normal: standard normal; pareto: netem's table ``(4/3)(U^(-1/3) - 1.5)``
    (alpha 3, mean 0, clipped at +4); paretonormal: 1/4 normal + 3/4 pareto of the same quantile (netem's table).
    Correlation as netem's: ``u = (1 - rho) * U + rho * u_previous`` feeds the quantile function.
    """

    def __init__(self, fault: FaultSpec):
        self.delay_ns = fault.delay_ns
        self.jitter_ns = fault.jitter_ns
        self.kind = fault.distribution or NETEM_UNIFORM
        self.rho = fault.delay_correlation_ratio

    @staticmethod
    def quantile(kind: str, u: float) -> float:
        u = min(max(u, 1e-9), 1.0 - 1e-9)
        if kind == "uniform":
            return 2.0 * u - 1.0
        if kind == "normal":
            return _NORMAL.inv_cdf(u)
        pareto = min((4.0 / 3.0) * ((1.0 - u) ** (-1.0 / 3.0) - 1.5), 4.0)
        if kind == "pareto":
            return pareto
        return 0.25 * _NORMAL.inv_cdf(u) + 0.75 * pareto  # paretonormal

    def draw(self, state: RuleState) -> int:
        if not self.jitter_ns:
            return self.delay_ns
        u = state.rng.random()
        if self.rho:
            u = (1.0 - self.rho) * u + self.rho * state.last_u
            state.last_u = u
        return max(0, self.delay_ns + int(self.jitter_ns * self.quantile(self.kind, u)))


def record_hold(st: RuleState, hold_ns: int, late_ns: int) -> None:
    """Count one released packet and keep its hold time in the rule's reservoir (uniform over the run)."""
    st.delayed_packets += 1
    st.seen += 1
    if hold_ns > st.max_hold_ns:
        st.max_hold_ns = hold_ns
    if len(st.samples) < SAMPLE_CAP:
        st.samples.append(hold_ns)
        st.lateness.append(late_ns)
    else:
        j = random.randrange(st.seen)
        if j < SAMPLE_CAP:
            st.samples[j] = hold_ns
            st.lateness[j] = late_ns


def hold_statistics(st: RuleState) -> dict[str, int]:
    """What the rule's held packets achieved: the median hold with its interval, p50/p99/min/max of the hold
    (release time - receive time) and of the lateness (release time - planned release time); empty before the
    first release."""
    samples, late = sorted(st.samples), sorted(st.lateness)
    if not samples:
        return {}
    row = median_ci(samples)
    row.update(delay_p50_ns=quantile(samples, 0.5), delay_p99_ns=quantile(samples, 0.99),
               delay_min_ns=samples[0], delay_max_ns=st.max_hold_ns,
               release_late_p50_ns=quantile(late, 0.5), release_late_p99_ns=quantile(late, 0.99))
    return row


def median_ci(ordered) -> dict[str, int]:
    """95 % distribution-free interval of the median hold (order statistics of the reservoir, a uniform
    sample of the run's holds) and its sample count; none below the 6 samples such an interval needs. Read on
    every lease renewal: no statistics package import here (see common.median_ranks_95)."""
    ranks = median_ranks_95(len(ordered))
    out = {"delay_samples": len(ordered)}
    if ranks is not None:
        out.update(delay_p50_ci_low_ns=ordered[ranks[0] - 1], delay_p50_ci_high_ns=ordered[ranks[1] - 1])
    return out


def quantile(sorted_values: list[int], q: float) -> int:
    """The q-quantile of sorted values, interpolated between the two nearest (0 for none)."""
    if not sorted_values:
        return 0
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return int(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))
