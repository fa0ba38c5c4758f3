"""The eBPF engine on this kernel: achieved faults measured at the receiver and in the kernel's counters."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from chaosinject.analysis import proportion_ci
from chaosinject.lab.traffic import UdpReceiver, send_udp
from chaosinject.spec import FaultSpec, parse_loss_burst

from .conftest import injected, qdiscs

N = 20_000
RATE = 20_000.0
Z999 = 3.2905  # two-sided 99.9 %


def blast(pair, dst: str, port: int, count: int = N, src: str | None = None) -> UdpReceiver:
    rx = UdpReceiver(pair.server_ns, dst, port).start()
    send_udp(pair.client_ns, dst, port, count, RATE, src=src)
    rx.stop()
    return rx


def rule_totals(engine) -> dict[str, int]:
    totals: dict[str, int] = {}
    for ctr in engine.counters().values():
        for k, v in ctr.items():
            totals[k] = totals.get(k, 0) + v
    return totals


@pytest.mark.parametrize("loss", [0.10, 0.30])
def test_random_loss_lies_in_the_binomial_interval_and_spares_everything_else(pair, loss):
    server_ip = str(pair.server.ipv4.ip)
    pair.topo.add_address(pair.server, "10.201.0.5/29")  # an untargeted address on the same link
    with injected(f"{pair.client.ipv4.ip}->{server_ip}:9000/udp", FaultSpec(loss_ratio=loss),
                  pair.client_iface) as engine:
        faulted = blast(pair, server_ip, 9000)
        other_port = blast(pair, server_ip, 9001)
        other_addr = blast(pair, "10.201.0.5", 9000)
        counters = rule_totals(engine)
    lost = N - faulted.received
    ci = proportion_ci(lost, N, confidence=0.999)
    assert ci.low <= loss <= ci.high, f"achieved {lost / N:.4f}, 99.9% CI {ci}"
    assert counters["matched_packets"] == N
    assert counters["dropped_packets"] == lost, "every loss is one the kernel counted"
    assert other_port.received == N and other_addr.received == N


def test_ipv6_flow(pair):
    server_ip = str(pair.server.ipv6.ip)
    with injected(f"[{pair.client.ipv6.ip}]->[{server_ip}]:9000/udp", FaultSpec(loss_ratio=0.3),
                  pair.client_iface, seed=11) as engine:
        faulted = blast(pair, server_ip, 9000, count=10_000)
        control = blast(pair, server_ip, 9001, count=2_000)
        counters = rule_totals(engine)
    lost = 10_000 - faulted.received
    ci = proportion_ci(lost, 10_000, confidence=0.999)
    assert ci.low <= 0.3 <= ci.high
    assert counters["dropped_packets"] == lost and control.received == 2_000


def test_partition_drops_everything_and_only_the_flow(pair):
    server_ip = str(pair.server.ipv4.ip)
    with injected(f"{pair.client.ipv4.ip}->{server_ip}:9000", FaultSpec(partition=True), pair.client_iface):
        assert blast(pair, server_ip, 9000, count=2_000).received == 0
        assert blast(pair, server_ip, 9001, count=2_000).received == 2_000
    assert blast(pair, server_ip, 9000, count=2_000).received == 2_000, "the fault ends with the run"


def test_ingress_direction_faults_the_replies(pair):
    """Flow client->server:9000, direction ingress: packets from server:9000 arriving at the client drop."""
    client_ip, server_ip = str(pair.client.ipv4.ip), str(pair.server.ipv4.ip)
    with injected(f"{client_ip}->{server_ip}:9000/udp", FaultSpec(partition=True), pair.client_iface,
                  direction="ingress") as engine:
        replies = UdpReceiver(pair.client_ns, client_ip, 7000).start()
        other = UdpReceiver(pair.client_ns, client_ip, 7001).start()
        send_udp(pair.server_ns, client_ip, 7000, 1_000, RATE, src=server_ip)  # ephemeral src port
        send_udp(pair.server_ns, client_ip, 7000, 1_000, RATE, src=server_ip, src_port=9000)
        send_udp(pair.server_ns, client_ip, 7001, 1_000, RATE, src=server_ip, src_port=9001)
        replies.stop()
        other.stop()
        counters = rule_totals(engine)
    assert replies.received == 1_000, "only packets from server port 9000 are the flow's replies"
    assert other.received == 1_000
    assert counters["dropped_packets"] == 1_000


def test_gilbert_elliott_bursts_match_the_model(pair):
    ge = parse_loss_burst("5%,25%")  # p, r; 1-h = 100 %, 1-k = 0 %: every bad-state packet is lost
    server_ip = str(pair.server.ipv4.ip)
    with injected(f"{pair.client.ipv4.ip}->{server_ip}:9000/udp", FaultSpec(loss_burst=ge), pair.client_iface,
                  seed=2024) as engine:
        rx = blast(pair, server_ip, 9000)
        counters = rule_totals(engine)
    arrived = np.zeros(N, dtype=bool)
    arrived[np.asarray(rx.sequences, dtype=np.int64)] = True
    lost = ~arrived
    # loss ratio: the bad-state occupancy of a two-state chain; its sample mean has variance
    # pi (1 - pi) / n * (1 + lam) / (1 - lam), lam = 1 - p - r (the chain's second eigenvalue)
    pi, lam = ge.bad_state_ratio, 1 - ge.p - ge.r
    sd = np.sqrt(pi * (1 - pi) / N * (1 + lam) / (1 - lam))
    assert abs(lost.mean() - ge.expected_loss_ratio) <= Z999 * sd, (lost.mean(), ge.expected_loss_ratio, sd)
    # bursts: runs of consecutive losses are geometric with mean 1/r
    edges = np.diff(np.concatenate(([0], lost.astype(np.int8), [0])))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    burst_sd = np.sqrt(1 - ge.r) / ge.r / np.sqrt(len(runs))
    assert abs(runs.mean() - ge.mean_bad_run_packets) <= Z999 * burst_sd, (runs.mean(), len(runs))
    assert counters["dropped_packets"] == int(lost.sum())


def test_seed_makes_decisions_reproducible(pair):
    server_ip = str(pair.server.ipv4.ip)
    lost_sets = []
    for _ in range(2):
        with injected(f"{pair.client.ipv4.ip}->{server_ip}:9000/udp", FaultSpec(loss_ratio=0.2), pair.client_iface,
                      seed=7):
            rx = blast(pair, server_ip, 9000, count=3_000)
        lost_sets.append(set(range(3_000)) - set(rx.sequences))
    assert lost_sets[0] == lost_sets[1] and 400 < len(lost_sets[0]) < 800


def test_corruption_flips_payload_bits_at_the_requested_rate(pair):
    server_ip = str(pair.server.ipv4.ip)
    with injected(f"{pair.client.ipv4.ip}->{server_ip}:9000/udp", FaultSpec(corrupt_ratio=0.2), pair.client_iface,
                  seed=5) as engine:
        rx = blast(pair, server_ip, 9000, count=10_000)
        counters = rule_totals(engine)
    # on veth the checksum is left to offload, so corrupted datagrams are delivered and visible to the receiver
    assert rx.received == 10_000
    assert rx.corrupted == counters["corrupted_packets"]
    ci = proportion_ci(rx.corrupted, 10_000, confidence=0.999)
    assert ci.low <= 0.2 <= ci.high


def test_duplication(pair):
    server_ip = str(pair.server.ipv4.ip)
    with injected(f"{pair.client.ipv4.ip}->{server_ip}:9000/udp", FaultSpec(duplicate_ratio=0.25), pair.client_iface,
                  seed=9) as engine:
        rx = blast(pair, server_ip, 9000, count=10_000)
        counters = rule_totals(engine)
    extra = rx.received - 10_000
    assert extra == counters["duplicated_packets"]
    assert set(rx.sequences) == set(range(10_000))
    ci = proportion_ci(extra, 10_000, confidence=0.999)
    assert ci.low <= 0.25 <= ci.high


def test_tcp_under_loss_retransmits_and_delivers(pair):
    server_ip = str(pair.server.ipv4.ip)
    from chaosinject.kernel.netns import socket_in

    listener = socket_in(pair.server_ns, socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((server_ip, 9100))
    listener.listen(1)
    received = bytearray()

    def serve():
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    data = np.random.default_rng(1).bytes(2_000_000)
    with injected(f"{pair.client.ipv4.ip}->{server_ip}:9100/tcp", FaultSpec(loss_ratio=0.05), pair.client_iface,
                  seed=3) as engine:
        client = socket_in(pair.client_ns, socket.AF_INET, socket.SOCK_STREAM)
        client.settimeout(60)
        client.connect((server_ip, 9100))
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        server.join(timeout=60)  # everything delivered: the retransmissions have happened
        info = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        total_retrans = int.from_bytes(info[100:104], "little")  # tcpi_total_retrans
        client.close()
        counters = rule_totals(engine)
    listener.close()
    assert bytes(received) == data
    assert counters["dropped_packets"] > 0
    assert total_retrans > 0, "TCP must see the drops as loss on the wire and retransmit"


def test_existing_clsact_and_foreign_filter_are_untouched(pair):
    import subprocess

    iface = pair.client_iface
    ns, dev = iface.netns, iface.name
    subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "clsact"], check=True)
    subprocess.run(["tc", "-n", ns, "filter", "add", "dev", dev, "egress", "prio", "1", "protocol", "ip", "u32",
                    "match", "ip", "dst", "192.0.2.1/32", "classid", "1:1"], check=True)
    before = subprocess.run(["tc", "-n", ns, "filter", "show", "dev", dev, "egress"], capture_output=True,
                            text=True, check=True).stdout
    server_ip = str(pair.server.ipv4.ip)
    with injected(f"{pair.client.ipv4.ip}->{server_ip}:9000/udp", FaultSpec(partition=True), iface):
        during = subprocess.run(["tc", "-n", ns, "filter", "show", "dev", dev, "egress"], capture_output=True,
                                text=True, check=True).stdout
        assert "chaos-inject:" in during and "pref 1 u32" in during
        assert blast(pair, server_ip, 9000, count=500).received == 0
    after = subprocess.run(["tc", "-n", ns, "filter", "show", "dev", dev, "egress"], capture_output=True,
                           text=True, check=True).stdout
    assert after == before
    assert "clsact" in qdiscs(iface)


def test_clsact_we_made_is_removed(pair):
    iface = pair.client_iface
    assert "clsact" not in qdiscs(iface)
    with injected(f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}", FaultSpec(loss_ratio=0.5), iface):
        assert "clsact" in qdiscs(iface)
    assert "clsact" not in qdiscs(iface)


def test_two_flows_with_their_own_faults_in_one_run(pair):
    import time

    from chaosinject.engines.ebpf import EbpfEngine
    from chaosinject.kernel.owner import KernelOwner
    from chaosinject.plan import build_plan
    from chaosinject.spec import parse_flow

    server_ip, client_ip = str(pair.server.ipv4.ip), str(pair.client.ipv4.ip)
    targets = [(parse_flow(f"{client_ip}->{server_ip}:9000/udp"), pair.client_iface, FaultSpec(loss_ratio=0.3)),
               (parse_flow(f"{client_ip}->{server_ip}:9001/udp"), pair.client_iface, FaultSpec(partition=True))]
    plan = build_plan(targets, duration_ns=120 * 10**9, seed=4)
    engine = EbpfEngine()
    with KernelOwner(plan.run_id, handle_signals=False) as owner:
        engine.apply(plan, owner, time.monotonic_ns() + 120 * 10**9)
        lossy = blast(pair, server_ip, 9000, count=5_000)
        cut = blast(pair, server_ip, 9001, count=1_000)
        control = blast(pair, server_ip, 9002, count=1_000)
    ci = proportion_ci(5_000 - lossy.received, 5_000, confidence=0.999)
    assert ci.low <= 0.3 <= ci.high
    assert cut.received == 0 and control.received == 1_000
