"""TCP RTT samples from sock_ops on a cgroup of ours holding the client socket, against TCP_INFO.

Tolerances: each event carries the sample (mrtt) and the smoothed RTT it updates to (srtt, µs). The kernel's srtt
is an integer EWMA with gain 1/8 kept in 1/8 µs; the event shows it truncated to µs, and the kernel calls the
program at most once per RTT window (a sample in between updates srtt silently). So (1) for >= 90 % of events the
srtt follows from the previous event's and the new sample within 2 µs (the truncation), and (2) TCP_INFO's
tcpi_rtt read after the last exchange equals the last event's srtt within max(2 µs, 10 %). Only the recorded
flow's connection is sampled: a second connection to another port is not.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

from chaosinject.kernel.netns import socket_in
from chaosinject.record import PacketFlow, RttRecorder
from tests.host.test_record_oneway import cgroup, clean_bpf, socket_in_cgroup  # noqa: F401 - fixtures

PORT = 9100


def echo_server(ns: str, ip: str, port: int) -> tuple[socket.socket, threading.Thread]:
    server = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((ip, port))
    server.listen(4)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def tcpi_rtt_us(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("=I", info, 68)[0]  # struct tcp_info: tcpi_rtt


def exchange(client: socket.socket, count: int) -> None:
    for i in range(count):
        client.sendall(b"x" * 100)
        got = 0
        while got < 100:
            got += len(client.recv(4096))
        time.sleep(0.002)


def test_sock_ops_rtt_samples_agree_with_tcp_info(pair, cgroup, clean_bpf):
    client_ip, server_ip = str(pair.client.ipv4.ip), str(pair.server.ipv4.ip)
    servers = [echo_server(pair.server_ns, server_ip, port) for port in (PORT, PORT + 1)]
    flow = PacketFlow("client->server", client_ip, server_ip, dport=PORT, protocol="tcp")
    try:
        with RttRecorder([flow], cgroup=cgroup.path) as rec:
            client = socket_in_cgroup(cgroup, pair.client_ns, socket.AF_INET, socket.SOCK_STREAM)
            other = socket_in_cgroup(cgroup, pair.client_ns, socket.AF_INET, socket.SOCK_STREAM)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect((server_ip, PORT))
            other.connect((server_ip, PORT + 1))
            exchange(client, 200)
            exchange(other, 50)  # not the recorded flow
            time.sleep(0.05)
            tcp_info_rtt = tcpi_rtt_us(client)
            info_t_ns = time.monotonic_ns()
            client.close()
            other.close()
            time.sleep(0.05)
    finally:
        for server, thread in servers:
            server.close()
            thread.join(timeout=2)
    ev = rec.events_array()
    mrtt_us = ev["latency_ns"] // 1000
    srtt_us = ev["aux"].astype(np.int64)
    print(f"rtt samples {len(ev)}: median {np.median(mrtt_us)} us, last srtt {srtt_us[-1]} us, "
          f"TCP_INFO {tcp_info_rtt} us; counters {rec.counters()}")
    assert rec.lost() == 0
    assert 150 <= len(ev) <= 400  # one sample per ACKed exchange (+ handshake/FIN); none from the other port
    # each smoothed value follows from the previous one and the sample (srtt += (m - srtt) / 8), except
    # where the kernel took a sample without calling us (it calls once per RTT window)
    predicted = srtt_us[:-1] + (mrtt_us[1:] - srtt_us[:-1]) / 8
    follows = np.abs(predicted - srtt_us[1:]) <= 2
    assert follows.mean() >= 0.9, np.abs(predicted - srtt_us[1:])
    # TCP_INFO's srtt, read after the last exchange, is the last reported one
    assert abs(int(srtt_us[ev["t_ns"] <= info_t_ns][-1]) - tcp_info_rtt) <= max(2, 0.1 * tcp_info_rtt)
    assert 0 < np.median(mrtt_us) < 5_000  # veth between namespaces: microseconds to a ms on a loaded host
    assert not cgroup.pids()  # the test process went back at once
