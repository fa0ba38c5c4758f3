"""Userspace (NFQUEUE) delay engine on this kernel: delay, jitter, untargeted flows, clean-up, SIGKILL + sweep.

The engine runs in a child process (tests/host/engine_process.py), as the CLI runs it: its own process and GIL,
so the measuring threads here do not disturb its timing. Traffic only between the ``pair`` namespaces.

Tolerances: the README's measured precision (bench/delay_engines.py) is a median error of +0.08 to +0.13 ms and a
p99 of +0.33 to +0.50 ms on the loaded 2-core host (+1.2 to +3.2 ms in an earlier run). Another job on the same machine can stall every thread for ms
(even real-time ones; measured: the engine's own p99 lateness reached 6 ms), and stalls only ever make packets
late. So the tests judge: never early (p1), the lower quintile within 1 ms of the request, the median of hundreds
of packets within 0.5 ms (MEDIAN_ALLOWANCE), tails and few-sample medians within 3 ms (LOADED_HOST_ALLOWANCE); and a
measurement during which the engine reports its own releases late by > 2 ms at p99 is repeated once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from chaosinject.engines.userspace import JitterModel, UserspaceEngine
from chaosinject.engines.userspace_holds import RuleState
from chaosinject.errors import InvalidSpec, Unsupported
from chaosinject.kernel import nftables
from chaosinject.kernel.ledger import Ledger
from chaosinject.kernel.netns import Topology, existing_namespaces, socket_in, unique_name
from chaosinject.kernel.owner import KernelOwner
from chaosinject.kernel.rtnl import open_rtnl
from chaosinject.kernel.sweep import sweep
from chaosinject.lab.traffic import UdpReceiver, measure_one_way, send_udp
from chaosinject.plan import Interface, build_plan
from chaosinject.spec import FaultSpec, parse_flow

from .engine_process import EngineProcess

STAMP = struct.Struct("!IQ")  # sequence, send time (CLOCK_MONOTONIC ns)
MS = 1_000_000

pytestmark = pytest.mark.skipif(nftables.nft_binary() is None,
                                reason="nft missing (Debian package nftables; run `sudo make setup`)")


def start_engine(run_dir: Path, pair, fault: dict, *, port: int = 9000, direction: str = "egress",
           seed: int | None = None, flow: str | None = None) -> EngineProcess:
    """The engine in a child process for one flow (default: client -> server:port/udp) on the client's link."""
    flow = flow or f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:{port}/udp"
    return EngineProcess({"netns": pair.client_ns, "ifname": pair.client.ifname, "direction": direction,
                          "seed": seed, "targets": [{"flow": flow, "fault": fault}]}, run_dir=run_dir)


@pytest.fixture
def engines(run_dir, pair):
    started: list[EngineProcess] = []

    def start(fault: dict, **kw) -> EngineProcess:
        engine = start_engine(run_dir, pair, fault, **kw)
        started.append(engine)
        return engine
    yield start
    for engine in started:
        engine.kill()
    if any(Ledger.all()):
        sweep()  # a failed test's killed engine: its table goes, and run_dir's check sees no ledger


def one_way(pair, *, count: int = 1000, rate_pps: float = 1000.0, port: int = 9000, reverse: bool = False,
            v6: bool = False) -> list[int]:
    """One-way latencies (ns) of UDP datagrams client -> server:port, or with ``reverse`` the replies of a flow
    to server:port: server:port -> client:port+500. Forward, arrival is the kernel's receive stamp (the engine's
    egress hold is before it; a busy receiving thread is not measured); the replies are held on ingress
    (PREROUTING), after that stamp, so their arrival is when the receiving thread got them."""
    client, server = ((pair.client.ipv6.ip, pair.server.ipv6.ip) if v6 else (pair.client.ipv4.ip, pair.server.ipv4.ip))
    if reverse:
        return measure_one_way(pair.server_ns, pair.client_ns, str(client), port + 500, count, rate_pps,
                               src=str(server), src_port=port, kernel_arrival=False).latencies_ns
    return measure_one_way(pair.client_ns, pair.server_ns, str(server), port, count, rate_pps).latencies_ns


