"""The one HTTP and Prometheus client: GETs with a deadline for the whole request, and Prometheus's HTTP API.

Used by the lab (readiness checks, the api's capacity, the load generator, which the Vagrant VMs run with
Debian's python3 alone: standard library only here) and by experiments (the ``prometheus`` provider,
chaostoolkit-prometheus's probes, the halt guard's Prometheus query).

- ``get(url, timeout_s)``: one GET on a fresh connection; ``timeout_s`` bounds the whole request (a socket
  timeout alone is per operation: a slow connect plus a slow reply could take twice as long, a CI run saw 0.4 s
  for 0.2 s). Every socket operation gets what is left of the deadline. An HTTP error status is a reply like any
  other; no answer (refused, reset, timed out) is a reply whose ``status`` is None and ``error`` says why.
- ``KeepAlive(url, timeout_s)``: GETs of one URL over one kept-alive connection (a load generator's worker, a
  latency probe), each bounded as ``get``'s; a failed request closes the connection, the next opens a new one
  (through ``connect``, e.g. a socket made in another network namespace).
- ``instant_query`` / ``range_query``: Prometheus's /api/v1/query and /api/v1/query_range, returning its JSON
  payload; ``query_value`` reads a payload's value; ``prometheus_query`` returns an instant query's result vector.
  Every failure (no answer, an error payload, a body that is not JSON) raises ``PrometheusError``.

Connections go straight to the address in the URL (no proxy from the environment: the lab's addresses and a
Prometheus next to the experiment are reached directly).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .errors import ChaosInjectError

__all__ = ["HttpReply", "KeepAlive", "get", "get_ok", "PrometheusError", "instant_query", "range_query",
           "query_value", "prometheus_query", "parse_time", "parse_step"]


@dataclass(frozen=True)
class HttpReply:
    """One GET: ``status`` is None when no HTTP answer came (refused, reset, timed out; ``error`` says which);
    ``elapsed_s`` runs to the whole body."""

    status: int | None
    elapsed_s: float
    body: bytes = b""
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _left(conn: http.client.HTTPConnection, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    if conn.sock is not None:
        conn.sock.settimeout(left)


def _split(url: str, https: bool = True) -> tuple[urllib.parse.SplitResult, str]:
    """``url`` split, and the path to ask for; ValueError unless it is http:// (or https:// when allowed)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in (("http", "https") if https else ("http",)) or not u.hostname:
        raise ValueError(f"not an http{'(s)' if https else ''}://HOST[:PORT]/PATH URL: {url!r}")
    return u, (u.path or "/") + (f"?{u.query}" if u.query else "")


def _connection(url: str, timeout_s: float, verify_tls: bool = True,
                connect: Callable[[str, int, float], socket.socket] | None = None
                ) -> tuple[http.client.HTTPConnection, str]:
    """A connection (not yet connected) for ``url`` and the path to ask for."""
    u, path = _split(url, https=connect is None)
    if u.scheme == "https":
        context = ssl.create_default_context() if verify_tls else ssl._create_unverified_context()  # noqa: S323
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout_s, context=context), path
    if connect is None:
        return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout_s), path
    return _SocketConnection(u.hostname, u.port, timeout_s, connect), path


