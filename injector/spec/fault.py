"""Fault specs: what to do to a flow's packets. Pure data with validation; units are in the names."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import InvalidSpec
from .units import format_duration_ns, format_ratio_percent, parse_percent_ratio


@dataclass(frozen=True)
class GilbertElliott:
    """Burst loss as in netem's ``loss gemodel p [r [1-h [1-k]]]``.

    Two states, good and bad. ``p``: P(good -> bad), ``r``: P(bad -> good) per packet;
    ``bad_loss_ratio`` (netem's 1-h): loss probability in the bad state; ``good_loss_ratio`` (1-k): in the good state.
    """

    p: float
    r: float
    bad_loss_ratio: float = 1.0
    good_loss_ratio: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidSpec(f"{f.name} must be a probability in [0, 1]", text=str(value), field="loss-burst")
        if self.p == 0.0 and self.good_loss_ratio == 0.0:
            raise InvalidSpec("p = 0 and 1-k = 0 never lose a packet", field="loss-burst")
        if self.r == 0.0 and self.p > 0.0:
            raise InvalidSpec("r = 0 makes the bad state absorbing (the flow ends up partitioned); "
                              "use --partition for that", field="loss-burst")

    @property
    def bad_state_ratio(self) -> float:
        """Stationary probability of the bad state."""
        return self.p / (self.p + self.r) if self.p + self.r > 0 else 0.0

    @property
    def expected_loss_ratio(self) -> float:
        bad = self.bad_state_ratio
        return bad * self.bad_loss_ratio + (1.0 - bad) * self.good_loss_ratio

    @property
    def mean_bad_run_packets(self) -> float:
        """Mean number of consecutive packets spent in the bad state (1/r)."""
        return 1.0 / self.r

    def __str__(self) -> str:
        return (f"gemodel p={format_ratio_percent(self.p)} r={format_ratio_percent(self.r)} "
                f"1-h={format_ratio_percent(self.bad_loss_ratio)} 1-k={format_ratio_percent(self.good_loss_ratio)}")


@dataclass(frozen=True)
class FourState:
    """netem's 4-state loss model (``loss state p13 [p31 [p32 [p23 [p14]]]]``), Salvo and Ramos's GI model.

    States: 1 delivering in a gap, 2 delivering in a burst, 3 losing in a burst, 4 an isolated loss.
    """

    p13: float
    p31: float
    p32: float = 0.0
    p23: float = 1.0
    p14: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidSpec(f"{f.name} must be a probability in [0, 1]", text=str(value), field="loss-state")
        if self.p13 + self.p14 > 1.0 or self.p31 + self.p32 > 1.0:
            raise InvalidSpec("the transitions out of a state add up to more than 100%", field="loss-state")
        if self.p13 == 0.0 and self.p14 == 0.0:
            raise InvalidSpec("p13 = p14 = 0 never lose a packet", field="loss-state")

    @property
    def expected_loss_ratio(self) -> float:
        """Stationary share of lost packets (loss on entering or staying in 3, and on entering 4)."""
        p13, p31, p32, p23, p14 = self.p13, self.p31, self.p32, self.p23, self.p14
        t = [[1 - p13 - p14, 0.0, p13, p14], [0.0, 1 - p23, p23, 0.0], [p31, p32, 1 - p31 - p32, 0.0],
             [1.0, 0.0, 0.0, 0.0]]
        pi = [0.25] * 4
        for _ in range(20000):  # power iteration on a 4x4 chain: plain Python, the spec stays dependency-free
            nxt = [sum(pi[i] * t[i][j] for i in range(4)) for j in range(4)]
            if max(abs(a - b) for a, b in zip(nxt, pi)) < 1e-15:
                break
            pi = nxt
        lost_from = [p13 + p14, p23, 1 - p31 - p32, 0.0]
        return sum(p * q for p, q in zip(pi, lost_from))

    def __str__(self) -> str:
        return "state " + " ".join(f"{f.name}={format_ratio_percent(getattr(self, f.name))}" for f in fields(self))


def parse_loss_state(text: str) -> FourState:
    """``P13[,P31[,P32[,P23[,P14]]]]`` in percent, netem's order and defaults (p31 = 1-p13, p32 = 0, p23 = 1,
    p14 = 0)."""
    items = [item for item in text.replace(" ", ",").split(",") if item]
    if not 1 <= len(items) <= 5:
        raise InvalidSpec("expected P13[,P31[,P32[,P23[,P14]]]], e.g. '5%,50%'", text=text, field="loss-state")
    values = [parse_percent_ratio(item, field="loss-state") for item in items]
    defaults = [None, 1.0 - values[0], 0.0, 1.0, 0.0]
    full = values + defaults[len(values):]
    return FourState(p13=full[0], p31=full[1], p32=full[2], p23=full[3], p14=full[4])


DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")


@dataclass(frozen=True)
class FaultSpec:
    """Faults applied to every packet of a flow. Several may combine (loss + corrupt + duplicate + delay)."""

    loss_ratio: float = 0.0
    loss_burst: GilbertElliott | None = None
    loss_state: FourState | None = None   # netem's 4-state model
    partition: bool = False
    corrupt_ratio: float = 0.0
    duplicate_ratio: float = 0.0
    delay_ns: int = 0
    jitter_ns: int = 0
    distribution: str | None = None       # of the jitter; netem's default is uniform
    delay_correlation_ratio: float = 0.0  # netem's delay correlation
    reorder_ratio: float = 0.0            # send this share of packets at once, the rest delayed (needs delay)
    rate_bps: int = 0                     # bits per second, 0 = unlimited

    def __post_init__(self) -> None:
        for name in ("delay_ns", "jitter_ns", "rate_bps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidSpec("must be a non-negative integer", text=str(value), field=name)
        if self.jitter_ns and not self.delay_ns:
            raise InvalidSpec("--jitter needs --delay", field="jitter")
        if self.distribution is not None:
            if self.distribution not in DISTRIBUTIONS:
                raise InvalidSpec(f"distribution must be one of {', '.join(DISTRIBUTIONS)}", text=self.distribution,
                                  field="distribution")
            if not self.jitter_ns:
                raise InvalidSpec("--distribution shapes the jitter: give --jitter too", field="distribution")
        if self.delay_correlation_ratio and not self.jitter_ns:
            raise InvalidSpec("--correlation correlates the jitter: give --jitter too", field="correlation")
        if self.reorder_ratio and not self.delay_ns:
            raise InvalidSpec("--reorder sends some packets ahead of delayed ones: give --delay too",
                              field="reorder")
        for name in ("loss_ratio", "corrupt_ratio", "duplicate_ratio", "delay_correlation_ratio", "reorder_ratio"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidSpec("must be a ratio in [0, 1]", text=str(value), field=name)
        if sum(bool(x) for x in (self.loss_ratio, self.loss_burst, self.loss_state)) > 1:
            raise InvalidSpec("--loss, --loss-burst and --loss-state are different loss models; choose one",
                              field="loss")
        if self.partition and (self.loss_ratio or self.loss_burst or self.loss_state or self.corrupt_ratio
                               or self.duplicate_ratio or self.delay_ns or self.rate_bps):
            raise InvalidSpec("--partition drops every packet; it does not combine with other faults",
                              field="partition")
        if self.is_empty:
            raise InvalidSpec("no fault requested; give at least one of --delay, --loss, --loss-burst, "
                              "--partition, --corrupt, --duplicate, --rate", field="fault")

    @property
    def is_empty(self) -> bool:
        return not (self.loss_ratio or self.loss_burst or self.loss_state or self.partition or self.corrupt_ratio
                    or self.duplicate_ratio or self.delay_ns or self.rate_bps)

    def features(self) -> tuple[str, ...]:
        """The named capabilities this fault asks of an engine (the CLI option names)."""
        wanted = {"partition": self.partition, "loss": self.loss_ratio, "loss-burst": self.loss_burst,
                  "loss-state": self.loss_state,
                  "corrupt": self.corrupt_ratio, "duplicate": self.duplicate_ratio, "delay": self.delay_ns,
                  "jitter": self.jitter_ns, "distribution": self.distribution,
                  "correlation": self.delay_correlation_ratio, "reorder": self.reorder_ratio, "rate": self.rate_bps}
        return tuple(name for name, value in wanted.items() if value)

    @property
    def needs_queueing(self) -> bool:
        """Faults that hold packets (delay, reorder, rate): a stateless classifier cannot do them alone."""
        return bool(self.delay_ns or self.rate_bps)

    @property
    def expected_loss_ratio(self) -> float:
        if self.partition:
            return 1.0
        if self.loss_burst:
            return self.loss_burst.expected_loss_ratio
        if self.loss_state:
            return self.loss_state.expected_loss_ratio
        return self.loss_ratio

    def describe(self) -> str:
        parts = []
        if self.partition:
            parts.append("partition (drop 100%)")
        if self.loss_ratio:
            parts.append(f"loss {format_ratio_percent(self.loss_ratio)}")
        if self.loss_burst:
            parts.append(f"loss {self.loss_burst}")
        if self.loss_state:
            parts.append(f"loss {self.loss_state}")
        if self.corrupt_ratio:
            parts.append(f"corrupt {format_ratio_percent(self.corrupt_ratio)}")
        if self.duplicate_ratio:
            parts.append(f"duplicate {format_ratio_percent(self.duplicate_ratio)}")
        if self.delay_ns:
            text = f"delay {format_duration_ns(self.delay_ns)}"
            if self.jitter_ns:
                text += f" ± {format_duration_ns(self.jitter_ns)} {self.distribution or 'uniform'}"
            if self.delay_correlation_ratio:
                text += f" correlation {format_ratio_percent(self.delay_correlation_ratio)}"
            parts.append(text)
        if self.reorder_ratio:
            parts.append(f"reorder {format_ratio_percent(self.reorder_ratio)}")
        if self.rate_bps:
            parts.append(f"rate {self.rate_bps} bit/s")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (GilbertElliott, FourState)):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            out[f.name] = value
        return out


def parse_loss_burst(text: str) -> GilbertElliott:
    """``P[,R[,1-H[,1-K]]]`` in percent, netem's gemodel order and defaults (r = 1-p, 1-h = 100%, 1-k = 0%)."""
    items = [item for item in text.replace(" ", ",").split(",") if item]
    if not 1 <= len(items) <= 4:
        raise InvalidSpec("expected P[,R[,1-H[,1-K]]], e.g. '1%,25%'", text=text, field="loss-burst")
    values = [parse_percent_ratio(item, field="loss-burst") for item in items]
    p = values[0]
    r = values[1] if len(values) > 1 else 1.0 - p
    bad_loss = values[2] if len(values) > 2 else 1.0
    good_loss = values[3] if len(values) > 3 else 0.0
    return GilbertElliott(p=p, r=r, bad_loss_ratio=bad_loss, good_loss_ratio=good_loss)
