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

Expected deviation (``expect={"fault": "deviation"}``): a phase the fault is meant to move (503s served
while the database times out) is not judged against the limits: it would be "violated" by design. Instead
each metric the spec uses is tested for a change against the baseline, two-sided, Bonferroni-corrected over
the phase's metrics so that "deviated" has a false-positive rate <= ``alpha``:

- error rate: two-proportion test (Fisher when counts are small), p < alpha / k; with ``error_rate_margin``
  > 0 the Newcombe interval of the difference at 1 - alpha / k must exclude [-margin, margin];
- latency: the MOVER interval of Q_phase - Q_baseline at 1 - alpha / k (each quantile's order-statistic
  interval at 1 - alpha / k, widened for the dependence found in its time order, the distances to the ends
  added in quadrature) must exclude 0. (Until 2026-12 each quantile's interval was taken at the square root
  and the ends added: conservative, 0 A/A false positives at alpha 5 % and less power; bench/README.md.)

A metric that changed is ``deviated`` (the fault measurably took effect), one that did not is ``no change``
(not significant: a small effect cannot be ruled out, the reason gives its interval), one that cannot be
computed is ``inconclusive``. The verdict holds only if every steady phase held and every expected
deviation phase deviated: a fault with no measurable effect leaves the steady state untested, so the
verdict is inconclusive, not held.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np

from ._types import ConfidenceInterval, InvalidInput, Outcome
from ._validate import check_confidence, check_count, check_quantile, check_samples
from .quantile_shift import QuantileDifference, _quantile_difference_from_bounds
from .dependence import Dependence, indicator_dependence
from .proportions import ProportionComparison, compare_proportions, proportion_ci
from .quantiles import DEFAULT_QUANTILES, QuantileEstimate, _qname, quantile_ci_dependent, quantile_table

__all__ = ["PHASES", "EXPECTATIONS", "PhaseData", "Recovery", "SteadyStateSpec", "Check", "Verdict", "evaluate",
           "phases_from_run"]

PHASES: tuple[str, ...] = ("baseline", "fault", "recovery")
EXPECTATIONS: tuple[str, ...] = ("steady", "deviation")


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

    @property
    def uses_latency(self) -> bool:
        return self.latency_max_ns is not None or self.latency_max_ratio is not None

    @property
    def uses_error_rate(self) -> bool:
        return self.max_error_rate is not None or self.error_rate_vs_baseline

    def describe(self) -> str:
        """The checks this spec makes, in words (reports say which spec judged the run)."""
        name = f"p{_qname(self.quantile)}"
        parts = []
        if self.latency_max_ns is not None:
            parts.append(f"{name} < {_ms(self.latency_max_ns)}")
        if self.max_error_rate is not None:
            parts.append(f"error rate < {self.max_error_rate:.2%}")
        if self.latency_max_ratio is not None:
            parts.append(f"{name} within {self.latency_max_ratio:g}x baseline")
        if self.error_rate_vs_baseline:
            extra = f", margin {self.error_rate_margin:.2%}" if self.error_rate_margin > 0 else ""
            parts.append(f"error rate not significantly higher than baseline (alpha {self.alpha:g}, any increase "
                         f"bounded below {self.tolerance:.2%}{extra})")
        return "; ".join(parts or ["no check"]) + f"; {self.confidence:.0%} confidence"