# The median of hundreds of packets: README's measured error is +0.08 to +0.13 ms (bench/delay_engines.py
# --engines userspace, load 10.4, 2026-12-06); these tests' own medians were +0.11 to +0.14 ms at load 8.7 the
# same day. A stall moves the median only if it holds half the packets, so 0.5 ms (~4x the stated figure).
MEDIAN_ALLOWANCE = 0.5 * MS
# Tails and medians of a few samples (20 TCP round trips, a p95, a spread) do move with one stall of the shared
# machine (the engine's own p99 lateness was measured at 6 ms, the bench's p99 error at up to 10 ms under load).
LOADED_HOST_ALLOWANCE = 3 * MS


def assert_added(added: list[float], requested_ns: int) -> None:
    """Added delays match a request: never early, mostly precise, median within the stated precision's margin."""
    assert quantile(added, 0.01) > requested_ns - 0.2 * MS, "packets left early"
    assert quantile(added, 0.2) < requested_ns + 1 * MS, f"lower quintile {quantile(added, 0.2) / MS:.2f} ms"
    median = statistics.median(added)
    assert median < requested_ns + MEDIAN_ALLOWANCE, f"median error {(median - requested_ns) / MS:+.3f} ms"


def assert_undelayed(latencies: list[int], base: float = 0.0) -> None:
    assert quantile(latencies, 0.2) - base < 0.5 * MS and statistics.median(latencies) - base < MEDIAN_ALLOWANCE


def baseline(pair, *, reverse: bool = False, v6: bool = False) -> float:
    """Median one-way latency without a fault, once the new link is up and neighbours are resolved."""
    deadline = time.monotonic() + 10
    while (len(one_way(pair, count=20, rate_pps=200, reverse=reverse, v6=v6)) < 20
           and time.monotonic() < deadline):
        pass
    return statistics.median(one_way(pair, count=300, reverse=reverse, v6=v6))


def quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def our_tables(netns: str) -> list[str]:
    return [t for t in nftables.list_tables(netns) if t.startswith("chaos_inject_")]


def test_delayed_flow_gets_the_requested_delay_and_an_untargeted_flow_none(pair, engines):
    base = baseline(pair)
    for attempt in range(2):
        engine = engines({"delay_ns": 20 * MS})
        delayed = one_way(pair, count=1000)
        untargeted = one_way(pair, count=300, port=9001)
        counters = engine.stop()["0"]
        print(f"engine: {counters}")
        if counters["release_late_p99_ns"] < 2 * MS:
            break  # else the machine stalled the engine (see the jitter test): measure once more
    assert len(delayed) == 1000
    assert_added([x - base for x in delayed], 20 * MS)
    assert_undelayed(untargeted, base)
    assert counters["matched_packets"] == counters["queued_packets"] == counters["delayed_packets"] == 1000
    assert 20 * MS <= counters["delay_p50_ns"] < 21 * MS
    assert not our_tables(pair.client_ns)


def test_ingress_delays_the_replies_as_they_arrive(pair, engines):
    base = baseline(pair, reverse=True)
    engine = engines({"delay_ns": 10 * MS}, direction="ingress")
    delayed = one_way(pair, count=500, reverse=True)
    forward = one_way(pair, count=200)  # the other direction is not faulted
    engine.stop()
    assert_added([x - base for x in delayed], 10 * MS)
    assert_undelayed(forward)


def test_ipv6_flow_is_delayed(pair, engines):
    base = baseline(pair, v6=True)
    engine = engines({"delay_ns": 10 * MS}, flow=f"[{pair.client.ipv6.ip}]->[{pair.server.ipv6.ip}]:9000/udp")
    delayed = one_way(pair, count=500, v6=True)
    v4 = one_way(pair, count=200)  # the same port over IPv4 is another flow
    engine.stop()
    assert len(delayed) == 500
    assert_added([x - base for x in delayed], 10 * MS)
    assert_undelayed(v4)


