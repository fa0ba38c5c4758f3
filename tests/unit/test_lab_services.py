"""The lab's api, load generator and request log on loopback (no root, no PostgreSQL server needed)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from injector.lab.api import _Server
from injector.lab.loadgen import RECORD, LoadGenerator
from injector.lab.netlab import http_get
from injector.lab.requests import RequestLogRecorder, read_log
from injector.record import Phases


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
    from injector.lab.api import serve

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

    def do_GET(self):  # noqa: N802
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
    def start(delay_s: float = 0.0) -> str:
        # the api's server class: a listen backlog for 50 requests/s (the default of 5 drops SYNs)
        return serving(_Server(("127.0.0.1", 0), type("H", (_Echo,), {"delay_s": delay_s})))

    return start


def _run_load(gen: LoadGenerator, seconds: float) -> None:
    t = threading.Thread(target=gen.run)
    t.start()
    time.sleep(seconds)
    gen.stop.set()
    t.join(timeout=10)
    assert not t.is_alive()


def test_load_generator_keeps_its_rate_and_logs_every_request(http_target, tmp_path):
    log = tmp_path / "requests.bin"
    gen = LoadGenerator(f"{http_target()}/items", log, rate_per_s=100, timeout_s=1.0)
    _run_load(gen, 1.0)
    rows, end = read_log(log)
    assert end == log.stat().st_size and end % RECORD.size == 0
    assert 90 <= len(rows) <= 110, len(rows)
    assert (rows.status == 200).all() and rows.ok.all()
    gaps = np.diff(np.sort(rows.t_ns)) / 1e6
    assert abs(np.median(gaps) - 10.0) < 1.0  # ms between request starts
    assert (rows.latency_ns > 0).all() and np.median(rows.latency_ns) < 50e6


def test_load_generator_is_open_loop_and_logs_timeouts_as_status_0(http_target, tmp_path):
    """A target slower than the client's timeout: the offered rate holds and every request is a 0."""
    log = tmp_path / "requests.bin"
    gen = LoadGenerator(f"{http_target(delay_s=0.5)}/items", log, rate_per_s=50, timeout_s=0.2)
    _run_load(gen, 1.0)
    rows, _ = read_log(log)
    assert 40 <= len(rows) <= 60, len(rows)
    assert (rows.status == 0).all() and not rows.ok.any()
    latency_s = rows.latency_ns / 1e9
    # the timeout bounds the whole request; the slack above it is thread scheduling on a busy machine
    assert abs(np.median(latency_s) - 0.2) < 0.02, np.median(latency_s)
    assert (latency_s > 0.19).all() and (latency_s < 0.35).all(), latency_s


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
    from analysis import load_run

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
    from injector.record.store import Recorder

    assert isinstance(RequestLogRecorder("/nonexistent"), Recorder)


def test_a_bug_is_a_500_and_counted_as_one(capsys, serving):
    """The 500 path exists (so the seed experiment can catch a real bug): an SQL error is not an outage."""
    pytest.importorskip("psycopg", reason="python3-psycopg (Debian) is the api's driver: `sudo make setup`")
    from injector.lab.api import Metrics, QueryFailed, make_handler

    class BrokenDb:
        def query(self, sql, params):
            raise QueryFailed('relation "items" does not exist')

    url = serving(_Server(("127.0.0.1", 0), make_handler(BrokenDb(), Metrics(), 5)))
    assert http_get(f"{url}/items").status == 500
    assert _metrics(url)['http_requests_total{handler="/items",status="500"}'] == 1
    assert "QueryFailed" in capsys.readouterr().err  # the traceback is logged
