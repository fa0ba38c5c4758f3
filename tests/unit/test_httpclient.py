"""The one HTTP and Prometheus client (chaosinject.httpclient) against small servers on loopback (no root)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.parse

import pytest

from chaosinject.httpclient import KeepAlive, PrometheusError, get, get_ok, prometheus_query


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive unless an answer says Connection: close

    def log_message(self, *a):
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/plain", close: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        srv.paths.append((self.path, self.client_address))
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/ok":
            self._send(200, b"fine")
        elif u.path == "/late-once":   # the first request is answered after 0.5 s, the others at once
            if srv.late_once:
                srv.late_once = False
                time.sleep(0.5)
            self._send(200, b"late")
        elif u.path == "/close":
            self._send(200, b"bye", close=True)
        elif u.path == "/trickle":      # every byte well within the timeout, the whole far beyond it
            self.send_response(200)
            self.send_header("Content-Length", "40")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif u.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one ", b"two ", b"three"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif u.path == "/api/v1/query":
            q = urllib.parse.parse_qs(u.query)["query"][0]
            if q == "bad(":
                body, code = {"status": "error", "errorType": "bad_data", "error": "parse error"}, 400
            else:
                body, code = {"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {"job": "api"}, "value": [time.time(), "1"]}]}}, 200
            self._send(code, json.dumps(body).encode(), "application/json")
        elif u.path == "/notjson/api/v1/query":
            self._send(502, b"<html>bad gateway</html>", "text/html")
        else:
            self._send(404, b"no such page")


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.paths = []
    srv.late_once = True
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]     # nothing listens once it is closed


def test_get_returns_every_status_as_a_reply_and_no_answer_as_none(server):
    _, url = server
    ok = get(f"{url}/ok")
    assert (ok.status, ok.body, ok.error) == (200, b"fine", None) and ok.elapsed_s > 0
    assert ok.headers["Content-Length"] == "4"
    missing = get(f"{url}/nothing")
    assert (missing.status, missing.body) == (404, b"no such page")
    refused = get(f"http://127.0.0.1:{_closed_port()}/ok", 2)
    assert refused.status is None and "refused" in refused.error.lower()
    assert get_ok(f"{url}/ok") is True and get_ok(f"{url}/nothing") is False
    with pytest.raises(ConnectionError, match="refused"):
        get_ok(f"http://127.0.0.1:{_closed_port()}/ok")
    with pytest.raises(ValueError, match="URL"):
        get("ftp://127.0.0.1/x")


def test_get_reads_a_chunked_body_whole(server):
    _, url = server
    assert get(f"{url}/chunked").body == b"one two three"


@pytest.mark.parametrize("client", ["get", "keepalive"])
def test_the_timeout_bounds_the_whole_request_not_each_read(server, client):
    """40 bytes 50 ms apart: every read is within a 0.3 s socket timeout, the whole body (2 s) is not."""
    _, url = server
    if client == "get":
        reply = get(f"{url}/trickle", 0.3)
    else:
        reply = KeepAlive(f"{url}/trickle", 0.3).get()
    assert reply.status is None and "timed out" in reply.error
    assert 0.3 <= reply.elapsed_s < 0.3 + 0.2, reply.elapsed_s   # at most one 50 ms read beyond, plus slack


def test_keepalive_reuses_one_connection_and_reopens_after_a_close_or_a_failure(server):
    srv, url = server
    client = KeepAlive(f"{url}/ok", 2.0)
    replies = [client.get() for _ in range(5)]
    assert [r.status for r in replies] == [200] * 5
    assert len({addr for _, addr in srv.paths}) == 1            # one TCP connection for the five
    client.close()

    srv.paths.clear()
    closing = KeepAlive(f"{url}/close", 2.0)
    assert [closing.get().status for _ in range(3)] == [200] * 3
    assert len({addr for _, addr in srv.paths}) == 3            # the server said close: a new one each time

    srv.paths.clear()
    late = KeepAlive(f"{url}/late-once", 0.2)
    assert late.get().status is None                            # timed out: that connection is closed
    assert late.get().status == 200
    assert len({addr for _, addr in srv.paths}) == 2


def test_keepalive_connects_through_the_given_socket_maker(server):
    _, url = server
    made = []

    def connect(host, port, timeout_s):
        made.append((host, port, timeout_s > 0))
        return socket.create_connection((host, port), timeout_s)

    client = KeepAlive(f"{url}/ok", 1.0, connect=connect)
    assert client.get().status == 200 and client.get().status == 200
    client.close()
    assert made == [("127.0.0.1", int(url.rsplit(":", 1)[1]), True)]
    with pytest.raises(ValueError, match="http://"):
        KeepAlive("https://127.0.0.1/x", 1.0, connect=connect)


def test_prometheus_query_vector_and_every_failure_as_prometheus_error(server):
    _, url = server
    assert prometheus_query(url, "up")[0]["metric"] == {"job": "api"}
    with pytest.raises(PrometheusError, match=r"bad_data.*parse error"):      # the 400's error payload is read
        prometheus_query(url, "bad(")
    with pytest.raises(PrometheusError, match="HTTP 502, not a JSON answer"):
        prometheus_query(f"{url}/notjson", "up")
    with pytest.raises(PrometheusError, match="cannot query"):
        prometheus_query(f"http://127.0.0.1:{_closed_port()}", "up", timeout_s=2)
