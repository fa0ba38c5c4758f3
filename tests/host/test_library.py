"""The library context managers on real traffic between throwaway namespaces: they take effect, `status` sees
them, they leave nothing behind, and an exception inside the block still rolls back."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from chaosinject import network_latency, packet_loss, partition, start_fault
from chaosinject.errors import InvalidSpec
from chaosinject.kernel import nftables
from chaosinject.kernel.ledger import Ledger, recent_finished
from chaosinject.lab.traffic import UdpReceiver, measure_one_way, send_udp

from .conftest import our_filters, qdiscs

MS = 1_000_000


def delivered(pair, port=9000, count=1000, rate=10_000.0) -> int:
    dst = str(pair.server.ipv4.ip)
    rx = UdpReceiver(pair.server_ns, dst, port).start()
    send_udp(pair.client_ns, dst, port, count, rate)
    rx.stop()
    return rx.received


def flow_of(pair, port=9000) -> str:
    return f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:{port}/udp"


def clean(pair) -> None:
    assert not our_filters(pair.client_iface), "a filter of ours outlived the block"
    assert "clsact" not in qdiscs(pair.client_iface)
    assert not Ledger.all(), "a ledger outlived the block"


def test_packet_loss_takes_effect_is_listed_and_leaves_nothing(pair, run_dir):
    with packet_loss(loss_percent=20, flow=flow_of(pair), netns=pair.client_ns, duration="60s", seed=5) as fault:
        (ledger,) = Ledger.all()
        assert ledger.meta["kind"] == "library" and ledger.owner_alive
        assert ledger.read_status()["state"] == "running"
        (shown,) = json.loads(subprocess.run([sys.executable, "-m", "chaosinject.cli", "status", "--json"],
                                             capture_output=True, text=True, check=True,
                                             env={**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}).stdout)
        assert (shown["run_id"], shown["kind"], shown["state"]) == (fault.run_id, "library", "running")
        got = delivered(pair, count=5000)
        counters = fault.counters()
    assert 0.15 < 1 - got / 5000 < 0.25
    assert counters[0]["matched_packets"] == 5000
    assert fault.state == "stopped"
    clean(pair)
    assert recent_finished()[-1]["state"] == "stopped"
    assert delivered(pair) == 1000, "traffic is whole again"


def test_an_exception_inside_the_block_still_rolls_back(pair, run_dir):
    with pytest.raises(RuntimeError, match="caller's bug"):
        with partition(flow=flow_of(pair), netns=pair.client_ns, duration="60s"):
            assert delivered(pair, count=200) == 0
            raise RuntimeError("the caller's bug")
    clean(pair)
    assert delivered(pair) == 1000


def test_the_fault_ends_at_its_duration_even_if_the_block_goes_on(pair, run_dir):
    with partition(flow=flow_of(pair), netns=pair.client_ns, duration="1s", lease="300ms") as fault:
        assert delivered(pair, count=100) == 0
        fault.wait(timeout=5)
        assert fault.state == "completed"
        clean(pair)  # undone at the deadline, not at the end of the block
        assert delivered(pair, count=200) == 200


def test_seed_style_interface_only_call(pair, run_dir):
    # the seed's form: network_latency(interface, latency_ms) -> here loss on every packet leaving the interface
    with packet_loss(pair.client.ifname, 100, netns=pair.client_ns, duration="30s"):
        assert delivered(pair, count=200) == 0
        assert delivered(pair, port=9001, count=200) == 0, "every flow through the interface"
    clean(pair)


@pytest.mark.skipif(nftables.nft_binary() is None, reason="nft missing (Debian package nftables)")
def test_network_latency_delays_the_flow_only(pair, run_dir):
    dst = str(pair.server.ipv4.ip)
    with network_latency(latency_ms=20, jitter_ms=0, flow=flow_of(pair, 9100), netns=pair.client_ns,
                         duration="60s") as fault:
        assert fault.plan.engine == "userspace"  # this kernel: no netem, no fq
        held = measure_one_way(pair.client_ns, pair.server_ns, dst, 9100, 300, 200.0)
        other = measure_one_way(pair.client_ns, pair.server_ns, dst, 9101, 300, 200.0)
    median = statistics.median(held.latencies_ns) / MS
    assert len(held.latencies_ns) == 300
    assert 20 <= median < 23, f"median one-way {median:.2f} ms for a 20 ms delay"  # never early; loaded host
    assert statistics.median(other.latencies_ns) / MS < 2, "an untargeted port is not delayed"
    assert not nftables.list_tables(pair.client_ns), "our nftables table outlived the block"
    assert not Ledger.all()


def test_bad_input_is_refused_before_any_change(pair, run_dir):
    with pytest.raises(InvalidSpec, match="loss_percent"):
        packet_loss(pair.client.ifname, 150, netns=pair.client_ns)
    with pytest.raises(InvalidSpec, match="latency_ms"):
        network_latency(pair.client.ifname, latency_ms=-3, netns=pair.client_ns)
    with pytest.raises(InvalidSpec, match="flow"):
        start_fault("nonsense", loss="1%", duration="5s", netns=pair.client_ns)
    clean(pair)