def serve_one_connection(pair, handle, *, port: int = 9000) -> tuple[socket.socket, threading.Thread]:
    """A TCP listener on server:port whose first connection ``handle`` serves on a thread (close the listener)."""
    server = socket_in(pair.server_ns, socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((str(pair.server.ipv4.ip), port))
    server.listen(4)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            handle(conn)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_tcp_connect_and_request_pay_the_delay(pair, engines):
    def echo(conn: socket.socket) -> None:
        while data := conn.recv(64):
            conn.sendall(data)
    server, _ = serve_one_connection(pair, echo)
    engine = engines({"delay_ns": 20 * MS}, flow=f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/tcp")
    try:
        client = socket_in(pair.client_ns, socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.monotonic()
        client.connect((str(pair.server.ipv4.ip), 9000))  # the SYN is delayed
        connect_s = time.monotonic() - t0
        rtts = []
        for _ in range(20):
            t0 = time.monotonic()
            client.sendall(b"ping")
            assert client.recv(64) == b"ping"
            rtts.append(time.monotonic() - t0)
        client.close()
    finally:
        counters = engine.stop()["0"]
        server.close()
    assert 0.0198 < connect_s < 0.050  # one sample: a host stall would show in full
    assert 0.0198 < statistics.median(rtts) < 0.020 + LOADED_HOST_ALLOWANCE / 1e9
    assert counters["delayed_packets"] >= 21


def test_egress_tcp_bulk_is_not_throttled_by_held_packets(pair, engines):
    """Egress originals are dropped once copied: a held packet does not count against the sender's small-queue
    limit (holding the originals gave 2.3 Mbit/s at 20 ms on this machine)."""
    received = []

    def count(conn: socket.socket) -> None:
        total = 0
        while data := conn.recv(1 << 20):
            total += len(data)
        received.append(total)
    server, thread = serve_one_connection(pair, count)
    engine = engines({"delay_ns": 20 * MS}, flow=f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/tcp")
    try:
        client = socket_in(pair.client_ns, socket.AF_INET, socket.SOCK_STREAM)
        client.connect((str(pair.server.ipv4.ip), 9000))
        t0 = time.monotonic()
        for _ in range(8):
            client.sendall(bytes(1 << 20))
        client.close()
        thread.join(timeout=60)
        mbit_s = 8 * 8 * 2**20 / (time.monotonic() - t0) / 1e6
    finally:
        counters = engine.stop()["0"]
        server.close()
    assert received == [8 << 20]
    assert mbit_s > 40, f"{mbit_s:.1f} Mbit/s"
    assert counters["resend_errors"] == 0 and counters["delayed_packets"] > 100


def test_two_flows_of_one_run_get_their_own_delays(pair, run_dir):
    iface = Interface(pair.client.ifname, pair.client_ns)
    src, dst = pair.client.ipv4.ip, pair.server.ipv4.ip
    plan = build_plan([(parse_flow(f"{src}->{dst}:9000/udp"), iface, FaultSpec(delay_ns=10 * MS)),
                       (parse_flow(f"{src}->{dst}:9001/udp"), iface, FaultSpec(delay_ns=30 * MS))],
                      duration_ns=60 * 10**9)
    base = baseline(pair)
    engine = UserspaceEngine()
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        engine.apply(plan, owner, time.monotonic_ns() + plan.duration_ns)
        first = one_way(pair, count=300, port=9000)
        second = one_way(pair, count=300, port=9001)
        counters = engine.counters()
    assert_added([x - base for x in first], 10 * MS)
    assert_added([x - base for x in second], 30 * MS)
    assert counters[0]["delayed_packets"] == counters[1]["delayed_packets"] == 300
    assert not our_tables(pair.client_ns)


def test_forwarded_flow_is_delayed_on_the_routers_way_out(run_dir):
    """client -> router -> server: the engine on the router's outgoing interface delays forwarded packets
    (forward hook; the copies are re-sent from the router with the client's source address)."""
    topo = Topology()
    try:
        client_ns = topo.add_namespace(unique_name("ci-h-client"))
        router_ns = topo.add_namespace(unique_name("ci-h-router"))
        server_ns = topo.add_namespace(unique_name("ci-h-server"))
        client, router_in = topo.connect(client_ns, router_ns, "10.201.1.0/29", "fd00:201:1::/64")
        router_out, server = topo.connect(router_ns, server_ns, "10.201.2.0/29", "fd00:201:2::/64")
        subprocess.run(["ip", "netns", "exec", router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        with open_rtnl(client_ns) as rtnl:
            rtnl.route("add", dst="10.201.2.0/29", gateway=str(router_in.ipv4.ip))
        with open_rtnl(server_ns) as rtnl:
            rtnl.route("add", dst="10.201.1.0/29", gateway=str(router_out.ipv4.ip))
        pair = type("Pair", (), {"client": client, "server": server, "client_ns": client_ns,
                                 "server_ns": server_ns})()
        base = baseline(pair)
        plan = build_plan([(parse_flow(f"{client.ipv4.ip}->{server.ipv4.ip}:9000/udp"),
                            Interface(router_out.ifname, router_ns))], FaultSpec(delay_ns=10 * MS),
                          duration_ns=60 * 10**9)
        engine = UserspaceEngine()
        with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
            engine.apply(plan, owner, time.monotonic_ns() + plan.duration_ns)
            delayed = one_way(pair, count=300)
            counters = engine.counters()[0]
        assert len(delayed) == 300
        assert_added([x - base for x in delayed], 10 * MS)
        assert counters["matched_packets"] == counters["delayed_packets"] == 300
        assert not our_tables(router_ns)
    finally:
        made = list(topo.namespaces)
        topo.close()
    assert not set(made) & set(existing_namespaces())


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_jitter_spread_matches_the_distribution(pair, engines, distribution):
    base = baseline(pair)
    fault = {"delay_ns": 30 * MS, "jitter_ns": 5 * MS, "distribution": distribution}
    for attempt in range(2):
        engine = engines(fault, seed=7)
        added = [x - base for x in one_way(pair, count=1500)]
        counters = engine.stop()["0"]
        print(f"engine: {counters}; measured added p5/p50/p95 ms: "
              f"{[round(quantile(added, q) / MS, 2) for q in (0.05, 0.5, 0.95)]}")
        if counters["release_late_p99_ns"] < 2 * MS:
            break
        # The engine itself saw 1 % of its releases more than 2 ms late: the machine stalled it (a loaded CI
        # host, vCPU steal); the spread measured then says nothing about the distribution. Measure once more.
    assert abs(statistics.median(added) - 30 * MS) < 1.5 * MS
    if distribution == "uniform":  # in [25, 35] ms: p5 = 25.5 ms, p95 = 34.5 ms (+ lateness, - sampling error)
        assert 25.2 * MS < quantile(added, 0.05) < 26.5 * MS
        assert 34.2 * MS < quantile(added, 0.95) < 34.5 * MS + LOADED_HOST_ALLOWANCE
        assert quantile(added, 0.005) > 25 * MS - 0.3 * MS
    else:  # sigma 5 ms: the 16-84 % range is about 2 sigma
        spread = quantile(added, 0.84) - quantile(added, 0.16)
        assert 8 * MS < spread < 12 * MS + LOADED_HOST_ALLOWANCE


def test_in_process_run_leaves_no_table_and_no_ledger(pair, run_dir):
    iface = Interface(pair.client.ifname, pair.client_ns)
    plan = build_plan([(parse_flow(f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp"), iface)],
                      FaultSpec(delay_ns=5 * MS), duration_ns=60 * 10**9)
    engine = UserspaceEngine()
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        engine.apply(plan, owner, time.monotonic_ns() + plan.duration_ns)
        assert our_tables(pair.client_ns) == [nftables.table_name(plan.run_id)]
        assert [e["kind"] for e in Ledger.load(owner.ledger.path).entries] == ["nft-table"]
        lat = one_way(pair, count=200)
        counters = engine.counters()[0]
    assert_added(lat, 5 * MS)
    assert counters["delayed_packets"] == 200
    assert not our_tables(pair.client_ns)
    assert not list((run_dir / "runs").glob("*.json"))
    assert_undelayed(one_way(pair, count=100))  # the flow is back to normal


@contextlib.contextmanager
def udp_sockets(pair, *, port: int = 9000, timeout_s: float):
    """(receiving socket bound to server:port, sending socket in the client's namespace, that address)."""
    dst = (str(pair.server.ipv4.ip), port)
    rx = socket_in(pair.server_ns, socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket_in(pair.client_ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(dst)
        rx.settimeout(timeout_s)
        yield rx, tx, dst
    finally:
        rx.close()
        tx.close()


def test_a_normal_end_releases_every_held_packet_at_once(pair, engines):
    baseline(pair)
    engine = engines({"delay_ns": 2000 * MS})
    with udp_sockets(pair, timeout_s=1.0) as (rx, tx, dst):
        for seq in range(200):
            tx.sendto(STAMP.pack(seq, time.monotonic_ns()), dst)
        time.sleep(0.2)
        stopped = time.monotonic()
        counters = engine.stop()["0"]  # 2 s before their release time
        got = 0
        while got < 200:
            rx.recv(64)
            got += 1
        assert time.monotonic() - stopped < 1.5
    assert counters["queued_packets"] == 200 and not our_tables(pair.client_ns)


@pytest.mark.parametrize("direction,size", [("ingress", 64), ("egress", 64), ("egress", 3000)])
def test_a_stop_during_holds_loses_no_datagram(pair, engines, direction, size):
    """Datagrams flow before, across and after a normal end: each one reaches the receiver exactly once.

    Held as they are (ingress, and egress datagrams longer than the MTU) they were all lost before: deleting
    the table unregisters its hooks, and the kernel then drops every packet still queued in the namespace."""
    client, server = str(pair.client.ipv4.ip), str(pair.server.ipv4.ip)
    if direction == "ingress":  # the flow's replies server:9000 -> client:9500, held as they arrive
        rx_ns, (dst, port), tx_ns, (src, src_port) = pair.client_ns, (client, 9500), pair.server_ns, (server, 9000)
    else:
        rx_ns, (dst, port), tx_ns, (src, src_port) = pair.server_ns, (server, 9000), pair.client_ns, (client, 0)
    count, rate = 2400, 2000.0  # 1.2 s; the run ends at 0.6 s with ~600 datagrams held

    def send(n: int) -> None:
        # a datagram held as it is stays charged to its sender: room for 0.3 s of them
        send_udp(tx_ns, dst, port, n, rate, size=size, src=src, src_port=src_port, sndbuf_bytes=32 << 20)

    rx = UdpReceiver(rx_ns, dst, port).start()
    try:
        send(1)  # neighbours resolved first: an unresolved one queues 3 packets, drops more
        deadline = time.monotonic() + 5
        while rx.received < 1:
            assert time.monotonic() < deadline, "the warm-up datagram did not arrive"
            time.sleep(0.01)
        warm = rx.received
        engine = engines({"delay_ns": 300 * MS}, direction=direction)
        counters: dict = {}
        held_at_stop: list[int] = []

        def stop() -> None:
            # what has been sent by now on send_udp's schedule and not yet arrived is held
            held_at_stop.append(min(count, int((time.monotonic() - start) * rate)) - (rx.received - warm))
            counters.update(engine.stop()["0"])
        stopper = threading.Timer(0.6, stop)
        start = time.monotonic()
        stopper.start()
        send(count)
        stopper.join(timeout=30)
        deadline = time.monotonic() + 5
        while rx.received - warm < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rx.stop(drain_s=0.2)  # a duplicate would come now
    got = rx.sequences[warm:]
    assert counters, "the engine did not stop"
    print(f"held at the stop: ~{held_at_stop[0]}; received {len(got)} of {count}; engine: {counters}")
    assert held_at_stop[0] > 200 and counters["queued_packets"] > 200, "nothing was held when the run ended"
    missing = sorted(set(range(count)) - set(got))
    assert not missing, f"{len(missing)} of {count} datagrams lost across the stop (first {missing[:10]})"
    assert len(got) == count and rx.corrupted == 0, f"{len(got) - count} duplicates, {rx.corrupted} corrupted"
    assert not our_tables(pair.client_ns)


def test_datagrams_longer_than_the_mtu_are_delayed_not_lost(pair, engines):
    """Local datagrams are fragmented after our hook: longer than the MTU, they are held rather than copied
    (a raw socket would refuse to send the copy)."""
    baseline(pair)
    engine = engines({"delay_ns": 10 * MS})
    with udp_sockets(pair, timeout_s=2.0) as (rx, tx, dst):
        for size in (100, 1472, 3000, 9000, 60000):
            t0 = time.monotonic()
            tx.sendto(bytes(size), dst)
            assert len(rx.recv(65536)) == size
            assert time.monotonic() - t0 > 0.0095
    counters = engine.stop()["0"]
    assert counters["resend_errors"] == 0 and counters["delayed_packets"] == 5


def test_sigkill_lets_the_flow_pass_at_once_and_sweep_removes_the_table(pair, engines, run_dir):
    engine = engines({"delay_ns": 50 * MS})
    assert statistics.median(one_way(pair, count=100)) > 50 * MS
    table = nftables.table_name(engine.run_id)
    os.kill(engine.proc.pid, signal.SIGKILL)
    engine.proc.wait()
    # no process holds the queue: the bypass flag lets every packet through, undelayed, from now on
    after = one_way(pair, count=300)
    assert len(after) == 300
    assert_undelayed(after)
    assert our_tables(pair.client_ns) == [table], "only bypass ended the fault: the table is still there"
    report = sweep()
    assert report.swept_runs == [engine.run_id]
    assert not our_tables(pair.client_ns)
    assert not list((run_dir / "runs").glob("*.json"))


def test_check_refuses_before_any_change(pair):
    iface = Interface(pair.client.ifname, pair.client_ns)
    flow = parse_flow(f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp")
    engine = UserspaceEngine()
    with pytest.raises(InvalidSpec, match="not --loss"):
        engine.check(build_plan([(flow, iface)], FaultSpec(delay_ns=MS, loss_ratio=0.1), duration_ns=10**9))
    with pytest.raises(InvalidSpec, match="not --rate"):
        engine.check(build_plan([(flow, iface)], FaultSpec(delay_ns=MS, rate_bps=10**6), duration_ns=10**9))
    with pytest.raises(Unsupported, match="does not exist"):
        engine.check(build_plan([(flow, Interface("nosuch0", pair.client_ns))], FaultSpec(delay_ns=MS),
                                duration_ns=10**9))
    engine.check(build_plan([(flow, iface)], FaultSpec(delay_ns=MS), duration_ns=10**9))
    assert not our_tables(pair.client_ns)


def test_jitter_draws_are_seeded_and_follow_netem_shapes():
    import random

    def draws(fault: FaultSpec, seed: int, n: int = 20000) -> list[int]:
        model = JitterModel(fault)
        state = RuleState(rule=None, queue=0, rng=random.Random(seed))
        return [model.draw(state) for _ in range(n)]

    uniform = FaultSpec(delay_ns=10 * MS, jitter_ns=2 * MS)
    assert draws(uniform, 1) == draws(uniform, 1) != draws(uniform, 2)
    values = draws(uniform, 1)
    assert 8 * MS <= min(values) and max(values) <= 12 * MS
    normal = draws(FaultSpec(delay_ns=10 * MS, jitter_ns=2 * MS, distribution="normal"), 3)
    assert abs(statistics.mean(normal) - 10 * MS) < 0.1 * MS and abs(statistics.stdev(normal) - 2 * MS) < 0.1 * MS
    pareto = draws(FaultSpec(delay_ns=10 * MS, jitter_ns=2 * MS, distribution="pareto"), 4)
    assert min(pareto) >= 10 * MS - 2 * MS * 2 / 3 - 1 and statistics.median(pareto) < 10 * MS  # right-skewed
    assert max(draws(FaultSpec(delay_ns=MS, jitter_ns=5 * MS, distribution="normal"), 5)) >= 0
    assert min(draws(FaultSpec(delay_ns=MS, jitter_ns=5 * MS, distribution="normal"), 5)) == 0  # clipped
    correlated = draws(FaultSpec(delay_ns=10 * MS, jitter_ns=2 * MS, delay_correlation_ratio=0.9), 6)
    steps = [abs(a - b) for a, b in zip(correlated, correlated[1:])]
    independent = [abs(a - b) for a, b in zip(values, values[1:])]
    assert statistics.mean(steps) < statistics.mean(independent) / 3