@dataclass(frozen=True)
class Recovery:
    """The recovery's first moments, from :func:`phases_from_run`: the settle window left out of the recovery's
    steady-state checks, and the time to recover.

    ``start_ns``: the recovery's start (its ``meta.json`` window: when the fault's removal finished; None if the
    run has no recovery window). ``settle_ns``: the declared settle time; samples with ``start_ns <= t_ns <
    start_ns + settle_ns`` are the ``excluded_*`` ones (``excluded_samples``: latency samples of the judged
    source). ``requests``/``errors``: every request of the recovery phase, the settle window included.
    ``last_error_ns``: ``t_ns`` (the request's start) of its last failed request, None if none failed.
    """

    start_ns: int | None
    settle_ns: int = 0
    excluded_samples: int = 0
    excluded_requests: int = 0
    excluded_errors: int = 0
    requests: int = 0
    errors: int = 0
    last_error_ns: int | None = None
    tail_start_ns: int | None = None   # the recovery's last third (by time, to its last request): from here
    tail_requests: int = 0
    tail_errors: int = 0

    # a recovery still failing at the end: at least this many requests in its last third, half or more failed
    METASTABLE_MIN_REQUESTS = 10
    METASTABLE_ERROR_SHARE = 0.5

    @property
    def metastable(self) -> bool:
        """The service still failed at the end of the recording, long after the fault was removed: half or more
        of the requests in the recovery's last third failed (and there were at least 10). Not a fault that
        never ended (the recovery starts once the fault's removal finished): a failure the service keeps up by
        itself under its load, a metastable failure."""
        return (self.tail_requests >= self.METASTABLE_MIN_REQUESTS
                and self.tail_errors >= self.METASTABLE_ERROR_SHARE * self.tail_requests)

    def metastable_text(self) -> str:
        if not self.metastable or self.start_ns is None or self.tail_start_ns is None:
            return ""
        return (f"METASTABLE FAILURE: the fault was removed, yet {self.tail_errors} of {self.tail_requests} "
                f"requests still failed in the recovery's last third (from {(self.tail_start_ns - self.start_ns) / 1e9:.1f} s "
                f"after the removal): the service did not come back by itself (overload kept up by its own load, "
                f"not the fault)")

    @property
    def time_to_recover_ns(self) -> int | None:
        """From the recovery's start to the start of its last failed request (0 if that one started
        earlier, e.g. labelled at the boundary); None with no failed request or no known start."""
        if self.last_error_ns is None or self.start_ns is None:
            return None
        return max(0, int(self.last_error_ns) - int(self.start_ns))

    def settle_text(self) -> str:
        if self.settle_ns <= 0:
            return ""
        extra = (f", {self.excluded_samples} latency samples" if self.excluded_samples != self.excluded_requests
                 else "")
        return (f"first {_secs(self.settle_ns)} after the fault's removal not judged: {self.excluded_requests} "
                f"requests, {self.excluded_errors} errors{extra}")

    def recover_text(self) -> str:
        """"time to recover ..." when the recovery has request samples, else ""."""
        if self.requests == 0:
            return ""
        ttr = self.time_to_recover_ns
        if self.metastable:
            return self.metastable_text() + f" ({self.errors} of {self.requests} recovery requests failed)"
        if ttr is None:
            return f"time to recover: no error in recovery ({self.requests} requests)"
        return (f"time to recover: {ttr / 1e9:.3f} s (the last failed request of the recovery started "
                f"{ttr / 1e9:.3f} s after the fault's removal; {self.errors} of {self.requests} requests failed)")

    def to_record(self) -> dict:
        ttr = self.time_to_recover_ns
        return {"start_ns": self.start_ns, "settle_ns": self.settle_ns, "settle_s": self.settle_ns / 1e9,
                "excluded": {"samples": self.excluded_samples, "requests": self.excluded_requests,
                             "errors": self.excluded_errors},
                "requests": self.requests, "errors": self.errors, "last_error_ns": self.last_error_ns,
                "time_to_recover_s": None if ttr is None else ttr / 1e9,
                "tail": {"start_ns": self.tail_start_ns, "requests": self.tail_requests, "errors": self.tail_errors},
                "metastable": self.metastable,
                "settle_text": self.settle_text(), "recover_text": self.recover_text()}


def _secs(ns: int) -> str:
    return f"{ns / 1e9:g} s"


@dataclass(frozen=True)
class PhaseData:
    """Latency samples (any unit consistent with the spec; ns for runs) and request outcome counts.
    ``recovery``: for the recovery phase of a run, what its settle window left out and the time to recover."""

    latencies: Any
    errors: int = 0
    requests: int = 0
    recovery: Recovery | None = None
    ordered: bool = True          # latencies in time order (False: pooled samples, dependence not estimable)
    error_flags: Any = None       # per request in time order, True = failed (None: counts only)


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
    brief: str = ""              # the numbers in a few words, for one-line phase summaries
    expect: str = "steady"       # "deviation": a change test against the baseline (kind "change")
    n: int | None = None         # samples (latency) or requests (error rate) of the phase
    n_eff: float | None = None   # effective n given the dependence found in time order (== n if none)


