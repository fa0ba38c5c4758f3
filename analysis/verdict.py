"""Steady-state verdicts: :func:`evaluate` judges each phase (:class:`chaosinject.analysis.PhaseData`) against a
:class:`chaosinject.analysis.SteadyStateSpec` and returns a :class:`Verdict` (held / violated / inconclusive per
check, with evidence, n and effective n, and the dependence found in each phase's time order).

The decision rules of each check are in :mod:`chaosinject.analysis.checks`; the phases of a run directory
(settle window, time to recover) in :mod:`chaosinject.analysis.phases`; dependence in
:mod:`chaosinject.analysis.dependence`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ._types import InvalidInput, Outcome
from ._validate import check_count, check_samples
from .checks import (Check, SteadyStateSpec, _abs_errors, _abs_latency, _change_errors, _change_latency,
                     _rel_errors, _rel_latency)
from .dependence import Dependence, EpisodeInterval, episode_rate_ci, indicator_dependence
from .phases import PHASES, PhaseData, Recovery
from .quantile_shift import _quantile_difference_from_bounds
from .quantiles import DEFAULT_QUANTILES, QuantileEstimate, _qname, quantile_ci_dependent, quantile_table

__all__ = ["EXPECTATIONS", "Verdict", "evaluate"]

EXPECTATIONS: tuple[str, ...] = ("steady", "deviation")


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
    episodes: dict[str, EpisodeInterval] = {}   # dependent errors: the absolute interval from their episodes
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
        ed = deps[name].get("error_rate")
        if flags is not None and spec.max_error_rate is not None and ed is not None and ed.applied:
            episodes[name] = episode_rate_ci(flags, conf)
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
                                      _effective(pd_, deps[name]), episodes.get(name)))
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
    n_eff = c.n_eff if c.n_eff is not None else own.n_eff   # a check's own (episode interval) or the phase's
    if wide:
        def eff(p: str, d: Dependence) -> float:
            return n_eff if p == c.phase else d.n_eff
        notes.append("dependence in time order widened the interval: " + ", ".join(
            f"{p} effective n {eff(p, d):.0f} of {d.n} ({d.what} in episodes of {d.episode:.3g}, variance "
            f"inflation {d.n / eff(p, d):.3g})" for p, d in wide))
    loose = [p for p, d in involved if not d.ordered]
    if loose:
        notes.append(f"{' and '.join(loose)}: no time order, treated as independent")
    reason = c.reason + ("; " + "; ".join(notes) if notes else "")
    brief = c.brief + (f", effective n {n_eff:.0f} of {own.n}" if own.applied and c.brief else "")
    return dataclasses.replace(c, reason=reason, brief=brief, n=own.n, n_eff=n_eff)
