"""Steady-state verdicts: per phase and metric, held / violated / inconclusive, with evidence and reasons.

Decision rules (each one-sided bound comes from a two-sided interval at ``spec.confidence``, so it is a
(1 + confidence)/2 one-sided bound, 97.5 % by default):

- absolute latency SLO ("p99 < 200 ms"): held if the upper bound of the order-statistic interval of the
  quantile is below the limit, violated if the lower bound is at or above it, else inconclusive;
  too few samples for an interval -> inconclusive.
- absolute error-rate SLO ("< 0.1 %"): the same with the Clopper-Pearson interval of errors/requests.
- relative latency ("p99 within 2x baseline"): conservative interval of the ratio
  Q_phase / Q_baseline (each quantile at sqrt(confidence)); held if its upper end <= factor, violated if
  its lower end > factor.
- relative error rate ("not significantly higher than baseline"): violated if the one-sided
  two-proportion test (Fisher when counts are small) has p < alpha; held only if it is not significant AND
  the Newcombe interval of the increase is below ``error_rate_tolerance`` (so "we saw no difference with 12
  requests" is inconclusive, not held). With 10^7 requests per phase any real difference is significant
  (0.049 % -> 0.061 % is, at p ~ 1e-29); ``error_rate_margin`` > 0 makes the check one of practical
  significance, Kayenta style: violated only if the increase is above the margin with one-sided
  confidence 1 - alpha (lower end of the 1 - 2 alpha Newcombe interval > margin).

NaN / inf / empty data never produce "held": the affected checks are inconclusive with the reason.
The checks are not corrected for multiplicity; each carries its own error rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ._types import ConfidenceInterval, InvalidInput, Outcome
from ._validate import check_confidence, check_count, check_quantile, check_samples
from .compare import QuantileDifference, _quantile_difference_from_bounds
from .proportions import ProportionComparison, compare_proportions, proportion_ci
from .quantiles import DEFAULT_QUANTILES, QuantileEstimate, _qname, quantile_table

__all__ = ["PHASES", "PhaseData", "SteadyStateSpec", "Check", "Verdict", "evaluate", "phases_from_run"]

PHASES: tuple[str, ...] = ("baseline", "fault", "recovery")


@dataclass(frozen=True)
class SteadyStateSpec:
    """What "steady state" means. ``None`` disables a check. Latencies are in nanoseconds.

    Defaults: p99 < 200 ms, error rate < 0.1 %, p99 within 2x baseline, error rate not significantly higher
    than baseline (one-sided alpha 0.05; held needs the increase to be bounded below the tolerance, by
    default the absolute error-rate limit).
    """

    quantile: float = 0.99
    latency_max_ns: float | None = 200e6
    max_error_rate: float | None = 0.001
    latency_max_ratio: float | None = 2.0
    error_rate_vs_baseline: bool = True
    error_rate_tolerance: float | None = None
    error_rate_margin: float = 0.0
    confidence: float = 0.95
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check_quantile(self.quantile)
        check_confidence(self.confidence)
        if not (0.0 < self.alpha < 1.0):
            raise InvalidInput(f"alpha must be in (0, 1), got {self.alpha!r}")
        for name in ("latency_max_ns", "latency_max_ratio"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise InvalidInput(f"{name} must be a positive finite number or None, got {v!r}")
        if not (0.0 <= self.error_rate_margin < 1.0):
            raise InvalidInput(f"error_rate_margin must be in [0, 1), got {self.error_rate_margin!r}")
        for name in ("max_error_rate", "error_rate_tolerance"):
            v = getattr(self, name)
            if v is not None and not (0.0 < v < 1.0):
                raise InvalidInput(f"{name} must be in (0, 1) or None, got {v!r}")

    @property
    def tolerance(self) -> float:
        if self.error_rate_tolerance is not None:
            return self.error_rate_tolerance
        return self.max_error_rate if self.max_error_rate is not None else 0.001


@dataclass(frozen=True)
class PhaseData:
    """Latency samples (any unit consistent with the spec; ns for runs) and request outcome counts."""

    latencies: Any
    errors: int = 0
    requests: int = 0


@dataclass(frozen=True)
class Check:
    phase: str
    metric: str  # "latency" | "error_rate"
    kind: str  # "absolute" | "relative"
    outcome: Outcome
    observed: float
    limit: float
    interval: ConfidenceInterval | None
    reason: str
    evidence: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Verdict:
    spec: SteadyStateSpec
    checks: tuple[Check, ...]
    quantiles: Mapping[str, Mapping[float, QuantileEstimate]] = field(default_factory=dict, repr=False)

    @property
    def outcome(self) -> Outcome:
        """violated if any check is violated; else inconclusive if any is; else held."""
        outs = {c.outcome for c in self.checks}
        if Outcome.VIOLATED in outs:
            return Outcome.VIOLATED
        if Outcome.INCONCLUSIVE in outs or not self.checks:
            return Outcome.INCONCLUSIVE
        return Outcome.HELD

    def phase(self, name: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.phase == name)

    def summary(self) -> str:
        lines = [f"steady state: {self.outcome.value.upper()}"]
        for c in self.checks:
            lines.append(f"  [{c.outcome.value:>12}] {c.phase:<8} {c.metric:<10} {c.kind:<8} {c.reason}")
        return "\n".join(lines)

    def to_records(self) -> list[dict]:
        return [
            {"phase": c.phase, "metric": c.metric, "kind": c.kind, "outcome": c.outcome.value,
             "observed": c.observed, "limit": c.limit,
             "low": c.interval.low if c.interval else math.nan,
             "high": c.interval.high if c.interval else math.nan, "reason": c.reason}
            for c in self.checks
        ]


def _ms(v: float) -> str:
    return f"{v / 1e6:.4g} ms"


def _fmt_lat(v: float, ns: bool) -> str:
    return _ms(v) if ns else f"{v:.4g}"


def _abs_latency(phase: str, est: QuantileEstimate, limit: float, ns: bool) -> Check:
    name = f"p{_qname(est.q)}"
    if est.interval is None:
        return Check(phase, "latency", "absolute", Outcome.INCONCLUSIVE, est.estimate, limit, None,
                     f"{name} cannot be judged against {_fmt_lat(limit, ns)}: {est.reason}", est)
    lo, hi = est.interval.low, est.interval.high
    ci = f"{name} {_fmt_lat(est.estimate, ns)} ({est.confidence:.0%} CI {_fmt_lat(lo, ns)}-{_fmt_lat(hi, ns)}, n={est.n})"
    if hi < limit:
        out, why = Outcome.HELD, f"{ci} is below the {_fmt_lat(limit, ns)} limit"
    elif lo >= limit:
        out, why = Outcome.VIOLATED, f"{ci} is above the {_fmt_lat(limit, ns)} limit"
    else:
        out, why = Outcome.INCONCLUSIVE, f"{ci} straddles the {_fmt_lat(limit, ns)} limit: more samples needed"
    return Check(phase, "latency", "absolute", out, est.estimate, limit, est.interval, why, est)


def _abs_errors(phase: str, errors: int, requests: int, limit: float, conf: float) -> Check:
    if requests == 0:
        return Check(phase, "error_rate", "absolute", Outcome.INCONCLUSIVE, math.nan, limit, None,
                     "no requests recorded in this phase")
    ci = proportion_ci(errors, requests, conf, "clopper-pearson")
    rate = errors / requests
    desc = f"error rate {rate:.3%} ({errors}/{requests}, {conf:.0%} CI {ci.low:.3%}-{ci.high:.3%})"
    if ci.high < limit:
        out, why = Outcome.HELD, f"{desc} is below the {limit:.3%} limit"
    elif ci.low >= limit:
        out, why = Outcome.VIOLATED, f"{desc} is above the {limit:.3%} limit"
    else:
        need = "" if errors else f"; with no errors, about {math.ceil(-math.log((1 - conf) / 2) / limit)} requests are needed"
        out, why = Outcome.INCONCLUSIVE, f"{desc} straddles the {limit:.3%} limit{need}"
    return Check(phase, "error_rate", "absolute", out, rate, limit, ci, why, ci)


def _rel_latency(phase: str, d: QuantileDifference, factor: float) -> Check:
    name = f"p{_qname(d.q)}"
    if d.ratio_interval is None:
        return Check(phase, "latency", "relative", Outcome.INCONCLUSIVE, d.ratio, factor, None,
                     f"{name} ratio to baseline cannot be judged: {d.reason or 'baseline quantile is not positive'}", d)
    lo, hi = d.ratio_interval.low, d.ratio_interval.high
    desc = f"{name} is {d.ratio:.3g}x baseline ({d.confidence:.0%} CI {lo:.3g}-{hi:.3g}x)"
    if hi <= factor:
        out, why = Outcome.HELD, f"{desc}, within the allowed {factor:g}x"
    elif lo > factor:
        out, why = Outcome.VIOLATED, f"{desc}, beyond the allowed {factor:g}x"
    else:
        out, why = Outcome.INCONCLUSIVE, f"{desc}: the interval straddles {factor:g}x"
    return Check(phase, "latency", "relative", out, d.ratio, factor, d.ratio_interval, why, d)


def _rel_errors(phase: str, base: PhaseData, cur: PhaseData, spec: SteadyStateSpec) -> Check:
    tol = spec.tolerance
    if base.requests == 0 or cur.requests == 0:
        return Check(phase, "error_rate", "relative", Outcome.INCONCLUSIVE, math.nan, tol, None,
                     "no requests in this phase or in the baseline: cannot compare error rates")
    r: ProportionComparison = compare_proportions(base.errors, base.requests, cur.errors, cur.requests,
                                                  alternative="greater", confidence=spec.confidence)
    desc = (f"error rate {cur.errors / cur.requests:.3%} vs baseline {base.errors / base.requests:.3%} "
            f"(increase {r.effect:+.3%}, {spec.confidence:.0%} CI {r.interval.low:+.3%} to {r.interval.high:+.3%}, "
            f"{r.method} p={r.pvalue:.3g})")
    margin = spec.error_rate_margin
    if margin > 0:
        one_sided = compare_proportions(base.errors, base.requests, cur.errors, cur.requests,
                                        alternative="greater", confidence=1 - 2 * spec.alpha).interval
        significant = one_sided.low > margin
        what = f"higher than baseline by more than the {margin:.3%} margin"
    else:
        significant = r.pvalue < spec.alpha
        what = "significantly higher than baseline"
    if significant:
        out, why = Outcome.VIOLATED, f"{desc}: {what}"
    elif r.interval.high <= tol:
        out, why = Outcome.HELD, f"{desc}: not significantly higher, and any increase is below {tol:.3%}"
    else:
        out, why = Outcome.INCONCLUSIVE, (f"{desc}: not significantly higher, but an increase up to "
                                          f"{r.interval.high:.3%} cannot be ruled out (tolerance {tol:.3%})")
    return Check(phase, "error_rate", "relative", out, r.effect, tol, r.interval, why, r)


def evaluate(phases: Mapping[str, PhaseData], spec: SteadyStateSpec | None = None, *,
             latency_unit_ns: bool = True) -> Verdict:
    """Judge each phase against ``spec``. Relative checks compare every non-baseline phase with "baseline"."""
    spec = spec or SteadyStateSpec()
    q, conf = spec.quantile, spec.confidence
    each = math.sqrt(conf)
    checks: list[Check] = []
    tables: dict[str, dict] = {}
    bad: dict[str, str] = {}
    order = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
    for name in order:
        pd_ = phases[name]
        try:
            a = check_samples(pd_.latencies, f"{name} latencies")
            errors = check_count(pd_.errors, f"{name} errors")
            requests = check_count(pd_.requests, f"{name} requests")
            if errors > requests:
                raise InvalidInput(f"{name}: errors ({errors}) exceed requests ({requests})")
        except InvalidInput as exc:
            bad[name] = str(exc)
            continue
        reqs = [(qq, conf) for qq in sorted(set(DEFAULT_QUANTILES) | {q})] + [(q, each)]
        tables[name] = quantile_table(a, reqs, _validated=True)
        del a
    for name in order:
        if name in bad:
            for metric, kind in (("latency", "absolute"), ("error_rate", "absolute")):
                checks.append(Check(name, metric, kind, Outcome.INCONCLUSIVE, math.nan, math.nan, None,
                                    f"invalid data: {bad[name]}"))
            continue
        pd_ = phases[name]
        t = tables[name]
        if spec.latency_max_ns is not None:
            checks.append(_abs_latency(name, t[(q, conf)], spec.latency_max_ns, latency_unit_ns))
        if spec.max_error_rate is not None:
            checks.append(_abs_errors(name, int(pd_.errors), int(pd_.requests), spec.max_error_rate, conf))
        if name == "baseline":
            continue
        if "baseline" not in phases or "baseline" in bad:
            why = "no usable baseline phase" + (f" ({bad['baseline']})" if "baseline" in bad else "")
            if spec.latency_max_ratio is not None:
                checks.append(Check(name, "latency", "relative", Outcome.INCONCLUSIVE, math.nan,
                                    spec.latency_max_ratio, None, why))
            if spec.error_rate_vs_baseline:
                checks.append(Check(name, "error_rate", "relative", Outcome.INCONCLUSIVE, math.nan,
                                    spec.tolerance, None, why))
            continue
        if spec.latency_max_ratio is not None:
            b, c = tables["baseline"][(q, each)], t[(q, each)]
            bx = (b.estimate, None if b.interval is None else (b.interval.low, b.interval.high))
            by = (c.estimate, None if c.interval is None else (c.interval.low, c.interval.high))
            d = _quantile_difference_from_bounds(q, conf, bx, by, b.reason, c.reason)
            checks.append(_rel_latency(name, d, spec.latency_max_ratio))
        if spec.error_rate_vs_baseline:
            checks.append(_rel_errors(name, phases["baseline"], pd_, spec))
    quantiles = {n: {qq: est for (qq, cc), est in t.items() if cc == conf} for n, t in tables.items()}
    return Verdict(spec, tuple(checks), quantiles)


def phases_from_run(run: Any, *, source: str | None = None, flow: str | None = None) -> dict[str, PhaseData]:
    """Per-phase latencies (ns) and request error counts from a loaded run directory.

    ``source``: which latency samples to judge ("request", "rtt" or "oneway"); by default "request" if the
    run has any, else "rtt", else "oneway". Errors/requests always come from ``source == "request"`` rows.
    """
    df = run.samples
    if flow is not None:
        df = df[df["flow"] == flow]
    present = set(df["source"].astype(str).unique())
    if source is None:
        source = next((s for s in ("request", "rtt", "oneway") if s in present), "request")
    out: dict[str, PhaseData] = {}
    phase_col = df["phase"].astype(str)
    src = df["source"].astype(str)
    for name in PHASES:
        in_phase = (phase_col == name).to_numpy()
        lat = df["latency_ns"].to_numpy()[in_phase & (src == source).to_numpy()]
        req = in_phase & (src == "request").to_numpy()
        ok = df["ok"].to_numpy()[req]
        if in_phase.any():
            out[name] = PhaseData(lat, int(ok.size - np.count_nonzero(ok)), int(ok.size))
    return out