@dataclass(frozen=True)
class Verdict:
    spec: SteadyStateSpec
    checks: tuple[Check, ...]
    quantiles: Mapping[str, Mapping[float, QuantileEstimate]] = field(default_factory=dict, repr=False)
    expect: Mapping[str, str] = field(default_factory=dict)   # phase -> "steady" | "deviation"
    recovery: Recovery | None = None   # the recovery's settle window and time to recover (runs only)
    dependence: Mapping[str, Mapping[str, Dependence]] = field(default_factory=dict, repr=False)  # phase -> metric

    def expectation(self, phase: str) -> str:
        return self.expect.get(phase, "steady")

    def phase_outcome(self, name: str) -> Outcome:
        """A steady phase: violated / inconclusive / held as the verdict. An expected deviation: deviated if
        any metric changed significantly, else inconclusive if one could not be computed, else no change."""
        outs = {c.outcome for c in self.phase(name)}
        if self.expectation(name) == "deviation":
            if Outcome.DEVIATED in outs:
                return Outcome.DEVIATED
            return Outcome.INCONCLUSIVE if Outcome.INCONCLUSIVE in outs or not outs else Outcome.NO_CHANGE
        if Outcome.VIOLATED in outs:
            return Outcome.VIOLATED
        return Outcome.INCONCLUSIVE if Outcome.INCONCLUSIVE in outs or not outs else Outcome.HELD

    def phases(self) -> tuple[str, ...]:
        names = list(dict.fromkeys(c.phase for c in self.checks))
        return tuple([p for p in PHASES if p in names] + [p for p in names if p not in PHASES])

    @property
    def outcome(self) -> Outcome:
        """violated if any steady phase is; else inconclusive if any steady phase is, or an expected deviation
        did not show; else held."""
        per = {p: self.phase_outcome(p) for p in self.phases()}
        steady = {o for p, o in per.items() if self.expectation(p) == "steady"}
        if Outcome.VIOLATED in steady:
            return Outcome.VIOLATED
        if not self.checks or Outcome.INCONCLUSIVE in steady or any(
                o is not Outcome.DEVIATED for p, o in per.items() if self.expectation(p) == "deviation"):
            return Outcome.INCONCLUSIVE
        return Outcome.HELD

    def phase(self, name: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.phase == name)

    def phase_summary(self, name: str) -> str:
        """One line: what the phase was expected to do and what it did, with the deciding numbers."""
        o = self.phase_outcome(name)
        checks = self.phase(name)
        if self.expectation(name) == "deviation":
            if o is Outcome.DEVIATED:
                head, show = "deviated as expected", [c for c in checks if c.outcome is Outcome.DEVIATED]
            elif o is Outcome.NO_CHANGE:
                head, show = "NO measurable change vs baseline: the fault did not measurably take effect", checks
            else:
                head, show = "change vs baseline cannot be judged: INCONCLUSIVE", checks
        else:
            what = {"baseline": "steady state before the fault", "recovery": "steady state restored"}.get(
                name, "steady state held through the fault" if name == "fault" else "steady state")
            if o is Outcome.VIOLATED and name == "recovery":
                what = "steady state NOT restored"
            head = f"{what}: {o.value.upper()}"
            show = checks if o is Outcome.HELD else [c for c in checks if c.outcome is o]
        detail = "; ".join(c.brief or c.reason for c in show)
        line = f"{name}: {head}" + (f" ({detail})" if detail else "")
        if name == "recovery" and self.recovery is not None and self.recovery.settle_text():
            line += f"; {self.recovery.settle_text()}"
        return line

    def summary(self) -> str:
        lines = [f"steady state: {self.outcome.value.upper()}"]
        lines += [f"  {self.phase_summary(p)}" for p in self.phases()]
        if self.recovery is not None and self.recovery.recover_text():
            lines.append(f"  recovery: {self.recovery.recover_text()}")
        for c in self.checks:
            lines.append(f"  [{c.outcome.value:>12}] {c.phase:<8} {c.metric:<10} {c.kind:<8} {c.reason}")
        for p in self.phases():
            for d in self.dependence.get(p, {}).values():
                lines.append(f"  dependence {p:<8} {d.text()}")
        return "\n".join(lines)

    def to_records(self) -> list[dict]:
        return [
            {"phase": c.phase, "expect": c.expect, "metric": c.metric, "kind": c.kind, "outcome": c.outcome.value,
             "observed": c.observed, "limit": c.limit,
             "low": c.interval.low if c.interval else math.nan,
             "high": c.interval.high if c.interval else math.nan, "reason": c.reason,
             "n": c.n, "n_eff": c.n_eff}
            for c in self.checks
        ]


def _ms(v: float) -> str:
    return f"{v / 1e6:.4g} ms"


def _fmt_lat(v: float, ns: bool) -> str:
    return _ms(v) if ns else f"{v:.4g}"


