"""Running providers (python, process, http, prometheus) the way chaoslib does, and checking tolerances.

Differences from chaoslib, on purpose: ``expected_status`` on http providers (other statuses fail the
activity); a ``statistical`` tolerance judged with the analysis package; a range tolerance over a list (a
range query) needs every value inside; a numeric ``target`` in a range tolerance is read as a nominal value
(chaoslib crashes on it); the jsonpath tolerance needs no extra package.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from .. import httpclient
from .loader import CHAOSPROMETHEUS_MODULE, substitute
from .model import (Activity, HttpProvider, ProcessProvider, PrometheusProvider, PythonProvider, Tolerance, thaw)

__all__ = ["ActivityFailed", "RunContext", "run_provider", "within_tolerance"]

log = logging.getLogger("chaos_inject.experiment")


class ActivityFailed(Exception):
    """The provider could not do its job (chaoslib's ActivityFailed): the activity's status is failed."""


@dataclass
class RunContext:
    configuration: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)   # statistical tolerance: before-hypothesis outputs
    phase: str = "before"                                      # before | during | after
    tc: Any = None                 # tcnetem.TcSettings: tc netem process actions become our faults (None: literal)
    note: Any = None               # callable(str): a note for the console, journal and report


def _scoped_secrets(ctx: RunContext, scopes: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in scopes:
        out.update(ctx.secrets.get(s, {}))
    return out


def _run_python(p: PythonProvider, ctx: RunContext, extra: Mapping[str, Any] | None = None) -> Any:
    args = substitute(thaw(p.arguments), ctx.configuration, ctx.secrets)
    if extra:
        args.update(extra)
    if p.module == CHAOSPROMETHEUS_MODULE:
        from . import prometheus

        func = getattr(prometheus, p.func)
    else:
        func = getattr(importlib.import_module(p.module), p.func)
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}
    if "configuration" in params:
        args["configuration"] = dict(ctx.configuration)
    if "secrets" in params and (p.secrets or p.module == CHAOSPROMETHEUS_MODULE):
        args["secrets"] = _scoped_secrets(ctx, p.secrets)
    try:
        return func(**args)
    except Exception as exc:  # noqa: BLE001 - chaoslib: any exception fails the activity
        raise ActivityFailed(f"{type(exc).__name__}: {exc}") from exc


def _run_process(p: ProcessProvider, ctx: RunContext, timeout_s: float | None) -> dict[str, Any]:
    exe = substitute(p.path, ctx.configuration, ctx.secrets)
    args = substitute(p.arguments if isinstance(p.arguments, str) else list(p.arguments), ctx.configuration,
                      ctx.secrets)
    if ctx.tc is not None and not ctx.tc.literal:
        translated = _run_tc(str(exe), args, ctx)
        if translated is not None:
            return translated
    if isinstance(args, str):   # chaoslib: a string goes through the shell as "<path> <arguments>"
        cmd: Any = f"{exe} {args}".strip()
        shell = True
    else:
        cmd, shell = [str(exe), *map(str, args)], False
    try:
        proc = subprocess.run(cmd, shell=shell, capture_output=True, timeout=p.timeout_s or timeout_s)
    except subprocess.TimeoutExpired:
        raise ActivityFailed(f"process took longer than {p.timeout_s or timeout_s}s") from None
    except OSError as exc:
        raise ActivityFailed(f"cannot run {exe}: {exc.strerror}") from None
    out = {"status": proc.returncode, "stdout": proc.stdout.decode(errors="replace"),
           "stderr": proc.stderr.decode(errors="replace")}
    if proc.returncode != 0:
        # chaoslib marks the activity succeeded and warns; a tolerance may still judge the status
        log.warning("process %s exited with %d: %s", exe, proc.returncode, out["stderr"].strip()[:200])
    return out


def _run_tc(exe: str, args: Any, ctx: RunContext) -> dict[str, Any] | None:
    """A tc netem command as an owned chaos-inject fault (tcnetem); None: not one, run it literally."""
    from ..errors import ChaosInjectError
    from . import tcnetem

    try:
        cmd = tcnetem.parse_tc(exe, args)
        if cmd is None:
            return None
        out = tcnetem.run_translated(cmd, ctx.tc)
    except ChaosInjectError as exc:
        raise ActivityFailed(f"tc netem translation: {exc}") from None
    if ctx.note is not None:
        ctx.note(out["stdout"])
        for n in out["chaos-inject"].get("notes", []):
            ctx.note(n)
    return out


def _run_http(p: HttpProvider, ctx: RunContext, timeout_s: float | None, has_tolerance: bool) -> dict[str, Any]:
    url = substitute(p.url, ctx.configuration, ctx.secrets)
    headers = {k: str(v) for k, v in substitute(thaw(p.headers), ctx.configuration, ctx.secrets).items()}
    args = substitute(thaw(p.arguments), ctx.configuration, ctx.secrets) if p.arguments is not None else None
    data = None
    if args is not None:
        if p.method == "GET":
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(args, doseq=True)
        elif headers.get("Content-Type") == "application/json":
            data = json.dumps(args).encode()
        elif isinstance(args, Mapping):
            data = urllib.parse.urlencode(args, doseq=True).encode()
        else:
            data = str(args).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=p.method)
    ctx_tls = None
    if url.startswith("https://") and not p.verify_tls:
        import ssl

        ctx_tls = ssl._create_unverified_context()  # noqa: S323 - asked for by verify_tls: false
    try:
        resp = urllib.request.urlopen(req, timeout=p.timeout_s or timeout_s or 30.0, context=ctx_tls)
    except urllib.error.HTTPError as exc:   # a 4xx/5xx answer is an output, not a failure (chaoslib)
        resp = exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if "timed out" in str(reason):
            raise ActivityFailed("activity took too long to complete") from None
        raise ActivityFailed(f"failed to connect to {url}: {reason}") from None
    with resp:
        try:
            raw = resp.read()
        except (TimeoutError, OSError):
            raise ActivityFailed("activity took too long to complete") from None
        status = resp.status if hasattr(resp, "status") else resp.code
        hdrs = dict(resp.headers.items())
    body: Any = raw.decode(errors="replace")
    if hdrs.get("Content-Type", "").split(";")[0].strip() == "application/json":
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            pass
    if p.expected_status and status not in p.expected_status:
        raise ActivityFailed(f"HTTP {status} from {url}, expected {', '.join(map(str, p.expected_status))}")
    if not has_tolerance and status > 399:
        log.warning("HTTP %d from %s", status, url)
    return {"status": status, "headers": hdrs, "body": body}


def _run_prometheus(p: PrometheusProvider, ctx: RunContext, timeout_s: float | None) -> Any:
    url = substitute(p.url, ctx.configuration, ctx.secrets)
    q = substitute(p.query, ctx.configuration, ctx.secrets)
    try:
        if p.start is not None:
            payload = httpclient.range_query(url, q, p.start, p.end, p.step, p.timeout_s or timeout_s)
        else:
            payload = httpclient.instant_query(url, q, p.when, p.timeout_s or timeout_s)
        return httpclient.query_value(payload)
    except httpclient.PrometheusError as exc:
        raise ActivityFailed(str(exc)) from None


def run_provider(act: Activity, ctx: RunContext, *, extra_args: Mapping[str, Any] | None = None) -> Any:
    p = act.provider
    if isinstance(p, PythonProvider):
        return _run_python(p, ctx, extra_args)
    if isinstance(p, ProcessProvider):
        return _run_process(p, ctx, act.timeout_s)
    if isinstance(p, HttpProvider):
        return _run_http(p, ctx, act.timeout_s, act.tolerance is not None)
    if isinstance(p, PrometheusProvider):
        return _run_prometheus(p, ctx, act.timeout_s)
    raise ActivityFailed(f"unknown provider {p!r}")


# -- tolerances ------------------------------------------------------------------------------------------
def _as_decimal(v: Any) -> Decimal | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        d = Decimal(str(v)) if not isinstance(v, Decimal) else v
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _in_range(value: Any, low: Any, high: Any) -> tuple[bool, str]:
    if value is None:
        return False, "no value (empty query result?)"
    if isinstance(value, Mapping):
        bad = {k: v for k, v in value.items() if not _in_range(v, low, high)[0]}
        return (not bad and bool(value)), (f"outside [{low}, {high}]: {bad}" if bad else f"all in [{low}, {high}]")
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not _in_range(v, low, high)[0]]
        return (not bad and bool(value)), (f"{len(bad)} of {len(value)} values outside [{low}, {high}]" if bad
                                           else f"{len(value)} values in [{low}, {high}]")
    d = _as_decimal(value)
    if d is None:
        return False, f"{value!r} is not a finite number"
    ok = Decimal(str(low)) <= d <= Decimal(str(high))
    return ok, f"{value} {'in' if ok else 'outside'} [{low}, {high}]"


def _target(value: Any, tol: Mapping) -> Any:
    t = tol.get("target")
    if isinstance(t, str) and isinstance(value, Mapping):
        return value.get(t, value)
    return value


def within_tolerance(act: Activity, value: Any, ctx: RunContext) -> tuple[bool, str]:
    """Whether ``value`` (the probe's output) meets the activity's tolerance, and why."""
    tol: Tolerance = act.tolerance
    raw = tol.raw
    if tol.kind == "value":
        t = substitute(raw, ctx.configuration, ctx.secrets) if isinstance(raw, str) else thaw(raw)
        if isinstance(t, bool) or isinstance(t, str):
            return value == t, f"{value!r} {'==' if value == t else '!='} {t!r}"
        if isinstance(t, (int, float)):
            v = value["status"] if isinstance(value, Mapping) and "status" in value else value
            return v == t, f"{v!r} {'==' if v == t else '!='} {t!r}"
        if isinstance(t, list):
            if isinstance(value, Mapping) and "status" in value:
                ok = value["status"] in t
                return ok, f"status {value['status']} {'in' if ok else 'not in'} {t}"
            if len(t) == 2 and all(isinstance(x, (int, float)) for x in t):
                return _in_range(value, t[0], t[1])
            return value in t, f"{value!r} {'in' if value in t else 'not in'} {t}"
    r = thaw(raw)
    if tol.kind == "range":
        return _in_range(_target(value, r), r["range"][0], r["range"][1])
    if tol.kind == "regex":
        pattern = substitute(r["pattern"], ctx.configuration, ctx.secrets)
        v = _target(value, r)
        if not isinstance(v, str):
            v = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        ok = re.search(pattern, v) is not None
        return ok, f"/{pattern}/ {'found' if ok else 'not found'}"
    if tol.kind == "jsonpath":
        from .jsonpath import jsonpath_values

        v = _target(value, r)
        if isinstance(v, (bytes, str)):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        values = jsonpath_values(substitute(r["path"], ctx.configuration, ctx.secrets), v)
        ok = len(values) > 0
        if r.get("count") is not None:
            ok = len(values) == r["count"]
        if "expect" in r:
            expect = substitute(r["expect"], ctx.configuration, ctx.secrets)
            ok = values == (expect if isinstance(expect, list) else [expect])
        return ok, f"{r['path']} -> {values!r}"
    if tol.kind == "probe":
        try:
            out = run_provider(tol.probe, ctx, extra_args={"value": value})
        except ActivityFailed as exc:
            return False, f"tolerance probe failed: {exc}"
        return bool(out), f"tolerance probe returned {out!r}"
    if tol.kind == "statistical":
        return _statistical(act, r, value, ctx)
    return False, f"unknown tolerance {tol.kind}"


def _samples(value: Any) -> tuple[Any, int, int, Any, bool]:
    """latencies, errors, requests, per-request failure flags and whether the arrays are in time order (a probe
    output may say ``"ordered": False`` when it pooled samples from several sources: the verdict then
    treats them as independent and says so, instead of estimating dependence from a meaningless order)."""
    import numpy as np

    if not isinstance(value, Mapping) or "latency_ns" not in value:
        raise ValueError("a statistical tolerance needs a probe output with latency_ns (and ok) arrays")
    lat = np.asarray(value["latency_ns"], dtype=np.float64)
    ok = np.asarray(value.get("ok", np.ones(lat.shape, bool)), dtype=bool).ravel()
    ordered = bool(value.get("ordered", True))
    return lat, int(ok.size - np.count_nonzero(ok)), int(ok.size), (~ok if ordered else None), ordered


def _statistical(act: Activity, t: dict, value: Any, ctx: RunContext) -> tuple[bool, str]:
    from chaosinject.analysis import Outcome, PhaseData, SteadyStateSpec, evaluate

    from ..spec.units import parse_duration_ns

    try:
        lat, errors, requests, flags, ordered = _samples(value)
    except ValueError as exc:
        return False, str(exc)
    asked = {k for k in ("latency_max", "latency_max_ratio", "max_error_rate") if k in t}
    spec = SteadyStateSpec(
        quantile=float(t.get("quantile", 0.99)),
        latency_max_ns=float(parse_duration_ns(str(t["latency_max"]))) if t.get("latency_max") else None,
        max_error_rate=t.get("max_error_rate", None if asked else 0.05),
        latency_max_ratio=t.get("latency_max_ratio", None if asked else 2.0),
        error_rate_vs_baseline=bool(t.get("error_rate_vs_baseline", False)),
        confidence=float(t.get("confidence", 0.95)), alpha=float(t.get("alpha", 0.05)))
    current = PhaseData(lat, errors, requests, ordered=ordered, error_flags=flags)
    phases = {"baseline": current}
    name = "baseline"
    if ctx.phase != "before" and act.name in ctx.baselines:
        phases = {"baseline": ctx.baselines[act.name], ctx.phase: current}
        name = ctx.phase
    if ctx.phase == "before":
        ctx.baselines[act.name] = current
    verdict = evaluate(phases, spec)
    checks = [c for c in verdict.checks if c.phase == name]
    outs = {c.outcome for c in checks}
    why = "; ".join(f"{c.metric} {c.kind} {c.outcome.value}: {c.reason}" for c in checks) or "no check applies"
    if Outcome.VIOLATED in outs:
        return False, why
    if Outcome.INCONCLUSIVE in outs or not checks:
        return t.get("inconclusive", "fail") == "pass", why
    return True, why

