"""Chaos Toolkit experiment files parsed and validated into the frozen data of model.py (no I/O: no file, no
import, no network).

``parse_experiment(doc)`` checks a decoded JSON/YAML document and returns an :class:`Experiment`; every
problem found is reported at once, each with the path of the field (``method[0].provider.path: required``),
and nothing runs. Nested free-form values (arguments, headers, configuration) are deep-frozen
(``MappingProxyType`` / tuples); :func:`thaw` gives back plain dicts/lists for a call.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import re
from typing import Any, Mapping

from ..errors import ExperimentInvalid, InvalidSpec
from ..extension import EXTENSION_NAME
from ..record.experiment import record_errors  # the record block (one-way / RTT samples): its shape only
from .model import (DRY_MODES, HYPOTHESIS_STRATEGIES, ROLLBACK_STRATEGIES, TOLERANCE_TYPES, Activity,  # noqa: F401
                    Experiment, GuardSpec, HttpProvider, Hypothesis, LoadSpec, Pauses, PrometheusProvider,
                    ProcessProvider, Provider, PythonProvider, Tolerance, VerdictSpec, freeze, thaw)

__all__ = [
    "ExperimentInvalid", "Experiment", "Hypothesis", "Activity", "Pauses", "Tolerance", "PythonProvider",
    "ProcessProvider", "HttpProvider", "PrometheusProvider", "GuardSpec", "LoadSpec", "VerdictSpec", "parse_experiment",
    "freeze", "thaw", "DRY_MODES", "HYPOTHESIS_STRATEGIES", "ROLLBACK_STRATEGIES", "EXTENSION_NAME",
]

_VAR = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


# --------------------------------------------------------------------------------------------------------
class _Errors:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, msg: str) -> None:
        self.items.append((path, msg))


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _str(d: Mapping, key: str, path: str, err: _Errors, *, required: bool = False, default: str | None = None
         ) -> str | None:
    v = d.get(key)
    if v is None or v == "":
        if required:
            err.add(f"{path}.{key}" if path else key, "required")
        return default
    if not isinstance(v, str):
        err.add(f"{path}.{key}" if path else key, f"must be a string, got {type(v).__name__}")
        return default
    return v


def _seconds(v: Any, path: str, err: _Errors, *, allow_var: bool = False) -> float | str | None:
    if v is None:
        return None
    if allow_var and isinstance(v, str) and _VAR.match(v):
        return v
    if not _is_num(v) or float(v) < 0:
        err.add(path, "must be a non-negative number of seconds" + (" or \"${name}\"" if allow_var else ""))
        return None
    return float(v)


def _secrets_list(p: Mapping, path: str, err: _Errors) -> tuple[str, ...]:
    s = p.get("secrets")
    if s is None:
        return ()
    if isinstance(s, str):
        return (s,)
    if isinstance(s, list) and all(isinstance(x, str) for x in s):
        return tuple(s)
    err.add(f"{path}.secrets", "must be a list of secret scope names")
    return ()


# Module paths written before the import name chaosinject (experiment files, journals): `injector.X` and
# `analysis.X` are read as chaosinject.X / chaosinject.analysis.X when that module of ours exists. An alias at
# load time, not packages: the top-level names injector and analysis belong to whoever installed them (PyPI).
LEGACY_MODULES = {"injector": "chaosinject", "analysis": "chaosinject.analysis"}
# Chaos Toolkit's layout names the same functions: read as the modules our runner knows them by
LAYOUT_MODULES = {"chaosinject.network.actions": "chaosinject.experiment.actions",
                  "chaosinject.network.probes": "chaosinject.experiment.probes",
                  "chaosinject.host.actions": "chaosinject.experiment.hostactions"}


def current_module(module: str) -> str:
    """``module`` under its current name: a path of ours written under the old top-level names (``injector``,
    ``analysis``) becomes the chaosinject one; anything else is returned unchanged."""
    if module in LAYOUT_MODULES:
        return LAYOUT_MODULES[module]
    head, dot, rest = module.partition(".")
    if head not in LEGACY_MODULES or not rest:
        return module
    new = f"{LEGACY_MODULES[head]}.{rest}"
    try:
        found = importlib.util.find_spec(new) is not None
    except (ImportError, ValueError):
        found = False
    return LAYOUT_MODULES.get(new, new) if found else module


def _provider(p: Any, path: str, err: _Errors) -> Provider | None:
    if not isinstance(p, Mapping):
        err.add(path, "required (a mapping with a type)" if p is None else "must be a mapping")
        return None
    kind = p.get("type")
    if not kind:
        err.add(f"{path}.type", "required: one of python, process, http, prometheus")
        return None
    if kind == "python":
        module = _str(p, "module", path, err, required=True)
        func = _str(p, "func", path, err, required=True)
        args = p.get("arguments", {})
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            err.add(f"{path}.arguments", "must be a mapping of argument names to values")
            args = {}
        if module is None or func is None:
            return None
        return PythonProvider(current_module(module), func, freeze(args), _secrets_list(p, path, err))
    if kind == "process":
        exe = _str(p, "path", path, err, required=True)
        args = p.get("arguments", "")
        if args is None:
            args = ""
        if isinstance(args, list):
            if not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args):
                err.add(f"{path}.arguments", "a list of arguments must hold strings or numbers")
                args = ()
            else:
                args = tuple(str(a) for a in args)
        elif not isinstance(args, str):
            err.add(f"{path}.arguments", "must be a string (run through the shell) or a list (argv)")
            args = ""
        timeout = _seconds(p.get("timeout"), f"{path}.timeout", err)
        if exe is None:
            return None
        return ProcessProvider(exe, args, timeout, _secrets_list(p, path, err))
    if kind == "http":
        url = _str(p, "url", path, err, required=True)
        method = _str(p, "method", path, err, default="GET").upper()
        headers = p.get("headers") or {}
        if not isinstance(headers, Mapping):
            err.add(f"{path}.headers", "must be a mapping of header names to values")
            headers = {}
        timeout = p.get("timeout")
        if isinstance(timeout, list) and len(timeout) == 2 and all(_is_num(t) for t in timeout):
            timeout = float(timeout[0]) + float(timeout[1])   # (connect, read): one overall bound here
        timeout = _seconds(timeout, f"{path}.timeout", err)
        exp = p.get("expected_status", p.get("expected_statuses"))
        expected: tuple[int, ...] = ()
        if exp is not None:
            items = exp if isinstance(exp, list) else [exp]
            if not all(isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599 for x in items):
                err.add(f"{path}.expected_status", "must be an HTTP status code or a list of them")
            else:
                expected = tuple(items)
        verify = p.get("verify_tls", True)
        if not isinstance(verify, bool):
            err.add(f"{path}.verify_tls", "must be true or false")
            verify = True
        if url is not None and not re.match(r"^https?://", url) and not url.startswith("${"):
            err.add(f"{path}.url", f"must be an http:// or https:// URL, got {url!r}")
        if url is None:
            return None
        return HttpProvider(url, method, freeze(headers), freeze(p.get("arguments")), timeout, expected, verify,
                            _secrets_list(p, path, err))
    if kind == "prometheus":
        url = _str(p, "url", path, err, required=True)
        query = _str(p, "query", path, err, required=True)
        step = p.get("step")
        if step is not None and not (_is_num(step) and float(step) > 0) and not isinstance(step, str):
            err.add(f"{path}.step", "must be a positive number of seconds or a duration such as '15s'")
        times = {k: _str(p, k, path, err) for k in ("when", "start", "end")}
        if times["start"] is None and times["end"] is not None:
            err.add(f"{path}.start", "required when end is given (a range query)")
        timeout = _seconds(p.get("timeout"), f"{path}.timeout", err)
        if url is None or query is None:
            return None
        return PrometheusProvider(url, query, times["when"], times["start"], times["end"], step, timeout)
    err.add(f"{path}.type", f"unknown provider type {kind!r}: expected python, process, http or prometheus")
    return None


def _tolerance(t: Any, path: str, err: _Errors, refs: Mapping[str, Any]) -> Tolerance | None:
    if isinstance(t, (bool, str)) or _is_num(t):
        return Tolerance("value", t)
    if isinstance(t, list):
        if len(t) == 2 and all(_is_num(x) for x in t) and t[0] > t[1]:
            err.add(path, f"a [low, high] tolerance needs low <= high, got {t}")
        return Tolerance("value", freeze(t))
    if not isinstance(t, Mapping):
        err.add(path, "must be a value, a list, or a mapping with a type "
                      f"({', '.join(TOLERANCE_TYPES)})")
        return None
    kind = t.get("type")
    if kind not in TOLERANCE_TYPES:
        err.add(f"{path}.type", f"unknown tolerance type {kind!r}: expected one of {', '.join(TOLERANCE_TYPES)}")
        return None
    note = None
    if kind == "range":
        r = t.get("range")
        if not (isinstance(r, list) and len(r) == 2):
            err.add(f"{path}.range", "required: [low, high]")
        elif not all(_is_num(x) for x in r):
            err.add(f"{path}.range", "bounds must be numbers")
        elif r[0] > r[1]:
            err.add(f"{path}.range", f"low must be <= high, got {r}")
        target = t.get("target")
        if target is not None and not isinstance(target, str):
            # chaoslib reads `target` as the name of a key in the probe's output and crashes on a number
            note = (f"{path}.target = {target!r} is not a key name (Chaos Toolkit reads `target` as the key of "
                    f"the probe output to check, and crashes on a number); read as the author's nominal value, "
                    f"informational only: the probe's value itself is checked against range {r}")
    elif kind == "regex":
        pat = t.get("pattern")
        if not isinstance(pat, str):
            err.add(f"{path}.pattern", "required: a regular expression")
        elif not _VAR.search(pat):
            try:
                re.compile(pat)
            except re.error as exc:
                err.add(f"{path}.pattern", f"invalid regular expression: {exc}")
    elif kind == "jsonpath":
        from .jsonpath import JsonPathError, parse_jsonpath

        p = t.get("path")
        if not isinstance(p, str) or not p.strip():
            err.add(f"{path}.path", "required: a JSONPath such as $.status")
        else:
            try:
                parse_jsonpath(p)
            except JsonPathError as exc:
                err.add(f"{path}.path", str(exc))
        if "count" in t and not (isinstance(t["count"], int) and not isinstance(t["count"], bool)):
            err.add(f"{path}.count", "must be an integer")
    elif kind == "probe":
        act = _activity(dict(t, type="probe", name=t.get("name") or "tolerance-probe"), path, err, refs,
                        in_tolerance=True)
        return Tolerance("probe", freeze(dict(t)), probe=act)
    elif kind == "statistical":
        _check_statistical(t, path, err)
    return Tolerance(kind, freeze(dict(t)), note)


_STAT_KEYS = {"type", "quantile", "latency_max", "latency_max_ratio", "max_error_rate", "error_rate_vs_baseline",
              "confidence", "alpha", "inconclusive", "target"}


def _check_statistical(t: Mapping, path: str, err: _Errors) -> None:
    from ..spec.units import parse_duration_ns

    for k in t:
        if k not in _STAT_KEYS:
            err.add(f"{path}.{k}", f"unknown key; expected some of {', '.join(sorted(_STAT_KEYS - {'type'}))}")
    for k, lo, hi in (("quantile", 0, 1), ("max_error_rate", 0, 1), ("confidence", 0, 1), ("alpha", 0, 1)):
        if k in t and t[k] is not None and not (_is_num(t[k]) and lo < float(t[k]) < hi):
            err.add(f"{path}.{k}", f"must be a number in ({lo}, {hi})")
    if "latency_max_ratio" in t and t["latency_max_ratio"] is not None and not (
            _is_num(t["latency_max_ratio"]) and t["latency_max_ratio"] > 0):
        err.add(f"{path}.latency_max_ratio", "must be a positive number")
    if t.get("latency_max") is not None:
        try:
            parse_duration_ns(str(t["latency_max"]), field=f"{path}.latency_max")
        except InvalidSpec as exc:
            err.add(f"{path}.latency_max", str(exc).split(": ", 1)[-1])
    if t.get("inconclusive", "fail") not in ("fail", "pass"):
        err.add(f"{path}.inconclusive", "must be 'fail' or 'pass'")


def _pauses(v: Any, path: str, err: _Errors) -> Pauses:
    if v is None:
        return Pauses()
    if not isinstance(v, Mapping):
        err.add(path, "must be a mapping with before/after seconds")
        return Pauses()
    return Pauses(_seconds(v.get("before"), f"{path}.before", err, allow_var=True),
                  _seconds(v.get("after"), f"{path}.after", err, allow_var=True))


def _activity(a: Any, path: str, err: _Errors, refs: Mapping[str, Any], *, in_tolerance: bool = False
              ) -> Activity | None:
    if not isinstance(a, Mapping):
        err.add(path, "must be a mapping (an activity)")
        return None
    if "ref" in a and "provider" not in a:
        ref = a.get("ref")
        if not isinstance(ref, str) or ref not in refs:
            err.add(f"{path}.ref", f"no activity named {ref!r} is declared before it")
            return None
        return _activity(refs[ref], path, err, {}, in_tolerance=in_tolerance)
    kind = a.get("type")
    if kind not in ("probe", "action"):
        err.add(f"{path}.type", "required: probe or action" if kind is None else
                f"must be probe or action, got {kind!r}")
    name = _str(a, "name", path, err, required=True)
    provider = _provider(a.get("provider"), f"{path}.provider", err)
    tol = None
    if "tolerance" in a and not in_tolerance:
        tol = _tolerance(a["tolerance"], f"{path}.tolerance", err, refs)
    bg = a.get("background", False)
    if not isinstance(bg, bool):
        err.add(f"{path}.background", "must be true or false")
        bg = False
    dry = a.get("dry")
    if dry is not None and dry not in DRY_MODES:
        err.add(f"{path}.dry", f"must be one of {', '.join(DRY_MODES)}")
    timeout = _seconds(a.get("timeout"), f"{path}.timeout", err)
    pauses = _pauses(a.get("pauses"), f"{path}.pauses", err)
    if kind not in ("probe", "action") or name is None or provider is None:
        return None
    return Activity(kind, name, provider, path, tol, bg, pauses, timeout, dry, freeze(dict(a)))


def _activities(items: Any, path: str, err: _Errors, refs: dict[str, Any], *, probes_only: bool = False
                ) -> tuple[Activity, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        err.add(path, "must be a list of activities")
        return ()
    out = []
    for i, a in enumerate(items):
        act = _activity(a, f"{path}[{i}]", err, refs)
        if isinstance(a, Mapping) and isinstance(a.get("name"), str) and "provider" in a:
            refs.setdefault(a["name"], a)
        if act is None:
            continue
        if probes_only and act.type != "probe":
            err.add(f"{path}[{i}].type", "the steady-state hypothesis holds probes only")
        out.append(act)
    return tuple(out)


def _ratio(v: Any, path: str, err: _Errors, default: float | None, *, percent_ok: bool = True) -> float | None:
    if v is None:
        return None if default is None else default
    if isinstance(v, str) and percent_ok:
        from ..spec.units import parse_percent_ratio

        try:
            return parse_percent_ratio(v, field=path)
        except InvalidSpec as exc:
            err.add(path, str(exc).split(": ", 1)[-1])
            return default
    if not (_is_num(v) and 0 < float(v) < 1):
        err.add(path, "must be a ratio in (0, 1) or a percentage such as '5%'")
        return default
    return float(v)


_GUARD_KEYS = {"enabled", "max_error_rate", "latency_quantile", "latency_max_ratio", "alpha", "interval",
               "prometheus", "load", "recovery", "baseline"}


def _guard(ext: Mapping, path: str, err: _Errors) -> GuardSpec:
    from ..spec.units import parse_duration_ns

    halt = ext.get("halt") or {}
    load_spec = None
    if not isinstance(halt, Mapping):
        err.add(f"{path}.halt", "must be a mapping")
        halt = {}
    for k in halt:
        if k not in _GUARD_KEYS:
            err.add(f"{path}.halt.{k}", f"unknown key; expected some of {', '.join(sorted(_GUARD_KEYS))}")

    def dur(v: Any, p: str, default: float) -> float:
        if v is None:
            return default
        if _is_num(v) and v >= 0:
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
        _ratio(halt.get("max_error_rate"), f"{path}.halt.max_error_rate", err, 0.05)
    q = _ratio(halt.get("latency_quantile"), f"{path}.halt.latency_quantile", err, 0.99, percent_ok=False)
    ratio = halt.get("latency_max_ratio", 2.0)
    if ratio is not None and not (_is_num(ratio) and ratio > 1):
        err.add(f"{path}.halt.latency_max_ratio", "must be a number > 1 (e.g. 2 for 'p99 > 2x baseline') or null")
        ratio = 2.0
    alpha = _ratio(halt.get("alpha"), f"{path}.halt.alpha", err, 0.01, percent_ok=False)
    prom = halt.get("prometheus") or {}
    if not isinstance(prom, Mapping):
        err.add(f"{path}.halt.prometheus", "must be a mapping with url, query, max")
        prom = {}
    if prom and not all(k in prom for k in ("url", "query", "max")):
        err.add(f"{path}.halt.prometheus", "needs url, query and max (halt when the query's value > max)")
    if prom and "max" in prom and not _is_num(prom["max"]):
        err.add(f"{path}.halt.prometheus.max", "must be a number")
    load = ext.get("load", halt.get("load"))
    if load is not None:
        if not isinstance(load, Mapping) or not isinstance(load.get("url"), str):
            err.add(f"{path}.load.url", "required: the URL the built-in load generator requests")
        else:
            rate = load.get("rate", 50)
            if not (_is_num(rate) and 0 < rate <= 2000):
                err.add(f"{path}.load.rate", "must be requests per second in (0, 2000]")
                rate = 50
            load_spec = LoadSpec(load["url"], float(rate), dur(load.get("timeout"), f"{path}.load.timeout", 1.0),
                                 load.get("netns"))
    return GuardSpec(
        enabled=enabled, max_error_rate=max_err, latency_quantile=q or 0.99,
        latency_max_ratio=None if ratio is None else float(ratio), alpha=alpha or 0.01,
        interval_s=dur(halt.get("interval"), f"{path}.halt.interval", 0.2),
        prometheus_url=prom.get("url") if prom else None, prometheus_query=prom.get("query") if prom else None,
        prometheus_max=float(prom["max"]) if prom and _is_num(prom.get("max")) else None,
        load=load_spec, recovery_s=dur(ext.get("recovery", halt.get("recovery")), f"{path}.recovery", 2.0),
        baseline_max_s=dur(halt.get("baseline"), f"{path}.halt.baseline", 10.0))


_VERDICT_KEYS = ("quantile", "latency_max", "latency_max_ratio", "max_error_rate", "error_rate_vs_baseline",
                 "error_rate_tolerance", "error_rate_margin", "confidence", "alpha", "source", "expect",
                 "recovery_settle")


def _verdict(v: Any, path: str, err: _Errors) -> VerdictSpec | None:
    from ..spec.units import parse_duration_ns

    if not isinstance(v, Mapping):
        err.add(path, "must be a mapping (" + ", ".join(_VERDICT_KEYS) + ")")
        return None
    for k in v:
        if k not in _VERDICT_KEYS:
            err.add(f"{path}.{k}", f"unknown key; expected some of {', '.join(_VERDICT_KEYS)}")
    out: dict[str, Any] = {}
    for k in ("quantile", "confidence", "alpha"):
        if k in v:
            if _is_num(v[k]) and 0 < float(v[k]) < 1:
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
        if r is not None and not (_is_num(r) and float(r) >= 1):
            err.add(f"{path}.latency_max_ratio", "must be a number >= 1 (p99 within this many times the "
                                                 "baseline's) or null")
        out["latency_max_ratio"] = None if r is None or not _is_num(r) else float(r)
    for k in ("max_error_rate", "error_rate_tolerance"):
        if k in v:
            out[k] = None if v[k] is None else _ratio(v[k], f"{path}.{k}", err, None)
    if "error_rate_margin" in v:
        m = v["error_rate_margin"]
        out["error_rate_margin"] = 0.0 if m in (0, None) else (_ratio(m, f"{path}.error_rate_margin", err, 0.0)
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


def parse_experiment(doc: Any, *, source: str | None = None) -> Experiment:
    """Validate a decoded experiment document; raises :class:`ExperimentInvalid` listing every problem."""
    err = _Errors()
    if not isinstance(doc, Mapping):
        raise ExperimentInvalid([("", "an experiment must be a mapping (JSON object / YAML mapping)")], source)
    title = _str(doc, "title", "", err, required=True)
    desc = _str(doc, "description", "", err, default="")
    version = doc.get("version")
    tags = doc.get("tags") or []
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        err.add("tags", "must be a list of strings")
        tags = []
    conf = doc.get("configuration") or {}
    if not isinstance(conf, Mapping):
        err.add("configuration", "must be a mapping")
        conf = {}
    for k, v in conf.items():
        if isinstance(v, Mapping) and v.get("type") == "env" and not isinstance(v.get("key"), str):
            err.add(f"configuration.{k}.key", "required: the environment variable to read")
        if isinstance(v, Mapping) and v.get("type") == "env" and v.get("env_var_type") not in (
                None, "str", "int", "float", "bytes", "json"):
            err.add(f"configuration.{k}.env_var_type", "must be one of str, int, float, bytes, json")
    secrets = doc.get("secrets") or {}
    if not isinstance(secrets, Mapping):
        err.add("secrets", "must be a mapping of scopes to mappings")
        secrets = {}
    for scope, vals in secrets.items():
        if not isinstance(vals, Mapping):
            err.add(f"secrets.{scope}", "must be a mapping of names to values")
            continue
        for k, v in vals.items():
            if isinstance(v, Mapping) and v.get("type") == "env" and not isinstance(v.get("key"), str):
                err.add(f"secrets.{scope}.{k}.key", "required: the environment variable to read")
            elif isinstance(v, Mapping) and v.get("type") not in ("env", None):
                err.add(f"secrets.{scope}.{k}.type", f"unsupported secret type {v.get('type')!r} (env only)")
    refs: dict[str, Any] = {}
    hyp = None
    h = doc.get("steady-state-hypothesis")
    if h is not None:
        if not isinstance(h, Mapping):
            err.add("steady-state-hypothesis", "must be a mapping with title and probes")
        else:
            htitle = _str(h, "title", "steady-state-hypothesis", err, required=True)
            probes = _activities(h.get("probes"), "steady-state-hypothesis.probes", err, refs, probes_only=True)
            for i, p in enumerate(h.get("probes") or []):
                if isinstance(p, Mapping) and "tolerance" not in p and "ref" not in p:
                    err.add(f"steady-state-hypothesis.probes[{i}].tolerance", "required in a hypothesis probe")
            hyp = Hypothesis(htitle or "", probes)
    if "method" not in doc:
        err.add("method", "required: a list of activities (may be empty)")
    method = _activities(doc.get("method"), "method", err, refs)
    rollbacks = _activities(doc.get("rollbacks"), "rollbacks", err, refs)
    dry = doc.get("dry")
    if dry is not None and dry not in DRY_MODES:
        err.add("dry", f"must be one of {', '.join(DRY_MODES)}")
    runtime = doc.get("runtime") or {}
    if not isinstance(runtime, Mapping):
        err.add("runtime", "must be a mapping")
        runtime = {}
    rs = (runtime.get("rollbacks") or {}).get("strategy") if isinstance(runtime.get("rollbacks"), Mapping) else None
    if rs is not None and rs not in ROLLBACK_STRATEGIES:
        err.add("runtime.rollbacks.strategy", f"must be one of {', '.join(ROLLBACK_STRATEGIES)}")
    hs = (runtime.get("hypothesis") or {}).get("strategy") if isinstance(runtime.get("hypothesis"), Mapping) \
        else None
    if hs is not None and hs not in HYPOTHESIS_STRATEGIES:
        err.add("runtime.hypothesis.strategy", f"must be one of {', '.join(HYPOTHESIS_STRATEGIES)}")
    exts = doc.get("extensions") or []
    guard = GuardSpec()
    verdict = None
    if not isinstance(exts, list) or not all(isinstance(e, Mapping) for e in exts):
        err.add("extensions", "must be a list of mappings, each with a name")
        exts = []
    for i, e in enumerate(exts):
        if not isinstance(e.get("name"), str):
            err.add(f"extensions[{i}].name", "required")
        elif e["name"] == EXTENSION_NAME:
            guard = _guard(e, f"extensions[{i}]", err)
            if "verdict" in e:
                verdict = _verdict(e["verdict"], f"extensions[{i}].verdict", err)
    for p, problem in record_errors(exts)[1]:
        err.add(p, problem)
    if err.items:
        raise ExperimentInvalid(err.items, source)
    notes = tuple(a.tolerance.note for a in (hyp.probes if hyp else ()) if a.tolerance and a.tolerance.note)
    return Experiment(title=title or "", description=desc or "", version=None if version is None else str(version),
                      tags=tuple(tags), configuration=freeze(conf), secrets=freeze(secrets), hypothesis=hyp,
                      method=method, rollbacks=rollbacks, dry=dry, runtime=freeze(runtime),
                      extensions=tuple(freeze(e) for e in exts), guard=guard, verdict=verdict, notes=notes, document=freeze(doc))
