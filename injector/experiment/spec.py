"""Chaos Toolkit experiment files parsed and validated into the frozen data of model.py (no I/O: no file, no
import, no network).

``parse_experiment(doc)`` checks a decoded JSON/YAML document and returns an :class:`Experiment`; every
problem found is reported at once, each with the path of the field (``method[0].provider.path: required``),
and nothing runs. Nested free-form values (arguments, headers, configuration) are deep-frozen
(``MappingProxyType`` / tuples); :func:`thaw` gives back plain dicts/lists for a call.

This room checks the document, its hypothesis, activities, providers and tolerances; the shared field checks
are ``spec_fields.py``'s, our extension block (guard, verdict) ``spec_extension.py``'s, old module paths
``module_names.py``'s.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..errors import ExperimentInvalid
from ..extension import EXTENSION_NAME
from ..record.experiment import record_errors  # the record block (one-way / RTT samples): its shape only
from .model import (DRY_MODES, HYPOTHESIS_STRATEGIES, ROLLBACK_STRATEGIES, TOLERANCE_TYPES, Activity,  # noqa: F401
                    Experiment, GuardSpec, HttpProvider, Hypothesis, LoadSpec, Pauses, PrometheusProvider,
                    ProcessProvider, Provider, PythonProvider, Tolerance, VerdictSpec, freeze, thaw)
from .module_names import current_module
from .spec_extension import check_statistical, guard_spec, verdict_spec
from .spec_fields import VARIABLE, FieldErrors, is_number, seconds_field, secret_scopes, string_field

__all__ = [
    "ExperimentInvalid", "Experiment", "Hypothesis", "Activity", "Pauses", "Tolerance", "PythonProvider",
    "ProcessProvider", "HttpProvider", "PrometheusProvider", "GuardSpec", "LoadSpec", "VerdictSpec", "parse_experiment",
    "freeze", "thaw", "DRY_MODES", "HYPOTHESIS_STRATEGIES", "ROLLBACK_STRATEGIES", "EXTENSION_NAME",
]


# --------------------------------------------------------------------------------------------------------
def _provider(p: Any, path: str, err: FieldErrors) -> Provider | None:
    if not isinstance(p, Mapping):
        err.add(path, "required (a mapping with a type)" if p is None else "must be a mapping")
        return None
    kind = p.get("type")
    if not kind:
        err.add(f"{path}.type", "required: one of python, process, http, prometheus")
        return None
    if kind == "python":
        module = string_field(p, "module", path, err, required=True)
        func = string_field(p, "func", path, err, required=True)
        args = p.get("arguments", {})
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            err.add(f"{path}.arguments", "must be a mapping of argument names to values")
            args = {}
        if module is None or func is None:
            return None
        return PythonProvider(current_module(module), func, freeze(args), secret_scopes(p, path, err))
    if kind == "process":
        exe = string_field(p, "path", path, err, required=True)
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
        timeout = seconds_field(p.get("timeout"), f"{path}.timeout", err)
        if exe is None:
            return None
        return ProcessProvider(exe, args, timeout, secret_scopes(p, path, err))
    if kind == "http":
        url = string_field(p, "url", path, err, required=True)
        method = string_field(p, "method", path, err, default="GET").upper()
        headers = p.get("headers") or {}
        if not isinstance(headers, Mapping):
            err.add(f"{path}.headers", "must be a mapping of header names to values")
            headers = {}
        timeout = p.get("timeout")
        if isinstance(timeout, list) and len(timeout) == 2 and all(is_number(t) for t in timeout):
            timeout = float(timeout[0]) + float(timeout[1])   # (connect, read): one overall bound here
        timeout = seconds_field(timeout, f"{path}.timeout", err)
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
                            secret_scopes(p, path, err))
    if kind == "prometheus":
        url = string_field(p, "url", path, err, required=True)
        query = string_field(p, "query", path, err, required=True)
        step = p.get("step")
        if step is not None and not (is_number(step) and float(step) > 0) and not isinstance(step, str):
            err.add(f"{path}.step", "must be a positive number of seconds or a duration such as '15s'")
        times = {k: string_field(p, k, path, err) for k in ("when", "start", "end")}
        if times["start"] is None and times["end"] is not None:
            err.add(f"{path}.start", "required when end is given (a range query)")
        timeout = seconds_field(p.get("timeout"), f"{path}.timeout", err)
        if url is None or query is None:
            return None
        return PrometheusProvider(url, query, times["when"], times["start"], times["end"], step, timeout)
    err.add(f"{path}.type", f"unknown provider type {kind!r}: expected python, process, http or prometheus")
    return None


def _tolerance(t: Any, path: str, err: FieldErrors, refs: Mapping[str, Any]) -> Tolerance | None:
    if isinstance(t, (bool, str)) or is_number(t):
        return Tolerance("value", t)
    if isinstance(t, list):
        if len(t) == 2 and all(is_number(x) for x in t) and t[0] > t[1]:
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
        elif not all(is_number(x) for x in r):
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
        elif not VARIABLE.search(pat):
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
        check_statistical(t, path, err)
    return Tolerance(kind, freeze(dict(t)), note)


def _pauses(v: Any, path: str, err: FieldErrors) -> Pauses:
    if v is None:
        return Pauses()
    if not isinstance(v, Mapping):
        err.add(path, "must be a mapping with before/after seconds")
        return Pauses()
    return Pauses(seconds_field(v.get("before"), f"{path}.before", err, allow_var=True),
                  seconds_field(v.get("after"), f"{path}.after", err, allow_var=True))


def _activity(a: Any, path: str, err: FieldErrors, refs: Mapping[str, Any], *, in_tolerance: bool = False
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
    name = string_field(a, "name", path, err, required=True)
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
    timeout = seconds_field(a.get("timeout"), f"{path}.timeout", err)
    pauses = _pauses(a.get("pauses"), f"{path}.pauses", err)
    if kind not in ("probe", "action") or name is None or provider is None:
        return None
    return Activity(kind, name, provider, path, tol, bg, pauses, timeout, dry, freeze(dict(a)))


def _activities(items: Any, path: str, err: FieldErrors, refs: dict[str, Any], *, probes_only: bool = False
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


def parse_experiment(doc: Any, *, source: str | None = None) -> Experiment:
    """Validate a decoded experiment document; raises :class:`ExperimentInvalid` listing every problem."""
    err = FieldErrors()
    if not isinstance(doc, Mapping):
        raise ExperimentInvalid([("", "an experiment must be a mapping (JSON object / YAML mapping)")], source)
    title = string_field(doc, "title", "", err, required=True)
    desc = string_field(doc, "description", "", err, default="")
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
            htitle = string_field(h, "title", "steady-state-hypothesis", err, required=True)
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
            guard = guard_spec(e, f"extensions[{i}]", err)
            if "verdict" in e:
                verdict = verdict_spec(e["verdict"], f"extensions[{i}].verdict", err)
    for p, problem in record_errors(exts)[1]:
        err.add(p, problem)
    if err.items:
        raise ExperimentInvalid(err.items, source)
    notes = tuple(a.tolerance.note for a in (hyp.probes if hyp else ()) if a.tolerance and a.tolerance.note)
    return Experiment(title=title or "", description=desc or "", version=None if version is None else str(version),
                      tags=tuple(tags), configuration=freeze(conf), secrets=freeze(secrets), hypothesis=hyp,
                      method=method, rollbacks=rollbacks, dry=dry, runtime=freeze(runtime),
                      extensions=tuple(freeze(e) for e in exts), guard=guard, verdict=verdict, notes=notes, document=freeze(doc))
