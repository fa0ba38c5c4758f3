"""The lab's api, load generator and request log on loopback (no root, no PostgreSQL server needed)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from scipy import stats

from chaosinject.httpclient import get as http_get
from chaosinject.lab.api import _Server
from chaosinject.lab.load_generator import RECORD, LoadGenerator
from chaosinject.lab.requests import RequestLogRecorder, read_log
from chaosinject.record import Phases


@pytest.fixture
def serving():
    """Serve an HTTP server on a thread for one test; returns its URL. Every server is shut down afterwards."""
    servers = []

    def serve(server) -> str:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_db():
    """A TCP listener that accepts and never answers: a database behind a black hole."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield srv.getsockname()[1]
    srv.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def api_server(serving):
    pytest.importorskip("psycopg", reason="python3-psycopg (Debian) is the api's driver: `sudo make setup`")
    from chaosinject.lab.api import serve

    def start(db_port: int, timeout_s: float):
        cfg = {"listen": "127.0.0.1", "port": 0, "db_timeout_s": timeout_s, "pool_size": 2, "items_limit": 5,
               "db": {"host": "127.0.0.1", "port": db_port, "dbname": "lab", "user": "lab", "password": "x"}}
        return serving(serve(cfg))

    return start


def _metrics(url: str) -> dict[str, float]:
    out = {}
    for line in http_get(f"{url}/metrics").body.decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_items_503_within_the_deadline_when_the_db_never_answers(api_server, silent_db):
    url = api_server(silent_db, 0.3)
    items = http_get(f"{url}/items")
    assert items.status == 503 and 0.28 < items.elapsed_s < 1.0, items
    assert json.loads(items.body)["error"] == "database unavailable"
    assert http_get(f"{url}/health").status == 200  # liveness does not touch the database
    m = _metrics(url)
    assert m['http_requests_total{handler="/items",status="503"}'] == 1
    assert m['http_requests_total{handler="/items",status="500"}'] == 0  # present at 0: the seed query has data
    assert m['http_requests_total{handler="/health",status="200"}'] == 1
    assert m['http_request_duration_seconds_bucket{handler="/items",le="0.25"}'] == 0
    assert m['http_request_duration_seconds_bucket{handler="/items",le="0.5"}'] == 1
    assert m['http_request_duration_seconds_bucket{handler="/items",le="+Inf"}'] == 1
    assert 0.28 < m['http_request_duration_seconds_sum{handler="/items"}'] < 1.0


def test_items_503_at_once_when_the_db_refuses(api_server):
    url = api_server(_closed_port(), 1.0)
    items = http_get(f"{url}/items")
    assert items.status == 503 and items.elapsed_s < 0.5, items
    assert http_get(f"{url}/nothing").status == 404
    assert 'handler="other",status="404"' in http_get(f"{url}/metrics").body.decode()


class _Echo(BaseHTTPRequestHandler):
    delay_s = 0.0
    seen: list[str]  # the paths requested, in arrival order (one list per server)

    def do_GET(self):  # noqa: N802
        self.seen.append(self.path)
        time.sleep(self.delay_s)
        code = 200 if self.path == "/items" else 503
        try:
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out first: what the test is about

    def log_message(self, *a):
        pass


@pytest.fixture
def http_target(serving):
    def start(delay_s: float = 0.0) -> tuple[str, list[str]]:
        """(URL of a new target, the paths it is requested)."""
        seen: list[str] = []
        # the api's server class: a listen backlog for 50 requests/s (the default of 5 drops SYNs)
        return serving(_Server(("127.0.0.1", 0), type("H", (_Echo,), {"delay_s": delay_s, "seen": seen}))), seen

    return start


STALL_S = 0.05  # a thread of this process woken this late: the machine, not the generator, set the timing


@dataclass
class LoadRun:
    rows: object          # RequestRows of the log
    seen: list[str]       # what the target received
    ran_s: float          # the most the generator can have run (thread start to stop: the sleep may overshoot)
    stop_ns: int          # CLOCK_MONOTONIC of the stop
    stall_s: float        # the longest a probe thread of this process was woken late meanwhile


