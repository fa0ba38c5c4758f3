"""Steady-state verdicts: per phase and metric, held / violated / inconclusive, with evidence and reasons.

Decision rules (each one-sided bound comes from a two-sided interval at ``spec.confidence``, so it is a
(1 + confidence)/2 one-sided bound, 97.5 % by default):

- absolute latency SLO ("p99 < 200 ms"): held if the upper bound of the order-statistic interval of the
  quantile is below the limit, violated if the lower bound is at or above it, else inconclusive;
  too few samples for an interval -> inconclusive.
- absolute error-rate SLO ("< 0.1 %"): the same with the Clopper-Pearson interval of errors/requests; when the
  errors are dependent in time order (bursts), the interval from their episodes
  (:func:`chaosinject.analysis.episode_rate_ci`: episode rate x mean episode size), or with fewer than 2
  episodes Clopper-Pearson on the batch-means effective counts (with one episode, its upper end at least the
  episode one: one burst's size says nothing about how much larger the others could be).
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

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from ._types import ConfidenceInterval, InvalidInput, Outcome
from ._validate import check_confidence, check_quantile
from .dependence import EpisodeInterval
from .phases import PhaseData
from .proportions import ProportionComparison, compare_proportions, proportion_ci
from .quantile_shift import QuantileDifference
from .quantiles import QuantileEstimate, _qname

__all__ = ["SteadyStateSpec", "Check"]


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
                eff: PhaseData | None = None, episodes: EpisodeInterval | None = None) -> Check:
    """``eff``: the effective counts (dependent errors) the interval is computed from; the text shows the real ones.
    ``episodes``: the episode interval of dependent errors (:func:`chaosinject.analysis.episode_rate_ci`), used
    instead of ``eff`` when it has one (2 or more episodes); with one episode its upper end (``high``) raises the
    interval's."""
    if requests == 0:
        return Check(phase, "error_rate", "absolute", Outcome.INCONCLUSIVE, math.nan, limit, None,
                     "no requests recorded in this phase")
    by_episode = episodes is not None and episodes.interval is not None
    if by_episode:
        ci = episodes.interval
        n_eff = max(1.0, episodes.n_eff)
    else:
        ci = proportion_ci(eff.errors if eff else errors, eff.requests if eff else requests, conf, "clopper-pearson")
        n_eff = float(eff.requests) if eff is not None else None
    one_episode = episodes is not None and episodes.interval is None and episodes.high > ci.high
    if one_episode:
        ci = ConfidenceInterval(ci.low, episodes.high)
    rate = errors / requests
    desc = f"error rate {rate:.3%} ({errors}/{requests}, {conf:.0%} CI {ci.low:.3%}-{ci.high:.3%})"
    need = "" if errors else f"; with no errors, about {math.ceil(-math.log((1 - conf) / 2) / limit)} requests are needed"
    if n_eff is not None and n_eff < requests:   # dependent errors: the length this dependence needs
        vif = requests / n_eff
        p = min(max(rate, 1.0 / requests), 1 - 1e-12)
        gap = abs(p - limit)
        z = NormalDist().inv_cdf((1 + conf) / 2)
        n_need = (z * z * p * (1 - p) / (gap * gap) if gap > 0 else math.inf) if errors else (
            -math.log((1 - conf) / 2) / limit)
        if math.isfinite(n_need):
            need = (f"; errors dependent in time order (effective n {n_eff:.0f} of {requests}): about "
                    f"{math.ceil(n_need * vif)} requests would be needed at this dependence")
        else:
            need = f"; errors dependent in time order (effective n {n_eff:.0f} of {requests})"
    if one_episode:   # the upper end is the one episode's, which more requests at this rate do not narrow
        need = (f"; errors dependent in time order, all in one episode: a phase long enough for several "
                f"episodes is needed")
    out, why = _against_limit(ci, limit, desc, f"{limit:.3%}", need)
    if by_episode or one_episode:
        why += f"; {episodes.text()}"
    brief = f"error rate {rate:.2%} ({errors}/{requests}), CI up to {ci.high:.2%}, limit {limit:.2%}"
    return Check(phase, "error_rate", "absolute", out, rate, limit, ci, why, episodes if by_episode else ci, brief,
                 n_eff=n_eff if by_episode else None)


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