def _against_limit(ci: ConfidenceInterval, limit: float, desc: str, limit_text: str,
                   undecided: str) -> tuple[Outcome, str]:
    """Held when the whole interval is below the limit, violated when it is all at or above, else inconclusive
    (``undecided`` says what would decide it)."""
    if ci.high < limit:
        return Outcome.HELD, f"{desc} is below the {limit_text} limit"
    if ci.low >= limit:
        return Outcome.VIOLATED, f"{desc} is above the {limit_text} limit"
    return Outcome.INCONCLUSIVE, f"{desc} straddles the {limit_text} limit{undecided}"


def _abs_latency(phase: str, est: QuantileEstimate, limit: float, ns: bool) -> Check:
    name = f"p{_qname(est.q)}"
    if est.interval is None:
        return Check(phase, "latency", "absolute", Outcome.INCONCLUSIVE, est.estimate, limit, None,
                     f"{name} cannot be judged against {_fmt_lat(limit, ns)}: {est.reason}", est)
    lo, hi = est.interval.low, est.interval.high
    ci = f"{name} {_fmt_lat(est.estimate, ns)} ({est.confidence:.0%} CI {_fmt_lat(lo, ns)}-{_fmt_lat(hi, ns)}, n={est.n})"
    out, why = _against_limit(est.interval, limit, ci, _fmt_lat(limit, ns), ": more samples needed")
    brief = f"{name} {_fmt_lat(est.estimate, ns)}, CI up to {_fmt_lat(hi, ns)}, limit {_fmt_lat(limit, ns)}"
    return Check(phase, "latency", "absolute", out, est.estimate, limit, est.interval, why, est, brief)


def _abs_errors(phase: str, errors: int, requests: int, limit: float, conf: float,
                eff: PhaseData | None = None) -> Check:
    """``eff``: the effective counts (dependent errors) the interval is computed from; the text shows the real ones."""
    if requests == 0:
        return Check(phase, "error_rate", "absolute", Outcome.INCONCLUSIVE, math.nan, limit, None,
                     "no requests recorded in this phase")
    ci = proportion_ci(eff.errors if eff else errors, eff.requests if eff else requests, conf, "clopper-pearson")
    rate = errors / requests
    desc = f"error rate {rate:.3%} ({errors}/{requests}, {conf:.0%} CI {ci.low:.3%}-{ci.high:.3%})"
    need = "" if errors else f"; with no errors, about {math.ceil(-math.log((1 - conf) / 2) / limit)} requests are needed"
    if eff is not None and eff.requests < requests:   # dependent errors: the length this dependence needs
        vif = requests / eff.requests
        p = min(max(rate, 1.0 / requests), 1 - 1e-12)
        gap = abs(p - limit)
        z = NormalDist().inv_cdf((1 + conf) / 2)
        n_need = (z * z * p * (1 - p) / (gap * gap) if gap > 0 else math.inf) if errors else (
            -math.log((1 - conf) / 2) / limit)
        if math.isfinite(n_need):
            need = (f"; errors dependent in time order (effective n {eff.requests} of {requests}): about "
                    f"{math.ceil(n_need * vif)} requests would be needed at this dependence")
        else:
            need = f"; errors dependent in time order (effective n {eff.requests} of {requests})"
    out, why = _against_limit(ci, limit, desc, f"{limit:.3%}", need)
    brief = f"error rate {rate:.2%} ({errors}/{requests}), CI up to {ci.high:.2%}, limit {limit:.2%}"
    return Check(phase, "error_rate", "absolute", out, rate, limit, ci, why, ci, brief)


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
    brief = f"{name} {d.ratio:.3g}x baseline, CI up to {hi:.3g}x, limit {factor:g}x"
    return Check(phase, "latency", "relative", out, d.ratio, factor, d.ratio_interval, why, d, brief)


