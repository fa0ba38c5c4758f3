"""Prometheus HTTP API client: instant (/api/v1/query) and range (/api/v1/query_range) queries.

Two forms reach it from an experiment:
- the seed's ``{"type": "prometheus", "url", "query"}`` provider: its output is the query's *value* (a float
  for a scalar or a one-series vector; ``{labels: value}`` for several series; for a range query a list of
  floats, or ``{labels: [floats]}``), so plain and range tolerances apply to it;
- chaostoolkit-prometheus's python provider (``chaosprometheus.probes`` ``query`` / ``query_interval``, base
  URL from ``configuration.prometheus_base_url``): output is Prometheus's JSON payload as-is, as there.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

__all__ = ["PrometheusError", "instant_query", "range_query", "query_value", "parse_time", "parse_step",
           "query", "query_interval", "CHAOSPROMETHEUS_FUNCS"]

CHAOSPROMETHEUS_FUNCS = ("query", "query_interval")
DEFAULT_BASE_URL = "http://localhost:9090"
_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(second|minute|hour|day)s?\s+ago\s*$")
_SHORT = re.compile(r"^\s*-?(\d+(?:\.\d+)?)(ms|s|m|h|d)\s*$")
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


class PrometheusError(RuntimeError):
    """The server could not be reached, answered an error, or the result has an unexpected shape."""


def parse_time(text: str | float | None, now: float | None = None) -> float:
    """Unix seconds from "now", unix seconds, RFC 3339, "2 minutes ago" or "-2m"/"2m" (ago)."""
    now = time.time() if now is None else now
    if text is None or text == "now":
        return now
    if isinstance(text, (int, float)):
        return float(text)
    m = _REL.match(text) or _SHORT.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise PrometheusError(f"cannot read time {text!r}: use now, unix seconds, RFC 3339 or '2 minutes ago'"
                              ) from None


def parse_step(step: str | float | None) -> float:
    if step is None:
        return 1.0
    if isinstance(step, (int, float)):
        return float(step)
    m = _SHORT.match(step)
    if m and not step.strip().startswith("-"):
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise PrometheusError(f"cannot read step {step!r}: seconds or a duration such as '15s'")


def _get(base_url: str, api: str, params: dict[str, Any], timeout_s: float | None) -> dict:
    url = base_url.rstrip("/") + api + "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s or 10.0) as resp:
            payload = json.loads(resp.read().decode())
    except urllib.error.HTTPError as exc:   # Prometheus answers 400/422 with an error payload
        try:
            payload = json.loads(exc.read().decode())
        except (ValueError, OSError):
            raise PrometheusError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query {base_url}: {getattr(exc, 'reason', exc)}") from None
    if payload.get("status") != "success":
        raise PrometheusError(f"Prometheus error ({payload.get('errorType')}): {payload.get('error')}")
    return payload


def instant_query(base_url: str, promql: str, when: str | float | None = None, timeout_s: float | None = None
                  ) -> dict:
    params: dict[str, Any] = {"query": promql}
    if when is not None:
        params["time"] = f"{parse_time(when):.3f}"
    return _get(base_url, "/api/v1/query", params, timeout_s)


def range_query(base_url: str, promql: str, start: str | float, end: str | float | None = None,
                step: str | float | None = None, timeout_s: float | None = None) -> dict:
    now = time.time()
    s, e = parse_time(start, now), parse_time(end, now)
    if e < s:
        raise PrometheusError(f"range query ends ({e:.0f}) before it starts ({s:.0f})")
    return _get(base_url, "/api/v1/query_range",
                {"query": promql, "start": f"{s:.3f}", "end": f"{e:.3f}", "step": f"{parse_step(step):g}"},
                timeout_s)


def _num(v: str) -> float:
    return float(v)   # Prometheus sends "NaN", "+Inf": float() reads both


def _label(metric: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def query_value(payload: dict) -> Any:
    """The value of a query result: float, list of floats (range), or a {labels: ...} mapping for several
    series; ``None`` when the result is empty (no series)."""
    data = payload.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        return _num(result[1]) if kind == "scalar" else result[1]
    if kind == "vector":
        if not result:
            return None
        if len(result) == 1:
            return _num(result[0]["value"][1])
        return {_label(r["metric"]): _num(r["value"][1]) for r in result}
    if kind == "matrix":
        if not result:
            return None
        series = {_label(r["metric"]): [_num(v) for _, v in r["values"]] for r in result}
        return next(iter(series.values())) if len(series) == 1 else series
    raise PrometheusError(f"unexpected Prometheus result type {kind!r}")


# -- chaostoolkit-prometheus's probes, same names and arguments ------------------------------------------
def _base(configuration: dict | None) -> str:
    return (configuration or {}).get("prometheus_base_url", DEFAULT_BASE_URL)


def query(query: str, when: str | None = None, timeout: float | None = None,
          configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Instant query; returns Prometheus's JSON payload as-is (chaosprometheus.probes.query)."""
    return instant_query(_base(configuration), query, when, timeout)


def query_interval(query: str, start: str, end: str | None = None, step: int | float | str = 1,
                   timeout: float | None = None, configuration: dict | None = None,
                   secrets: dict | None = None) -> dict:
    """Range query; returns Prometheus's JSON payload as-is (chaosprometheus.probes.query_interval)."""
    return range_query(_base(configuration), query, start, end, step, timeout)
