"""TCP traffic whose RTT the recorders can sample, for tests and benchmarks on namespaces they made (a test
helper: the host tier and bench/record_experiment.py use it; nothing shipped does).

An echo server in one network namespace; a client in another that opens a new connection every
``interval_s`` and exchanges a few messages on it. sock_ops switches RTT samples on when a connection is
established, so a connection made before the RTT recorder attached is never sampled: a client that keeps
opening connections gives samples from whenever the recorder starts, however late that is on a loaded host.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from chaosinject.kernel.netns import socket_in


class TcpEchoTraffic:
    """Echo server at ``server_ip:port`` in ``server_ns``; client connections from ``client_ns`` (or from
    ``client_socket()``, e.g. a socket made inside a cgroup). ``exchanges`` and ``connections`` count what
    completed, ``errors`` what failed. Started on construction; ``close()`` ends both threads."""

    def __init__(self, client_ns: str | None, server_ns: str | None, server_ip: str, port: int, *,
                 per_connection: int = 4, interval_s: float = 0.03, size: int = 64,
                 client_socket: Callable[[], socket.socket] | None = None):
        self.server_ip, self.port = server_ip, port
        self.per_connection, self.interval_s, self.size = per_connection, interval_s, size
        self._client_socket = client_socket or (lambda: socket_in(client_ns, socket.AF_INET, socket.SOCK_STREAM))
        self.exchanges = 0
        self.connections = 0
        self.errors: list[str] = []
        self.done = threading.Event()
        self.listener = socket_in(server_ns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((server_ip, port))
            self.listener.listen(64)
            self.listener.settimeout(0.2)  # the accept loop looks at ``done`` this often
        except BaseException:
            self.listener.close()
            raise
        self.threads = [threading.Thread(target=self._serve, name="tcp-echo-server", daemon=True),
                        threading.Thread(target=self._client, name="tcp-echo-client", daemon=True)]
        for t in self.threads:
            t.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def _client(self) -> None:
        message = b"x" * self.size
        while not self.done.is_set():
            try:
                with self._client_socket() as s:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.settimeout(5)
                    s.connect((self.server_ip, self.port))
                    self.connections += 1
                    for _ in range(self.per_connection):
                        s.sendall(message)
                        got = 0
                        while got < self.size:
                            chunk = s.recv(self.size - got)
                            if not chunk:
                                raise ConnectionError("the echo server closed the connection")
                            got += len(chunk)
                        self.exchanges += 1
            except OSError as exc:
                self.errors.append(repr(exc))
            time.sleep(self.interval_s)

    def close(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(timeout=10)
        self.listener.close()

    def __enter__(self) -> "TcpEchoTraffic":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["TcpEchoTraffic"]