class _SocketConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket made by ``connect(host, port, timeout_s)``."""

    def __init__(self, host: str, port: int | None, timeout_s: float, connect) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self._connect = connect

    def connect(self) -> None:
        self.sock = self._connect(self.host, self.port, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _exchange(conn: http.client.HTTPConnection, path: str, headers: dict[str, str], deadline: float
              ) -> tuple[http.client.HTTPResponse, bytes]:
    """One GET on ``conn`` (connecting it if it is not), every step within what is left of ``deadline``."""
    if conn.sock is None:
        conn.timeout = max(deadline - time.monotonic(), 1e-3)
        conn.connect()
    _left(conn, deadline)
    conn.request("GET", path, headers=headers)
    _left(conn, deadline)
    resp = conn.getresponse()
    chunks = []
    while True:
        _left(conn, deadline)
        chunk = resp.read1(65536)
        if not chunk:
            resp.read()   # at the end already: marks the response done, so the connection takes the next request
            return resp, b"".join(chunks)
        chunks.append(chunk)


def get(url: str, timeout_s: float = 5.0, *, headers: dict[str, str] | None = None,
        verify_tls: bool = True) -> HttpReply:
    """GET ``url`` within ``timeout_s`` seconds for the whole request (connect, send, headers and body)."""
    start = time.monotonic()
    conn, path = _connection(url, timeout_s, verify_tls)
    try:
        resp, body = _exchange(conn, path, {"Connection": "close", **(headers or {})}, start + timeout_s)
        return HttpReply(resp.status, time.monotonic() - start, body, headers=dict(resp.getheaders()))
    except (OSError, http.client.HTTPException) as exc:
        return HttpReply(None, time.monotonic() - start, error=str(exc) or type(exc).__name__)
    finally:
        conn.close()


class KeepAlive:
    """GETs of one ``http://`` URL over one kept-alive connection, each within ``timeout_s`` for the whole request.
    A request that fails (or an answer saying ``Connection: close``) closes the connection; the next request opens
    a new one, through ``connect(host, port, timeout_s) -> socket`` when given. Not shared between threads."""

    def __init__(self, url: str, timeout_s: float, *,
                 connect: Callable[[str, int, float], socket.socket] | None = None) -> None:
        _split(url, https=connect is None)   # the URL is checked here, not at the first request
        self.url, self.timeout_s, self._connect = url, float(timeout_s), connect
        self._conn: http.client.HTTPConnection | None = None
        self._path = ""

    def get(self) -> HttpReply:
        start = time.monotonic()
        if self._conn is None:
            self._conn, self._path = _connection(self.url, self.timeout_s, connect=self._connect)
        try:
            resp, body = _exchange(self._conn, self._path, {"Connection": "keep-alive"}, start + self.timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return HttpReply(None, time.monotonic() - start, error=str(exc) or type(exc).__name__)
        if (resp.getheader("Connection") or "").lower() == "close":
            self.close()
        return HttpReply(resp.status, time.monotonic() - start, body, headers=dict(resp.getheaders()))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def get_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True when ``url`` answers 200, False on another status; OSError (saying why) when no answer came."""
    reply = get(url, timeout_s)
    if reply.status is None:
        raise ConnectionError(f"{url}: {reply.error}")
    return reply.status == 200


# -- Prometheus's HTTP API -----------------------------------------------------------------------------------

class PrometheusError(ChaosInjectError, RuntimeError):
    """The server could not be reached, answered an error, or the result has an unexpected shape."""


_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(second|minute|hour|day)s?\s+ago\s*$")
_SHORT = re.compile(r"^\s*-?(\d+(?:\.\d+)?)(ms|s|m|h|d)\s*$")
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


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


def _api(base_url: str, api: str, params: dict[str, Any], timeout_s: float | None) -> dict:
    url = base_url.rstrip("/") + api + "?" + urllib.parse.urlencode(params)
    reply = get(url, timeout_s or 10.0)
    if reply.status is None:
        raise PrometheusError(f"cannot query {base_url}: {reply.error}")
    try:   # Prometheus answers 400/422 with an error payload too
        payload = json.loads(reply.body.decode())
    except ValueError:
        raise PrometheusError(f"{url}: HTTP {reply.status}, not a JSON answer") from None
    if not isinstance(payload, dict) or payload.get("status") != "success":
        payload = payload if isinstance(payload, dict) else {}
        raise PrometheusError(f"Prometheus error ({payload.get('errorType')}): {payload.get('error')}")
    return payload


def instant_query(base_url: str, promql: str, when: str | float | None = None, timeout_s: float | None = None
                  ) -> dict:
    params: dict[str, Any] = {"query": promql}
    if when is not None:
        params["time"] = f"{parse_time(when):.3f}"
    return _api(base_url, "/api/v1/query", params, timeout_s)


def range_query(base_url: str, promql: str, start: str | float, end: str | float | None = None,
                step: str | float | None = None, timeout_s: float | None = None) -> dict:
    now = time.time()
    s, e = parse_time(start, now), parse_time(end, now)
    if e < s:
        raise PrometheusError(f"range query ends ({e:.0f}) before it starts ({s:.0f})")
    return _api(base_url, "/api/v1/query_range",
                {"query": promql, "start": f"{s:.3f}", "end": f"{e:.3f}", "step": f"{parse_step(step):g}"},
                timeout_s)


def prometheus_query(prometheus_url: str, query: str, timeout_s: float = 3.0) -> list[dict]:
    """Run an instant PromQL query; returns the ``result`` vector (empty: no data yet)."""
    return instant_query(prometheus_url, query, timeout_s=timeout_s)["data"]["result"]


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
