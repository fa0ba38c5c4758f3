"""Our extension block of an experiment (``extensions: [{name: chaosinject, ...}]``) validated: the halt guard
(``GuardSpec``), the verdict (``VerdictSpec``), and the keys of a ``statistical`` tolerance, which judges by
the same figures.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..errors import InvalidSpec
from .model import GuardSpec, LoadSpec, VerdictSpec, freeze
from .spec_fields import FieldErrors, is_number, ratio_field


STATISTICAL_KEYS = {"type", "quantile", "latency_max", "latency_max_ratio", "max_error_rate", "error_rate_vs_baseline",
              "confidence", "alpha", "inconclusive", "target"}


def check_statistical(t: Mapping, path: str, err: FieldErrors) -> None:
    from ..spec.units import parse_duration_ns

    for k in t:
        if k not in STATISTICAL_KEYS:
            err.add(f"{path}.{k}", f"unknown key; expected some of {', '.join(sorted(STATISTICAL_KEYS - {'type'}))}")
    for k, lo, hi in (("quantile", 0, 1), ("max_error_rate", 0, 1), ("confidence", 0, 1), ("alpha", 0, 1)):
        if k in t and t[k] is not None and not (is_number(t[k]) and lo < float(t[k]) < hi):
            err.add(f"{path}.{k}", f"must be a number in ({lo}, {hi})")
    if "latency_max_ratio" in t and t["latency_max_ratio"] is not None and not (
            is_number(t["latency_max_ratio"]) and t["latency_max_ratio"] > 0):
        err.add(f"{path}.latency_max_ratio", "must be a positive number")
    if t.get("latency_max") is not None:
        try:
            parse_duration_ns(str(t["latency_max"]), field=f"{path}.latency_max")
        except InvalidSpec as exc:
            err.add(f"{path}.latency_max", str(exc).split(": ", 1)[-1])
    if t.get("inconclusive", "fail") not in ("fail", "pass"):
        err.add(f"{path}.inconclusive", "must be 'fail' or 'pass'")


GUARD_KEYS = {"enabled", "max_error_rate", "latency_quantile", "latency_max_ratio", "alpha", "interval",
               "prometheus", "load", "recovery", "baseline"}


def guard_spec(ext: Mapping, path: str, err: FieldErrors) -> GuardSpec:
    from ..spec.units import parse_duration_ns

    halt = ext.get("halt") or {}
    load_spec = None
    if not isinstance(halt, Mapping):
        err.add(f"{path}.halt", "must be a mapping")
        halt = {}
    for k in halt:
        if k not in GUARD_KEYS:
            err.add(f"{path}.halt.{k}", f"unknown key; expected some of {', '.join(sorted(GUARD_KEYS))}")

    def dur(v: Any, p: str, default: float) -> float:
        if v is None:
            return default
        if is_number(v) and v >= 0:
            return float(v)
        try:
            return parse_duration_ns(str(v), field=p, allow_zero=True) / 1e9
        except InvalidSpec as exc:
            err.add(p, str(exc).split(": ", 1)[-1])
            return default

    enabled = halt.get("enabled", True)
    if not isinstance(enabled, bool):
        err.add(f"{path}.halt.enabled", "must be true or false")
        enabled = True
    max_err = None if "max_error_rate" in halt and halt["max_error_rate"] is None else \
        ratio_field(halt.get("max_error_rate"), f"{path}.halt.max_error_rate", err, 0.05)
    q = ratio_field(halt.get("latency_quantile"), f"{path}.halt.latency_quantile", err, 0.99, percent_ok=False)
    ratio = halt.get("latency_max_ratio", 2.0)
    if ratio is not None and not (is_number(ratio) and ratio > 1):
        err.add(f"{path}.halt.latency_max_ratio", "must be a number > 1 (e.g. 2 for 'p99 > 2x baseline') or null")
        ratio = 2.0
    alpha = ratio_field(halt.get("alpha"), f"{path}.halt.alpha", err, 0.01, percent_ok=False)
    prom = halt.get("prometheus") or {}
    if not isinstance(prom, Mapping):
        err.add(f"{path}.halt.prometheus", "must be a mapping with url, query, max")
        prom = {}
    if prom and not all(k in prom for k in ("url", "query", "max")):
        err.add(f"{path}.halt.prometheus", "needs url, query and max (halt when the query's value > max)")
    if prom and "max" in prom and not is_number(prom["max"]):
        err.add(f"{path}.halt.prometheus.max", "must be a number")
    load = ext.get("load", halt.get("load"))
    if load is not None:
        if not isinstance(load, Mapping) or not isinstance(load.get("url"), str):
            err.add(f"{path}.load.url", "required: the URL the built-in load generator requests")
        else:
            rate = load.get("rate", 50)
            if not (is_number(rate) and 0 < rate <= 2000):
                err.add(f"{path}.load.rate", "must be requests per second in (0, 2000]")
                rate = 50
            load_spec = LoadSpec(load["url"], float(rate), dur(load.get("timeout"), f"{path}.load.timeout", 1.0),
                                 load.get("netns"))
    return GuardSpec(
        enabled=enabled, max_error_rate=max_err, latency_quantile=q or 0.99,
        latency_max_ratio=None if ratio is None else float(ratio), alpha=alpha or 0.01,
        interval_s=dur(halt.get("interval"), f"{path}.halt.interval", 0.2),
        prometheus_url=prom.get("url") if prom else None, prometheus_query=prom.get("query") if prom else None,
        prometheus_max=float(prom["max"]) if prom and is_number(prom.get("max")) else None,
        load=load_spec, recovery_s=dur(ext.get("recovery", halt.get("recovery")), f"{path}.recovery", 2.0),
        baseline_max_s=dur(halt.get("baseline"), f"{path}.halt.baseline", 10.0))


VERDICT_KEYS = ("quantile", "latency_max", "latency_max_ratio", "max_error_rate", "error_rate_vs_baseline",
                 "error_rate_tolerance", "error_rate_margin", "confidence", "alpha", "source", "expect",
                 "recovery_settle")


def verdict_spec(v: Any, path: str, err: FieldErrors) -> VerdictSpec | None:
    from ..spec.units import parse_duration_ns

    if not isinstance(v, Mapping):
        err.add(path, "must be a mapping (" + ", ".join(VERDICT_KEYS) + ")")
        return None
    for k in v:
        if k not in VERDICT_KEYS:
            err.add(f"{path}.{k}", f"unknown key; expected some of {', '.join(VERDICT_KEYS)}")
    out: dict[str, Any] = {}
    for k in ("quantile", "confidence", "alpha"):
        if k in v:
            if is_number(v[k]) and 0 < float(v[k]) < 1:
                out[k] = float(v[k])
            else:
                err.add(f"{path}.{k}", "must be a number in (0, 1)")
    if "latency_max" in v:
        out["latency_max_ns"] = None
        if v["latency_max"] is not None:
            try:
                out["latency_max_ns"] = float(parse_duration_ns(str(v["latency_max"]), field=f"{path}.latency_max"))
            except InvalidSpec as exc:
                err.add(f"{path}.latency_max", str(exc).split(": ", 1)[-1])
    if "latency_max_ratio" in v:
        r = v["latency_max_ratio"]
        if r is not None and not (is_number(r) and float(r) >= 1):
            err.add(f"{path}.latency_max_ratio", "must be a number >= 1 (p99 within this many times the "
                                                 "baseline's) or null")
        out["latency_max_ratio"] = None if r is None or not is_number(r) else float(r)
    for k in ("max_error_rate", "error_rate_tolerance"):
        if k in v:
            out[k] = None if v[k] is None else ratio_field(v[k], f"{path}.{k}", err, None)
    if "error_rate_margin" in v:
        m = v["error_rate_margin"]
        out["error_rate_margin"] = 0.0 if m in (0, None) else (ratio_field(m, f"{path}.error_rate_margin", err, 0.0)
                                                               or 0.0)
    if "error_rate_vs_baseline" in v:
        if isinstance(v["error_rate_vs_baseline"], bool):
            out["error_rate_vs_baseline"] = v["error_rate_vs_baseline"]
        else:
            err.add(f"{path}.error_rate_vs_baseline", "must be true or false")
    settle, rs = 0, v.get("recovery_settle")
    if isinstance(rs, (str, int, float)) and str(rs).strip().startswith("-"):
        err.add(f"{path}.recovery_settle", f"must not be negative: a duration such as \"2s\" (got {rs!r})")
    elif not (rs is None or (rs == 0 and not isinstance(rs, bool))
              or (isinstance(rs, str) and re.fullmatch(r"(0+\.?0*|\.0+)\s*(ns|us|ms|s|m|h)?", rs.strip()))):
        try:   # a duration string ("2s"): 0 / "0s" / null keep every recovery sample judged
            settle = parse_duration_ns(str(rs), field=f"{path}.recovery_settle")
        except InvalidSpec as exc:
            err.add(f"{path}.recovery_settle", str(exc).split(": ", 1)[-1])
    src = v.get("source")
    if src is not None and src not in ("request", "rtt", "oneway"):
        err.add(f"{path}.source", f"must be request, rtt or oneway, got {src!r}")
        src = None
    expect: dict[str, str] = {}
    e = v.get("expect") or {}
    if not isinstance(e, Mapping):
        err.add(f"{path}.expect", "must be a mapping of phase (baseline, fault, recovery) to steady or deviation")
        e = {}
    for phase, what in e.items():
        if phase not in ("baseline", "fault", "recovery"):
            err.add(f"{path}.expect.{phase}", "unknown phase; expected baseline, fault or recovery")
        elif what not in ("steady", "deviation"):
            err.add(f"{path}.expect.{phase}", f"must be steady or deviation, got {what!r}")
        elif phase == "baseline" and what != "steady":
            err.add(f"{path}.expect.baseline", "the baseline cannot deviate: deviation is measured against it")
        else:
            expect[phase] = what
    if all(k in out for k in ("latency_max_ns", "latency_max_ratio", "max_error_rate", "error_rate_vs_baseline")) \
            and not any(out[k] for k in ("latency_max_ns", "latency_max_ratio", "max_error_rate",
                                         "error_rate_vs_baseline")):
        err.add(path, "every check is off (latency_max, latency_max_ratio, max_error_rate null and "
                      "error_rate_vs_baseline false): nothing would be judged")
    return VerdictSpec(freeze(out), freeze(expect), src, settle)