def _run_load(http_target, log_dir, rate_per_s: float, timeout_s: float, delay_s: float = 0.0) -> LoadRun:
    """One second of load against a new target. Timing claims hold only while the machine lets this process
    run: a run during which a probe thread was woken > STALL_S late (measured: a loaded 2-core CI host stalled
    the generator's own thread ~0.8 s) is repeated once, as the userspace delay tests repeat a stalled run."""
    for attempt in range(2):
        url, seen = http_target(delay_s=delay_s)
        log = log_dir / f"requests-{attempt}.bin"
        gen = LoadGenerator(f"{url}/items", log, rate_per_s=rate_per_s, timeout_s=timeout_s)
        done, stall = threading.Event(), [0.0]

        def probe() -> None:
            while not done.is_set():
                t = time.monotonic()
                time.sleep(0.005)
                stall[0] = max(stall[0], time.monotonic() - t - 0.005)
        threads = [threading.Thread(target=gen.run), threading.Thread(target=probe, daemon=True)]
        start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(1.0)
        stop_ns = time.monotonic_ns()
        gen.stop.set()
        ran_s = time.monotonic() - start
        threads[0].join(timeout=10)
        done.set()
        assert not threads[0].is_alive()
        rows, end = read_log(log)
        assert end == log.stat().st_size and end % RECORD.size == 0
        if stall[0] < STALL_S:
            break
        print(f"this process was stalled {stall[0] * 1e3:.0f} ms during the run: once more")
    return LoadRun(rows, seen, ran_s, stop_ns, stall[0])


def _assert_rate(run: LoadRun, rate_per_s: float) -> None:
    """The offered rate held: as many requests as the generator's own window (its first request to the stop)
    allows, no more than its thread's whole life allows, spread over the window, not bunched.

    Start times are the workers': a loaded machine wakes them late and unevenly (most gaps shorter, a few long;
    the pool's first threads start slowly), so the spacing is judged by a robust slope of start time against
    request number, with room for that (measured: 22 % short at load 9 on 2 cores); bunched requests give ~0."""
    rows = run.rows
    window_s = (run.stop_ns - int(rows.t_ns.min())) / 1e9
    assert 0.9 * rate_per_s * window_s - 2 <= len(rows) <= rate_per_s * run.ran_s + 2, (
        len(rows), window_s, run.ran_s, f"stalled {run.stall_s * 1e3:.0f} ms")
    slope_ms = stats.theilslopes(np.sort(rows.t_ns) / 1e6, np.arange(len(rows))).slope
    assert abs(slope_ms * rate_per_s / 1e3 - 1.0) < 0.35, (
        f"{slope_ms:.2f} ms between requests (stalled {run.stall_s * 1e3:.0f} ms)")


def test_load_generator_keeps_its_rate_and_logs_every_request(http_target, tmp_path):
    run = _run_load(http_target, tmp_path, rate_per_s=100, timeout_s=1.0)
    rows = run.rows
    assert len(rows) == len(run.seen)  # each request the target answered is logged, once
    assert (rows.status == 200).all() and rows.ok.all()
    _assert_rate(run, 100)
    # each latency is its own request's: answered, so within the 1 s whole-request deadline (+ scheduling)
    assert (rows.latency_ns > 0).all() and rows.latency_ns.max() < 1.5e9, rows.latency_ns.max()


