"""A small HTTP load generator: a live sample source for the halt guard and a request recorder for the run.

It sends GET requests to one URL at a fixed rate (open loop: ``workers`` threads, each with its own
keep-alive connection, take the next slot of one schedule, so slow answers do not lower the rate until every
worker is busy; then missed slots are skipped, not bunched), records CLOCK_MONOTONIC send time, latency,
success and status, and
exposes them twice: ``read_new()`` (what arrived since the last call: the halt guard's feed) and the
``chaosinject.record.Recorder`` protocol (``source = "request"``; ``write`` puts them in the run directory).
A request counts as failed on a connection error, a timeout (latency = the time waited; the timeout bounds the
whole request: ``chaosinject.httpclient.KeepAlive``) or a status >= 500.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from ..httpclient import KeepAlive

__all__ = ["HttpLoad", "Batch"]


class Batch(dict):
    """``{"t_ns", "latency_ns", "ok", "status"}`` numpy arrays."""


def _connect_in(netns: str):
    """``KeepAlive``'s ``connect``: a TCP socket made in ``netns``, connected to the target."""
    def connect(host: str, port: int, timeout_s: float) -> socket.socket:
        from ..kernel.netns import socket_in

        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket_in(netns, info[0], socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(info[4])
        except BaseException:
            sock.close()
            raise
        return sock
    return connect


class HttpLoad:
    source = "request"

    def __init__(self, url: str, rate_per_s: float = 50.0, *, timeout_s: float = 1.0, netns: str | None = None,
                 flow: str | None = None, workers: int = 8):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"load URL must be http://HOST[:PORT]/PATH, got {url!r}")
        if not 0 < rate_per_s <= 2000:
            raise ValueError(f"rate must be in (0, 2000] requests per second, got {rate_per_s}")
        self.url = url
        self.host, self.port = u.hostname, u.port or 80
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.rate = float(rate_per_s)
        self.timeout_s = float(timeout_s)
        self.netns = netns
        self.flow = flow or f"load->{self.host}:{self.port}"
        self._rows: list[tuple[int, int, bool, int]] = []
        self._read = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.workers = max(1, int(workers))
        self._next_ns = 0

    # -- Recorder protocol -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._next_ns = time.monotonic_ns()
        for i in range(self.workers):
            th = threading.Thread(target=self._loop, name=f"chaos-inject-load-{i}", daemon=True)
            th.start()
            self._threads.append(th)

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(self.timeout_s + 2)

    def write(self, run_dir: Path, phases) -> dict:
        from ..record.store import write_samples

        b = self.all()
        n = write_samples(run_dir, "request-load", phases, t_ns=b["t_ns"], flow=self.flow, source="request",
                          latency_ns=b["latency_ns"], ok=b["ok"], status=b["status"])
        return {"samples": n, "lost": 0, "requests": int(b["t_ns"].size),
                "errors": int(b["ok"].size - np.count_nonzero(b["ok"]))}

    # -- live feed ---------------------------------------------------------------------------------------
    def read_new(self) -> Batch:
        with self._lock:
            rows = self._rows[self._read:]
            self._read = len(self._rows)
        return self._batch(rows)

    def all(self) -> Batch:
        with self._lock:
            rows = list(self._rows)
        return self._batch(rows)

    @staticmethod
    def _batch(rows) -> Batch:
        if not rows:
            return Batch(t_ns=np.zeros(0, np.int64), latency_ns=np.zeros(0, np.int64), ok=np.zeros(0, bool),
                         status=np.zeros(0, np.int16))
        t, lat, ok, st = zip(*rows)
        return Batch(t_ns=np.asarray(t, np.int64), latency_ns=np.asarray(lat, np.int64),
                     ok=np.asarray(ok, bool), status=np.asarray(st, np.int16))

    def _slot(self) -> int:
        """The next send time of the shared schedule; slots already missed are skipped."""
        period = int(1e9 / self.rate)
        with self._lock:
            now = time.monotonic_ns()
            if self._next_ns < now - period:
                self._next_ns = now
            t = self._next_ns
            self._next_ns += period
        return t

    def client(self) -> KeepAlive:
        """A worker's kept-alive connection to the URL (made in the load's namespace when it has one)."""
        return KeepAlive(self.url, self.timeout_s, connect=_connect_in(self.netns) if self.netns else None)

    def _loop(self) -> None:
        client = self.client()
        while not self._stop.is_set():
            wait_ns = self._slot() - time.monotonic_ns()
            if wait_ns > 0 and self._stop.wait(wait_ns / 1e9):
                break
            t0 = time.monotonic_ns()
            reply = client.get()
            lat = time.monotonic_ns() - t0
            ok = reply.status is not None and reply.status < 500
            with self._lock:
                self._rows.append((t0, lat, ok, reply.status or 0))
        client.close()
