"""Chaos Toolkit experiments as frozen data: the dataclasses :func:`chaosinject.experiment.spec.parse_experiment`
returns, and :func:`freeze`/:func:`thaw` for their nested free-form values. No parsing, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

DRY_MODES = ("probes", "actions", "activities", "pause")
HYPOTHESIS_STRATEGIES = ("default", "before-method-only", "after-method-only", "during-method-only", "continuously")
ROLLBACK_STRATEGIES = ("default", "always", "never", "deviated")
TOLERANCE_TYPES = ("probe", "regex", "jsonpath", "range", "statistical")


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class PythonProvider:
    module: str
    func: str
    arguments: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    secrets: tuple[str, ...] = ()
    type: str = "python"


@dataclass(frozen=True)
class ProcessProvider:
    path: str
    arguments: str | tuple[str, ...] = ""        # a string runs through the shell, a list is argv (chaoslib)
    timeout_s: float | None = None
    secrets: tuple[str, ...] = ()
    type: str = "process"


@dataclass(frozen=True)
class HttpProvider:
    url: str
    method: str = "GET"
    headers: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    arguments: Any = None                         # query string (GET) or body (other methods), as chaoslib
    timeout_s: float | None = None
    expected_status: tuple[int, ...] = ()          # ours: other statuses make the activity fail
    verify_tls: bool = True
    secrets: tuple[str, ...] = ()
    type: str = "http"


@dataclass(frozen=True)
class PrometheusProvider:
    """The seed's ``"type": "prometheus"`` form (not a chaoslib provider): an instant query, or a range query
    when ``start`` is given (``end`` defaults to now, ``step`` to 1 s). Times: RFC 3339, unix seconds, "now",
    or relative such as "2 minutes ago" / "-2m"."""

    url: str
    query: str
    when: str | None = None
    start: str | None = None
    end: str | None = None
    step: str | float | None = None
    timeout_s: float | None = None
    type: str = "prometheus"


Provider = PythonProvider | ProcessProvider | HttpProvider | PrometheusProvider


@dataclass(frozen=True)
class Tolerance:
    """``kind``: value (bool/int/str exact; a 2-list is a closed range, a longer list a set), range, regex,
    jsonpath, probe, statistical (ours). ``raw`` is the frozen original. ``note`` says how an unusual field
    was read (the seed's numeric ``target``)."""

    kind: str
    raw: Any
    note: str | None = None
    probe: "Activity | None" = None


@dataclass(frozen=True)
class Pauses:
    before: float | str | None = None              # seconds, or "${var}" resolved at run time
    after: float | str | None = None


@dataclass(frozen=True)
class Activity:
    type: str                                      # "probe" | "action"
    name: str
    provider: Provider
    path: str                                      # where it was declared, e.g. method[2]
    tolerance: Tolerance | None = None
    background: bool = False
    pauses: Pauses = Pauses()
    timeout_s: float | None = None
    dry: str | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: freeze({}), repr=False, compare=False)


@dataclass(frozen=True)
class Hypothesis:
    title: str
    probes: tuple[Activity, ...] = ()


@dataclass(frozen=True)
class LoadSpec:
    """Built-in HTTP load (our extension): requests to ``url`` at ``rate`` per second, feeding the halt guard
    and the run directory's request samples."""

    url: str
    rate_per_s: float = 50.0
    timeout_s: float = 1.0
    netns: str | None = None


@dataclass(frozen=True)
class GuardSpec:
    """Halt guard during the method. Runbook defaults: error rate > 5 %, p99 > 2x the baseline's."""

    enabled: bool = True
    max_error_rate: float | None = 0.05
    latency_quantile: float = 0.99
    latency_max_ratio: float | None = 2.0
    alpha: float = 0.01                            # false-alarm bound under continuous monitoring
    interval_s: float = 0.2
    prometheus_url: str | None = None
    prometheus_query: str | None = None
    prometheus_max: float | None = None
    load: LoadSpec | None = None
    recovery_s: float = 2.0                        # recording after the rollbacks
    baseline_max_s: float = 10.0                   # at most this long collecting baseline latencies


@dataclass(frozen=True)
class VerdictSpec:
    """The recorded-samples verdict (our extension's ``verdict`` block), apart from the halt guard.

    ``settings``: the ``analysis.SteadyStateSpec`` fields the block gave (latencies in ns, rates as ratios);
    the others come from the guard as without a block. ``expect``: per phase "steady" (judged against the
    spec) or "deviation" (the fault is meant to move it: tested for a change against the baseline).
    ``source``: which latency samples are judged (request, rtt, oneway; default: the first present).
    ``recovery_settle_ns``: recovery samples within this long after the recovery's start are not judged
    (``chaosinject.analysis.phases_from_run(settle_ns=)``); 0: every recovery sample is."""

    settings: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    expect: Mapping[str, str] = field(default_factory=lambda: freeze({}))
    source: str | None = None
    recovery_settle_ns: int = 0


@dataclass(frozen=True)
class Experiment:
    title: str
    description: str = ""
    version: str | None = None
    tags: tuple[str, ...] = ()
    configuration: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    secrets: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    hypothesis: Hypothesis | None = None
    method: tuple[Activity, ...] = ()
    rollbacks: tuple[Activity, ...] = ()
    dry: str | None = None
    runtime: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    extensions: tuple[Mapping[str, Any], ...] = ()
    guard: GuardSpec = GuardSpec()
    verdict: VerdictSpec | None = None             # None: the guard-derived spec, every phase steady
    notes: tuple[str, ...] = ()                    # how unusual fields were read (shown by --dry-run, journal)
    document: Mapping[str, Any] = field(default_factory=lambda: freeze({}), repr=False)

    def activities(self) -> tuple[Activity, ...]:
        probes = self.hypothesis.probes if self.hypothesis else ()
        return probes + self.method + self.rollbacks

    @property
    def rollback_strategy(self) -> str | None:
        return ((self.runtime.get("rollbacks") or {}).get("strategy")) if self.runtime else None

    @property
    def hypothesis_strategy(self) -> str | None:
        return ((self.runtime.get("hypothesis") or {}).get("strategy")) if self.runtime else None