def test_load_generator_is_open_loop_and_logs_timeouts_as_status_0(http_target, tmp_path):
    """A target slower than the client's timeout: the offered rate holds and every request is a 0."""
    run = _run_load(http_target, tmp_path, rate_per_s=50, timeout_s=0.2, delay_s=0.5)
    rows = run.rows
    _assert_rate(run, 50)
    deadline = time.monotonic() + 5
    while len(run.seen) < len(rows) and time.monotonic() < deadline:  # the target may accept the last ones late
        time.sleep(0.05)
    assert len(run.seen) == len(rows)  # each request sent is logged, once, though none was answered in time
    assert (rows.status == 0).all() and not rows.ok.any()
    latency_s = rows.latency_ns / 1e9
    # the client gave up at its 0.2 s timeout, never before, and did not wait for the 0.5 s answer; what lies
    # above 0.2 s is thread scheduling (measured at load 7-9 on 2 cores: median 0.227 s, max 0.37 s)
    assert 0.19 < np.median(latency_s) < 0.25, np.median(latency_s)
    assert (latency_s > 0.19).all() and (latency_s < 0.5).all(), latency_s


def _write_log(path, rows) -> None:
    with open(path, "ab") as f:
        for t, lat, status in rows:
            f.write(RECORD.pack(t, lat, status, 0))


def test_recorder_reads_between_start_and_stop_and_live(tmp_path):
    log = tmp_path / "requests.bin"
    _write_log(log, [(1, 5, 200)] * 3)  # before start(): not this run's
    rec = RequestLogRecorder(log, flow="load->api")
    rec.start()
    assert len(rec.read_new()) == 0
    now = time.monotonic_ns()
    _write_log(log, [(now + i, 1000 * (i + 1), 200 if i % 2 else 503) for i in range(4)])
    with open(log, "ab") as f:
        f.write(RECORD.pack(now, 1, 200, 0)[:10])  # a record being written: not read yet
    live = rec.read_new()
    assert list(live.status) == [503, 200, 503, 200] and list(live.ok) == [False, True, False, True]
    assert live.t_ns.dtype == np.int64 and len(rec.read_new()) == 0
    with open(log, "ab") as f:
        f.write(RECORD.pack(now + 10, 7, 0, 0)[10:])  # ...now it is whole
    assert list(rec.read_new().status) == [0]
    rec.stop()
    _write_log(log, [(now + 20, 1, 200)])  # after stop(): not this run's
    assert len(rec.rows()) == 5 and len(rec.read_new()) == 0


def test_recorder_write_is_what_analysis_load_run_reads(tmp_path):
    pytest.importorskip("pandas")
    from chaosinject.analysis import load_run

    log = tmp_path / "requests.bin"
    rec = RequestLogRecorder(log)
    rec.start()
    phases = Phases()
    t0 = phases.mark("baseline", 1_000)
    phases.mark("fault", t0 + 100)
    phases.mark("recovery", t0 + 200)
    phases.close(t0 + 300)
    _write_log(log, [(t0 + 10, 2_000_000, 200), (t0 + 150, 1_000_000_000, 503), (t0 + 160, 3_000_000_000, 0),
                     (t0 + 250, 2_000_000, 200), (t0 + 400, 1, 200)])  # the last is outside every phase
    rec.stop()
    run = tmp_path / "run"
    summary = rec.write(run, phases)
    assert summary == {"samples": 4, "lost": 0, "logged": 5, "errors": 2, "log": str(log)}
    (run / "meta.json").write_text(json.dumps({
        "run_id": "r", "created": "2026-11-27T00:00:00+00:00", "flow": "api->db", "fault": {}, "engine": "fake",
        "kernel": os.uname().release, "seed": None, "phases": phases.windows()}))
    (run / "counters.json").write_text("{}")
    df = load_run(run).samples.sort_values("t_ns")
    assert list(df["phase"].astype(str)) == ["baseline", "fault", "fault", "recovery"]
    assert list(df["status"]) == [200, 503, 0, 200] and list(df["ok"]) == [True, False, False, True]
    assert set(df["source"].astype(str)) == {"request"} and set(df["flow"]) == {"load->api"}


def test_recorder_refuses_use_before_start(tmp_path):
    rec = RequestLogRecorder(tmp_path / "none.bin")
    with pytest.raises(RuntimeError, match="before start"):
        rec.read_new()
    with pytest.raises(RuntimeError, match="before start"):
        rec.stop()
    rec.start()
    assert len(rec.read_new()) == 0  # a log that does not exist yet reads as empty