def _rel_errors(phase: str, base: PhaseData, cur: PhaseData, spec: SteadyStateSpec,
                eb: PhaseData | None = None, ec: PhaseData | None = None) -> Check:
    """``eb``/``ec``: effective counts of the baseline/phase (dependent errors) the test uses; text: real counts."""
    eb, ec = eb or base, ec or cur
    tol = spec.tolerance
    if base.requests == 0 or cur.requests == 0:
        return Check(phase, "error_rate", "relative", Outcome.INCONCLUSIVE, math.nan, tol, None,
                     "no requests in this phase or in the baseline: cannot compare error rates")
    r: ProportionComparison = compare_proportions(eb.errors, eb.requests, ec.errors, ec.requests,
                                                  alternative="greater", confidence=spec.confidence)
    effect = cur.errors / cur.requests - base.errors / base.requests
    desc = (f"error rate {cur.errors / cur.requests:.3%} vs baseline {base.errors / base.requests:.3%} "
            f"(increase {effect:+.3%}, {spec.confidence:.0%} CI {r.interval.low:+.3%} to {r.interval.high:+.3%}, "
            f"{r.method} p={r.pvalue:.3g})")
    margin = spec.error_rate_margin
    if margin > 0:
        one_sided = compare_proportions(eb.errors, eb.requests, ec.errors, ec.requests,
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
    brief = (f"vs baseline {effect:+.2%}, p={r.pvalue:.2g}, increase CI up to {r.interval.high:+.2%}, "
             f"tolerance {tol:.2%}")
    return Check(phase, "error_rate", "relative", out, effect, tol, r.interval, why, r, brief)


def _change_errors(phase: str, base: PhaseData, cur: PhaseData, spec: SteadyStateSpec, alpha: float,
                   eb: PhaseData | None = None, ec: PhaseData | None = None) -> Check:
    """Expected deviation: did the error rate change vs the baseline (two-sided, at ``alpha``)?"""
    if base.requests == 0 or cur.requests == 0:
        return Check(phase, "error_rate", "change", Outcome.INCONCLUSIVE, math.nan, 0.0, None,
                     "no requests in this phase or in the baseline: cannot compare error rates",
                     expect="deviation")
    conf = 1 - alpha
    eb, ec = eb or base, ec or cur
    r = compare_proportions(eb.errors, eb.requests, ec.errors, ec.requests, alternative="two-sided",
                            confidence=conf)
    effect = cur.errors / cur.requests - base.errors / base.requests
    rate, brate = cur.errors / cur.requests, base.errors / base.requests
    lo, hi = r.interval.low, r.interval.high
    ci = f"{conf * 100:.3g}% CI {lo:+.3%} to {hi:+.3%}"
    desc = (f"error rate {rate:.3%} ({cur.errors}/{cur.requests}) vs baseline {brate:.3%} "
            f"({base.errors}/{base.requests}): {effect:+.3%}, {ci}, {r.method} p={r.pvalue:.3g} two-sided")
    margin = spec.error_rate_margin
    if margin > 0:
        changed, test = lo > margin or hi < -margin, f"beyond the {margin:.3%} margin"
    else:
        changed, test = r.pvalue < alpha, f"at alpha {alpha:.3g}"
    way = "higher" if effect > 0 else "lower"
    if changed:
        out, why = Outcome.DEVIATED, f"{desc}: significantly {way} than baseline {test}"
    else:
        out, why = Outcome.NO_CHANGE, f"{desc}: no significant change {test} (a change within the CI cannot be ruled out)"
    brief = f"error rate {rate:.1%} vs {brate:.1%}, {effect:+.1%}, p={r.pvalue:.2g}"
    return Check(phase, "error_rate", "change", out, effect, 0.0, r.interval, why, r, brief, "deviation")


def _mover_difference(q: float, conf: float, b: QuantileEstimate, c: QuantileEstimate) -> QuantileDifference:
    """Interval of Q_phase - Q_baseline from each quantile's own interval at ``conf`` (MOVER, Zou & Donner 2008:
    the distances from each estimate to its interval's ends added in quadrature,
    ``[d - sqrt((c - c_lo)^2 + (b_hi - b)^2), d + sqrt((c_hi - c)^2 + (b - b_lo)^2)]``). Asymptotically exact
    for independent phases, where adding the ends of intervals at sqrt(conf) is conservative (the old rule:
    0 A/A false positives at alpha 5 % and less power). The intervals are the dependence-widened ones when a
    phase's exceedances are dependent, so MOVER inherits the widening. The ratio interval is the same
    construction on the log scale (positive quantiles only)."""
    ratio = c.estimate / b.estimate if b.estimate > 0 else math.nan
    if b.interval is None or c.interval is None:
        return QuantileDifference(q, b.estimate, c.estimate, c.estimate - b.estimate, None, ratio, None, conf,
                                  "too few samples for the interval: " + (b.reason or c.reason or "n too small"))
    d = c.estimate - b.estimate
    lo = d - math.hypot(c.estimate - c.interval.low, b.interval.high - b.estimate)
    hi = d + math.hypot(c.interval.high - c.estimate, b.estimate - b.interval.low)
    rint = None
    if b.interval.low > 0 and c.interval.low > 0 and b.estimate > 0 and c.estimate > 0:
        lb, lc = math.log(b.estimate), math.log(c.estimate)
        lr = lc - lb
        rlo = lr - math.hypot(lc - math.log(c.interval.low), math.log(b.interval.high) - lb)
        rhi = lr + math.hypot(math.log(c.interval.high) - lc, lb - math.log(b.interval.low))
        rint = ConfidenceInterval(math.exp(rlo), math.exp(rhi))
    return QuantileDifference(q, b.estimate, c.estimate, d, ConfidenceInterval(lo, hi), ratio, rint, conf,
                              "MOVER interval from each phase's order-statistic interval")


def _change_latency(phase: str, b: QuantileEstimate, c: QuantileEstimate, conf: float, ns: bool) -> Check:
    """Expected deviation: did the quantile move vs the baseline? (``b``, ``c``: each at ``conf``)"""
    name = f"p{_qname(b.q)}"
    d = _mover_difference(b.q, conf, b, c)
    if d.interval is None:
        return Check(phase, "latency", "change", Outcome.INCONCLUSIVE, d.ratio, 1.0, None,
                     f"{name} change vs baseline cannot be judged: {d.reason}", d, expect="deviation")
    lo, hi = d.interval.low, d.interval.high
    ratio = f" ({d.ratio:.3g}x" + (f", CI {d.ratio_interval.low:.3g}-{d.ratio_interval.high:.3g}x)"
                                   if d.ratio_interval else ")")
    desc = (f"{name} {_fmt_lat(c.estimate, ns)} vs baseline {_fmt_lat(b.estimate, ns)}{ratio}, difference "
            f"{conf * 100:.3g}% CI {_fmt_lat(lo, ns)} to {_fmt_lat(hi, ns)}")
    if lo > 0 or hi < 0:
        out, why = Outcome.DEVIATED, f"{desc}: significantly {'higher' if lo > 0 else 'lower'} than baseline"
    else:
        out, why = Outcome.NO_CHANGE, f"{desc}: the interval contains no change"
    brief = f"{name} {_fmt_lat(c.estimate, ns)} vs {_fmt_lat(b.estimate, ns)}"
    return Check(phase, "latency", "change", out, d.ratio, 1.0, d.interval, why, d, brief, "deviation")


def _check_expect(expect: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(expect or {})
    for name, e in out.items():
        if e not in EXPECTATIONS:
            raise InvalidInput(f"expect[{name!r}] must be one of {', '.join(EXPECTATIONS)}, got {e!r}")
    if out.get("baseline", "steady") != "steady":
        raise InvalidInput("the baseline cannot be expected to deviate: deviation is measured against it")
    return out


def evaluate(phases: Mapping[str, PhaseData], spec: SteadyStateSpec | None = None, *,
             latency_unit_ns: bool = True, expect: Mapping[str, str] | None = None) -> Verdict:
    """Judge each phase against ``spec``. Relative checks compare every non-baseline phase with "baseline".

    ``expect``: per phase "steady" (the default: judged against the spec) or "deviation" (the fault is meant
    to move it: tested for a change against the baseline instead, see the module docstring).
    """
    spec = spec or SteadyStateSpec()
    expect = _check_expect(expect)
    q, conf = spec.quantile, spec.confidence
    each = math.sqrt(conf)
    # expected deviations: Bonferroni over the metrics tested in one phase
    metrics = [m for m, used in (("error_rate", spec.uses_error_rate), ("latency", spec.uses_latency)) if used]
    metrics = metrics or ["error_rate", "latency"]
    alpha_each = spec.alpha / len(metrics)
    conf_dev = 1 - alpha_each   # the change test: each quantile's interval at this level, combined by MOVER
    checks: list[Check] = []
    tables: dict[str, dict] = {}
    deps: dict[str, dict[str, Dependence]] = {}
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
            flags = None
            if pd_.error_flags is not None:
                flags = np.asarray(pd_.error_flags).astype(bool).ravel()
                if flags.size != requests or int(np.count_nonzero(flags)) != errors:
                    raise InvalidInput(f"{name}: error_flags ({flags.size} requests, {int(np.count_nonzero(flags))} "
                                       f"failed) disagree with requests={requests}, errors={errors}")
        except InvalidInput as exc:
            bad[name] = str(exc)
            continue
        reqs = [(qq, conf) for qq in sorted(set(DEFAULT_QUANTILES) | {q})] + [(q, each), (q, conf_dev)]
        tables[name] = t = quantile_table(a, reqs, _validated=True)
        deps[name] = _phase_dependence(a, t, q, (conf, each, conf_dev), pd_.ordered, flags, errors, requests)
        del a, flags
    for name in order:
        deviation = expect.get(name) == "deviation"
        if name in bad:
            for metric, kind in (((m, "change") for m in metrics) if deviation else
                                 (("latency", "absolute"), ("error_rate", "absolute"))):
                checks.append(Check(name, metric, kind, Outcome.INCONCLUSIVE, math.nan, math.nan, None,
                                    f"invalid data: {bad[name]}", expect=expect.get(name, "steady")))
            continue
        pd_ = phases[name]
        t = tables[name]
        if deviation:
            if "baseline" not in phases or "baseline" in bad:
                why = "no usable baseline phase to measure a change against"
                checks += [Check(name, m, "change", Outcome.INCONCLUSIVE, math.nan, math.nan, None, why,
                                 expect="deviation") for m in metrics]
                continue
            for m in metrics:
                if m == "error_rate":
                    checks.append(_change_errors(name, phases["baseline"], pd_, spec, alpha_each,
                                                 _effective(phases["baseline"], deps["baseline"]),
                                                 _effective(pd_, deps[name])))
                else:
                    checks.append(_change_latency(name, tables["baseline"][(q, conf_dev)], t[(q, conf_dev)],
                                                  1 - alpha_each, latency_unit_ns))
            continue
        if spec.latency_max_ns is not None:
            checks.append(_abs_latency(name, t[(q, conf)], spec.latency_max_ns, latency_unit_ns))
        if spec.max_error_rate is not None:
            checks.append(_abs_errors(name, int(pd_.errors), int(pd_.requests), spec.max_error_rate, conf,
                                      _effective(pd_, deps[name])))
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
            checks.append(_rel_errors(name, phases["baseline"], pd_, spec,
                                      _effective(phases["baseline"], deps["baseline"]), _effective(pd_, deps[name])))
    for name, e in expect.items():
        if e == "deviation" and name not in phases:
            checks += [Check(name, m, "change", Outcome.INCONCLUSIVE, math.nan, math.nan, None,
                             "no samples in this phase: whether the fault took effect cannot be judged",
                             expect="deviation") for m in metrics]
    quantiles = {n: {qq: est for (qq, cc), est in t.items() if cc == conf} for n, t in tables.items()}
    rec = phases["recovery"].recovery if "recovery" in phases else None
    checks = [_with_dependence(c, deps) for c in checks]
    return Verdict(spec, tuple(checks), quantiles, {n: expect.get(n, "steady") for n in [*order, *expect]}, rec,
                   deps)


def _phase_dependence(a: np.ndarray, table: dict, q: float, confs: tuple[float, ...], ordered: bool,
                      flags: np.ndarray | None, errors: int, requests: int) -> dict[str, Dependence]:
    """Dependence of the q-exceedances and of the errors in time order; widens the q-quantile intervals of
    ``table`` in place when the exceedances are dependent (see :mod:`chaosinject.analysis.dependence`)."""
    out: dict[str, Dependence] = {}
    if a.size:
        est = table[(q, confs[0])].estimate
        d = indicator_dependence(a > est, f"p{_qname(q)} exceedances", ordered=ordered)
        if d.applied:
            for c in set(confs):
                table[(q, c)] = quantile_ci_dependent(a, q, c, d.vif, est)
        out["latency"] = d
    if requests:
        if flags is None:
            out["error_rate"] = Dependence("errors (counts only, no per-request time order)", requests, errors, 1.0,
                                           math.nan, math.nan, False, 0, 0, math.nan, math.nan, False)
        else:
            out["error_rate"] = indicator_dependence(flags, "errors")
    return out


def _effective(pd_: PhaseData, dep: Mapping[str, Dependence]) -> PhaseData:
    """Error and request counts scaled to the effective number of requests when errors are dependent."""
    d = dep.get("error_rate")
    if d is None or not d.applied:
        return pd_
    n = max(1, int(round(pd_.requests / d.vif)))
    return PhaseData(pd_.latencies, min(n, int(round(pd_.errors / d.vif))), n, pd_.recovery, pd_.ordered)


def _with_dependence(c: Check, deps: Mapping[str, Mapping[str, Dependence]]) -> Check:
    """The check with n, effective n and, when dependence widened its interval, a sentence saying so."""
    own = deps.get(c.phase, {}).get(c.metric)
    if own is None:
        return c
    involved = [(c.phase, own)]
    if c.kind in ("relative", "change") and "baseline" in deps and c.metric in deps["baseline"]:
        involved.append(("baseline", deps["baseline"][c.metric]))
    notes = []
    wide = [(p, d) for p, d in involved if d.applied]
    if wide:
        notes.append("dependence in time order widened the interval: " + ", ".join(
            f"{p} effective n {d.n_eff:.0f} of {d.n} ({d.what} in episodes of {d.episode:.3g}, variance inflation "
            f"{d.vif:.3g})" for p, d in wide))
    loose = [p for p, d in involved if not d.ordered]
    if loose:
        notes.append(f"{' and '.join(loose)}: no time order, treated as independent")
    reason = c.reason + ("; " + "; ".join(notes) if notes else "")
    brief = c.brief + (f", effective n {own.n_eff:.0f} of {own.n}" if own.applied and c.brief else "")
    return dataclasses.replace(c, reason=reason, brief=brief, n=own.n, n_eff=own.n_eff)


def phases_from_run(run: Any, *, source: str | None = None, flow: str | None = None,
                    settle_ns: int = 0) -> dict[str, PhaseData]:
    """Per-phase latencies (ns) and request error counts from a loaded run directory.

    ``source``: which latency samples to judge ("request", "rtt" or "oneway"); by default "request" if the
    run has any, else "rtt", else "oneway". Errors/requests always come from ``source == "request"`` rows.

    ``settle_ns``: recovery samples with ``t_ns < start + settle_ns`` (start: the recovery window's
    ``start_ns`` in ``meta.json``) are left out of the recovery's PhaseData (a declared settle time: the
    transient while the system re-settles is measured, not judged as steady state). The recovery's PhaseData
    carries a :class:`Recovery` saying what was left out and the time to recover; 0 changes nothing else.
    """
    if isinstance(settle_ns, bool) or not isinstance(settle_ns, (int, np.integer)) or settle_ns < 0:
        raise InvalidInput(f"settle_ns must be a non-negative integer (ns), got {settle_ns!r}")
    df = run.samples
    if flow is not None:
        df = df[df["flow"] == flow]
    present = set(df["source"].astype(str).unique())
    if source is None:
        source = next((s for s in ("request", "rtt", "oneway") if s in present), "request")
    out: dict[str, PhaseData] = {}
    phase_col = df["phase"].astype(str)
    src = df["source"].astype(str)
    t = df["t_ns"].to_numpy().astype(np.int64)
    is_lat = (src == source).to_numpy()
    is_req = (src == "request").to_numpy()
    failed = ~df["ok"].to_numpy().astype(bool)
    window = (getattr(run, "meta", None) or {}).get("phases", {}).get("recovery")
    start = int(window["start_ns"]) if window else None
    for name in PHASES:
        in_phase = (phase_col == name).to_numpy()
        if not in_phase.any():
            continue
        judged = in_phase
        rec = None
        if name == "recovery":
            if start is None and settle_ns > 0:
                raise InvalidInput("a settle time needs the recovery's start: the run's meta.json has no "
                                   "recovery window")
            # the one place the settle window is applied: [start, start + settle) is not judged
            settling = in_phase & (t < start + settle_ns) if settle_ns > 0 else np.zeros_like(in_phase)
            judged = in_phase & ~settling
            req_fail = in_phase & is_req & failed
            tail_start, tail = None, np.zeros_like(in_phase)
            if start is not None and (in_phase & is_req).any():
                last = int(t[in_phase & is_req].max())
                tail_start = start + 2 * max(0, last - start) // 3
                tail = in_phase & is_req & (t >= tail_start)
            rec = Recovery(start, int(settle_ns), int(np.count_nonzero(settling & is_lat)),
                           int(np.count_nonzero(settling & is_req)), int(np.count_nonzero(settling & is_req & failed)),
                           int(np.count_nonzero(in_phase & is_req)), int(np.count_nonzero(req_fail)),
                           int(t[req_fail].max()) if req_fail.any() else None, tail_start,
                           int(np.count_nonzero(tail)), int(np.count_nonzero(tail & failed)))
        sel = judged & is_lat
        lat = df["latency_ns"].to_numpy()[sel][np.argsort(t[sel], kind="stable")]  # time order: dependence
        req = judged & is_req
        flags = failed[req][np.argsort(t[req], kind="stable")]
        out[name] = PhaseData(lat, int(np.count_nonzero(flags)), int(flags.size), rec, True, flags)
    return out
