"""The lab's api service: ``python3 -m chaosinject.lab.api --config api.json``.

- ``GET /items``: a query to PostgreSQL with a client-side deadline (``db_timeout_s``, default 1 s) covering
  connect + query. A deadline passed or a database that cannot be reached answers **503** (with
  ``Retry-After``); a 500 is only what a real bug in this code would give.
- ``GET /health``: liveness only, 200 while the process serves; it does **not** touch the database (so a
  database fault shows in ``/items`` and the error rate, not as a dead api). Its JSON body carries the last
  ``/items`` database outcome for information.
- Load shedding, as a real service does, so that it recovers once a fault is gone instead of collapsing under
  its own backlog: at most ``max_in_flight`` ``/items`` requests work on the database at once (default: the
  pool size, so a burst never opens more connections than the pool keeps); up to ``max_queue`` more wait at most
  ``queue_wait_s`` for a slot; beyond that **503 at once** (``{"error": "overloaded"}``, ``Retry-After``). At
  most ``max_connections`` connections are served at once; one more is answered 503 by the accepting thread
  and closed (counted under ``handler="overload"``).
- ``GET /metrics``: Prometheus text format: ``http_requests_total{handler,status}`` and the histogram
  ``http_request_duration_seconds{handler}`` (requests to ``/metrics`` itself are not counted).

Runs with Debian's python3 and python3-psycopg alone (the Vagrant VMs have nothing else).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import json
import select
import signal
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DbUnavailable(Exception):
    """The database did not answer in time or could not be reached: the api answers 503."""


class QueryFailed(Exception):
    """The database answered with an SQL error: a bug in this service, not an outage (500)."""


class Db:
    """A small pool of libpq connections driven non-blocking, so one deadline bounds connect + query.

    (libpq's connect_timeout counts whole seconds with a 2 s floor and a query has no client-side timeout:
    select() on the socket is the only way to give up at exactly ``timeout_s``.)
    """

    def __init__(self, cfg: dict, timeout_s: float, pool_size: int) -> None:
        import psycopg
        from psycopg import pq

        self.pq, self.errors = pq, psycopg.Error
        self.conninfo = " ".join(f"{k}={v}" for k, v in cfg.items()).encode()
        self.timeout_s = timeout_s
        self.pool: collections.deque = collections.deque()
        self.pool_size = pool_size
        self.lock = threading.Lock()

    def _wait(self, conn, *, write: bool, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        fd = conn.socket
        r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], left)
        if not r and not w:
            raise TimeoutError

    def _connect(self, deadline: float):
        pq = self.pq
        conn = pq.PGconn.connect_start(self.conninfo)
        try:
            if conn.status == pq.ConnStatus.BAD:
                raise DbUnavailable(conn.error_message.decode(errors="replace").strip())
            poll = pq.PollingStatus.WRITING
            while poll != pq.PollingStatus.OK:
                if poll == pq.PollingStatus.FAILED:
                    raise DbUnavailable(conn.error_message.decode(errors="replace").strip())
                self._wait(conn, write=poll == pq.PollingStatus.WRITING, deadline=deadline)
                poll = conn.connect_poll()
            conn.nonblocking = 1
            return conn
        except BaseException:
            conn.finish()
            raise

    def query(self, sql: bytes, params: list[bytes]) -> list[tuple[str, ...]]:
        pq = self.pq
        deadline = time.monotonic() + self.timeout_s
        with self.lock:
            conn = self.pool.popleft() if self.pool else None
        try:
            if conn is None:
                conn = self._connect(deadline)
            conn.send_query_params(sql, params)
            while conn.flush():
                self._wait(conn, write=True, deadline=deadline)
            rows: list[tuple[str, ...]] = []
            error = None
            while True:
                while conn.is_busy():
                    self._wait(conn, write=False, deadline=deadline)
                    conn.consume_input()
                res = conn.get_result()
                if res is None:
                    break
                if res.status == pq.ExecStatus.TUPLES_OK:
                    rows += [tuple((res.get_value(i, j) or b"").decode() for j in range(res.nfields))
                             for i in range(res.ntuples)]
                else:
                    error = (res.error_message or b"").decode(errors="replace").strip()
            if error:
                if conn.status == pq.ConnStatus.BAD:
                    raise DbUnavailable(error)
                raise QueryFailed(error)  # the server answered with an error: our bug, a 500
        except TimeoutError:
            self._discard(conn)
            raise DbUnavailable(f"no answer within {self.timeout_s:g} s") from None
        except (DbUnavailable, OSError, self.errors) as exc:
            self._discard(conn)
            raise DbUnavailable(str(exc)) from None
        except BaseException:
            self._discard(conn)
            raise
        with self.lock:
            if len(self.pool) < self.pool_size:
                self.pool.append(conn)
                conn = None
        self._discard(conn)
        return rows

    @staticmethod
    def _discard(conn) -> None:
        if conn is not None:
            conn.finish()  # a connection that missed its deadline may still get an answer: never reuse it


class Admission:
    """Bounded concurrency and a bounded wait queue: ``enter()`` True when the caller may work (then it must
    ``leave()``), False at once when ``max_queue`` callers already wait, or after ``wait_s`` without a slot."""

    def __init__(self, max_in_flight: int, max_queue: int, wait_s: float) -> None:
        if max_in_flight < 1 or max_queue < 0 or wait_s < 0:
            raise ValueError("max_in_flight >= 1, max_queue >= 0, queue_wait_s >= 0")
        self.slots = threading.BoundedSemaphore(max_in_flight)
        self.max_queue, self.wait_s = max_queue, wait_s
        self.waiting = 0
        self.lock = threading.Lock()

    def enter(self) -> bool:
        if self.slots.acquire(blocking=False):
            return True
        with self.lock:
            if self.waiting >= self.max_queue:
                return False
            self.waiting += 1
        try:
            return self.slots.acquire(timeout=self.wait_s) if self.wait_s > 0 else False
        finally:
            with self.lock:
                self.waiting -= 1

    def leave(self) -> None:
        self.slots.release()


OVERLOADED = b'{"error": "overloaded"}'


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = collections.Counter()
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = collections.Counter()
        # series that exist from the start at 0: the seed's error-rate query (sum of 5xx rates / all) is then 0,
        # a number, before the first error instead of an empty result
        for status in (200, 500, 503):
            self.requests[("/items", status)] = 0

    def observe(self, handler: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(handler, status)] += 1
            counts = self.buckets.setdefault(handler, [0] * (len(BUCKETS_S) + 1))
            counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
            self.sums[handler] += seconds

    def render(self) -> str:
        with self.lock:
            out = ["# HELP http_requests_total HTTP requests answered, by handler and status code.",
                   "# TYPE http_requests_total counter"]
            for (handler, status), n in sorted(self.requests.items()):
                out.append(f'http_requests_total{{handler="{handler}",status="{status}"}} {n}')
            out += ["# HELP http_request_duration_seconds Time to answer a request.",
                    "# TYPE http_request_duration_seconds histogram"]
            for handler, counts in sorted(self.buckets.items()):
                cum = 0
                for le, n in zip((*BUCKETS_S, "+Inf"), counts):
                    cum += n
                    out.append(f'http_request_duration_seconds_bucket{{handler="{handler}",le="{le}"}} {cum}')
                out.append(f'http_request_duration_seconds_sum{{handler="{handler}"}} {self.sums[handler]:.6f}')
                out.append(f'http_request_duration_seconds_count{{handler="{handler}"}} {cum}')
        return "\n".join(out) + "\n"


def make_handler(db: Db, metrics: Metrics, items_limit: int, admission: Admission | None = None):
    last_db = {"ok": None, "error": None}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "chaos-inject-lab-api/1"

        def log_request(self, code="-", size="-"):  # 50 requests/s would flood the log; errors still go
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json", extra=()) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            start = time.monotonic()
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render().encode(), "text/plain; version=0.0.4")
                return
            try:
                status, body, extra = self._answer(path)
            except Exception:
                status, body, extra = 500, b'{"error": "internal"}', ()  # a real bug: what experiments catch
                self.log_error("internal error on %s:\n%s", path, traceback.format_exc())
            # counted when decided: a client that gave up before the answer was written does not change it
            metrics.observe(path if status != 404 else "other", status, time.monotonic() - start)
            try:
                self._send(status, body, extra=extra)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _answer(self, path: str) -> tuple[int, bytes, tuple]:
            if path == "/health":
                return 200, json.dumps({"status": "ok", "last_db": last_db}).encode(), ()
            if path != "/items":
                return 404, b'{"error": "not found"}', ()
            if admission is not None and not admission.enter():
                return 503, OVERLOADED, (("Retry-After", "1"),)   # shed: no database work for it
            try:
                return self._items()
            finally:
                if admission is not None:
                    admission.leave()

        def _items(self) -> tuple[int, bytes, tuple]:
            try:
                rows = db.query(b"SELECT id, name, price_cents FROM items ORDER BY id LIMIT $1",
                                [str(items_limit).encode()])
            except DbUnavailable as exc:
                last_db.update(ok=False, error=str(exc))
                body = json.dumps({"error": "database unavailable", "detail": str(exc)}).encode()
                return 503, body, (("Retry-After", "1"),)
            last_db.update(ok=True, error=None)
            items = [{"id": int(i), "name": n, "price_cents": int(p)} for i, n, p in rows]
            return 200, json.dumps({"items": items}).encode(), ()

    return Handler


_OVERLOAD_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                   b"Connection: close\r\nContent-Length: " + str(len(OVERLOADED)).encode() + b"\r\n\r\n" + OVERLOADED)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # listen backlog: the default 5 drops SYNs under bursts
    daemon_threads = True
    max_connections = 256
    metrics: Metrics | None = None

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.active = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request, client_address) -> None:
        if not self.active.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.active.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.active.release()

    def _refuse(self, request) -> None:
        """Over ``max_connections``: a 503 from the accepting thread, no thread, no parsing (the request, read
        as far as it has arrived, is discarded so that closing does not reset the connection before the reply)."""
        start = time.monotonic()
        try:
            request.setblocking(False)
            with contextlib.suppress(BlockingIOError, InterruptedError):
                request.recv(65536)
            request.setblocking(True)
            request.settimeout(0.2)
            request.sendall(_OVERLOAD_REPLY)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
        if self.metrics is not None:
            self.metrics.observe("overload", 503, time.monotonic() - start)


def serve(cfg: dict) -> ThreadingHTTPServer:
    pool_size = int(cfg.get("pool_size", 8))
    db = Db(cfg["db"], float(cfg.get("db_timeout_s", 1.0)), pool_size)
    admission = Admission(int(cfg.get("max_in_flight", pool_size)), int(cfg.get("max_queue", 16 * pool_size)),
                          float(cfg.get("queue_wait_s", 1.0)))
    metrics = Metrics()
    server_cls = type("_LabServer", (_Server,), {"max_connections": int(cfg.get("max_connections", 256)),
                                                 "metrics": metrics})
    return server_cls((cfg["listen"], int(cfg["port"])),
                      make_handler(db, metrics, int(cfg.get("items_limit", 20)), admission))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m chaosinject.lab.api")
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--db-timeout", type=float, help="seconds; overrides db_timeout_s of the config")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    if args.db_timeout is not None:
        cfg["db_timeout_s"] = args.db_timeout
    server = serve(cfg)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"api: serving on http://{cfg['listen']}:{cfg['port']} (db timeout {cfg.get('db_timeout_s', 1.0)} s)",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