def test_recorder_satisfies_the_recorder_protocol():
    from chaosinject.record.store import Recorder

    assert isinstance(RequestLogRecorder("/nonexistent"), Recorder)


def test_a_bug_is_a_500_and_counted_as_one(capsys, serving):
    """The 500 path exists (so the seed experiment can catch a real bug): an SQL error is not an outage."""
    pytest.importorskip("psycopg", reason="python3-psycopg (Debian) is the api's driver: `sudo make setup`")
    from chaosinject.lab.api import Metrics, QueryFailed, make_handler

    class BrokenDb:
        def query(self, sql, params):
            raise QueryFailed('relation "items" does not exist')

    url = serving(_Server(("127.0.0.1", 0), make_handler(BrokenDb(), Metrics(), 5)))
    assert http_get(f"{url}/items").status == 500
    assert _metrics(url)['http_requests_total{handler="/items",status="500"}'] == 1
    assert "QueryFailed" in capsys.readouterr().err  # the traceback is logged


def test_api_sheds_load_beyond_its_concurrency_and_queue_with_a_fast_503(serving, silent_db):
    """2 requests may work on the (silent) database, 1 more may wait 0.3 s for a slot: of 5 at once, 2 get the
    database's 503 after its 3 s deadline, 3 the overload 503 well before (none waits for the database)."""
    pytest.importorskip("psycopg", reason="python3-psycopg (Debian) is the api's driver: `sudo make setup`")
    from chaosinject.lab.api import serve

    cfg = {"listen": "127.0.0.1", "port": 0, "db_timeout_s": 3.0, "pool_size": 2, "items_limit": 5,
           "max_in_flight": 2, "max_queue": 1, "queue_wait_s": 0.3,
           "db": {"host": "127.0.0.1", "port": silent_db, "dbname": "lab", "user": "lab", "password": "x"}}
    url = serving(serve(cfg))
    replies: list = [None] * 5
    threads = [threading.Thread(target=lambda i=i: replies.__setitem__(i, http_get(f"{url}/items", 10)))
               for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    errors = sorted(json.loads(r.body)["error"] for r in replies)
    assert [r.status for r in replies] == [503] * 5
    assert errors == ["database unavailable"] * 2 + ["overloaded"] * 3, replies
    assert all(r.elapsed_s < 2.5 for r in replies if b"overloaded" in r.body), replies   # shed, not queued
    assert all(r.elapsed_s >= 2.9 for r in replies if b"unavailable" in r.body), replies
    assert _metrics(url)['http_requests_total{handler="/items",status="503"}'] == 5


def test_api_answers_503_without_a_thread_past_max_connections(serving):
    pytest.importorskip("psycopg", reason="python3-psycopg (Debian) is the api's driver: `sudo make setup`")
    from chaosinject.lab.api import serve

    cfg = {"listen": "127.0.0.1", "port": 0, "max_connections": 1,
           "db": {"host": "127.0.0.1", "port": _closed_port(), "dbname": "lab", "user": "lab", "password": "x"}}
    url = serving(serve(cfg))
    port = int(url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port))   # holds the one connection slot (no request sent)
    try:
        deadline = time.monotonic() + 10
        reply = http_get(f"{url}/health", 5)
        while reply.status != 503 and time.monotonic() < deadline:   # until the idle one was accepted first
            reply = http_get(f"{url}/health", 5)
        assert reply.status == 503 and json.loads(reply.body) == {"error": "overloaded"}, reply
    finally:
        idle.close()
    deadline = time.monotonic() + 10
    while (reply := http_get(f"{url}/metrics", 5)).status != 200 and time.monotonic() < deadline:
        time.sleep(0.05)   # the slot is free once the idle connection's thread saw it close
    assert 'http_requests_total{handler="overload",status="503"}' in reply.body.decode()
