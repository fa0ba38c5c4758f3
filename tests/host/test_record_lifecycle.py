"""Recording beside the eBPF engine (its drops seen independently: stamped but never matched), IPv6, and a
recorder's process killed with SIGKILL leaving nothing attached (BPF links die with their process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chaosinject.analysis import proportion_ci
from chaosinject.lab.traffic import UdpReceiver, send_udp
from chaosinject.plan import Interface
from chaosinject.record import OneWayRecorder, PacketFlow
from chaosinject.spec import FaultSpec

from .conftest import injected
from .test_record_oneway import clean_bpf, links_of, loaded  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


def _filters(netns: str, ifname: str, hook: str = "egress") -> list[str]:
    return subprocess.run(["tc", "-n", netns, "filter", "show", "dev", ifname, hook], capture_output=True,
                          text=True).stdout.splitlines()


@pytest.mark.parametrize("tc_mode", ["auto", "clsact"])
def test_ebpf_loss_is_seen_by_the_recorder_as_stamped_but_never_received(pair, clean_bpf, tc_mode, run_dir):
    """tc_mode clsact: the fallback for kernels without tcx (< 6.6), forced here; the recorder's filter comes
    first (lowest free priority) and passes every packet on to the engine's."""
    server_ip = str(pair.server.ipv4.ip)
    flow = PacketFlow("c->s", str(pair.client.ipv4.ip), server_ip, dport=9000, protocol="udp")
    rec = OneWayRecorder([flow], sender=pair.client_iface, receiver=Interface(pair.server.ifname, pair.server_ns),
                         tc_mode=tc_mode)
    send_udp(pair.client_ns, server_ip, 9000, 10, 100.0)  # neighbours resolved first
    with rec, injected(f"{pair.client.ipv4.ip}->{server_ip}:9000/udp", FaultSpec(loss_ratio=0.3), pair.client_iface,
                       seed=5) as engine:
        rx = UdpReceiver(pair.server_ns, server_ip, 9000).start()
        send_udp(pair.client_ns, server_ip, 9000, 5000, 5000.0)
        time.sleep(0.1)
        rx.stop()
        kernel = engine.counters()[0]
        if tc_mode == "clsact":
            assert rec.attached_as == "clsact" and list(run_dir.glob("runs/record-*.json"))  # owned, sweepable
            assert any("chaos-inject-rec:" in line for line in _filters(pair.client_ns, pair.client.ifname))
    c = rec.counters()[0]
    assert not any("chaos-inject-rec:" in line for line in _filters(pair.client_ns, pair.client.ifname))
    assert not any("chaos-inject-rec:" in line for line in _filters(pair.server_ns, pair.server.ifname, "ingress"))
    assert "clsact" not in subprocess.run(["tc", "-n", pair.server_ns, "qdisc", "show", "dev", pair.server.ifname],
                                          capture_output=True, text=True).stdout  # the one we made is gone
    # tcx runs before the classifier's cls_bpf: every packet is stamped, the dropped ones never arrive
    assert c["stamped"] == kernel["matched_packets"] == 5000
    assert c["matched"] == rx.received == 5000 - kernel["dropped_packets"]
    ci = proportion_ci(c["stamped"] - c["matched"], c["stamped"], 0.999, "clopper-pearson")  # as the loss tests
    assert ci.low <= 0.3 <= ci.high
    lat = rec.events_array()["latency_ns"]
    assert len(lat) == c["matched"] and np.median(lat) < 200_000  # loss adds no delay to what arrives


def test_ipv6_one_way(pair, clean_bpf):
    server_ip = str(pair.server.ipv6.ip)
    flow = PacketFlow("c->s v6", str(pair.client.ipv6.ip), server_ip, dport=9000, protocol="udp")
    send_udp(pair.client_ns, server_ip, 9000, 10, 100.0)
    with OneWayRecorder([flow], sender=pair.client_iface,
                        receiver=Interface(pair.server.ifname, pair.server_ns)) as rec:
        rx = UdpReceiver(pair.server_ns, server_ip, 9000).start()
        send_udp(pair.client_ns, server_ip, 9000, 1000, 2000.0)
        time.sleep(0.1)
        rx.stop()
    c = rec.counters()[0]
    assert c["stamped"] == 1000 and c["matched"] == rx.received == 1000 and c["lost"] == 0
    assert 0 < np.median(rec.events_array()["latency_ns"]) < 200_000


CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from chaosinject.plan import Interface
from chaosinject.record import OneWayRecorder, PacketFlow
rec = OneWayRecorder([PacketFlow("x", sys.argv[2], sys.argv[3], protocol="udp")],
                     sender=Interface(sys.argv[4], sys.argv[5]), receiver=Interface(sys.argv[6], sys.argv[7]))
rec.start()
print("ready", *rec._program.prog_ids(), flush=True)
time.sleep(600)
"""


def test_a_killed_recorder_leaves_no_program_or_link(pair):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), str(pair.client.ipv4.ip),
                             str(pair.server.ipv4.ip), pair.client.ifname, pair.client_ns, pair.server.ifname,
                             pair.server_ns], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line and line[0] == "ready", proc.stderr.read()
        ids = [int(x) for x in line[1:]]
        links = links_of(ids)
        assert len(links) == 2 and {link["type"] for link in links} <= {"tcx", 11}  # 11: BPF_LINK_TYPE_TCX
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while (links_of(ids) or loaded(ids)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel frees them once the dead process's fds are released
    assert not links_of(ids) and not loaded(ids)
    out = subprocess.run(["tc", "-n", pair.client_ns, "filter", "show", "dev", pair.client.ifname, "egress"],
                         capture_output=True, text=True).stdout
    assert "cr_" not in out


def test_a_recorder_following_a_phases_object_splits_its_histograms(pair, clean_bpf, tmp_path):
    """For callers that only mark a Phases object (the experiment runner): follow() moves the kernel's phase."""
    from chaosinject.record import Phases

    server_ip = str(pair.server.ipv4.ip)
    flow = PacketFlow("c->s", str(pair.client.ipv4.ip), server_ip, dport=9000, protocol="udp")
    rec = OneWayRecorder([flow], sender=pair.client_iface, receiver=Interface(pair.server.ifname, pair.server_ns))
    phases = Phases()
    send_udp(pair.client_ns, server_ip, 9000, 10, 100.0)
    rec.follow(phases)
    rx = UdpReceiver(pair.server_ns, server_ip, 9000).start()
    with rec:
        phases.mark("baseline")
        time.sleep(0.2)
        send_udp(pair.client_ns, server_ip, 9000, 300, 3000.0)
        phases.mark("fault")
        time.sleep(0.2)  # the reader thread looks every 50 ms
        send_udp(pair.client_ns, server_ip, 9000, 200, 3000.0)
        time.sleep(0.1)
    rx.stop()
    phases.close()
    assert rec.histogram(0, "baseline").total == 300 and rec.histogram(0, "fault").total == 200
    summary = rec.write(tmp_path, phases)
    assert summary["histogram_rows"] > 0 and summary["samples"] == 500


def test_tcp_one_way_and_histogram_only_mode(pair, clean_bpf, tmp_path):
    """TCP segments are keyed by sequence (veth hands both ends the same GSO packets); events=False keeps
    only the in-kernel histograms (for rates where raw events would be too many)."""
    import socket

    from chaosinject.kernel.netns import socket_in
    from chaosinject.record import Phases

    from .test_record_rtt import echo_server

    server_ip = str(pair.server.ipv4.ip)
    server, thread = echo_server(pair.server_ns, server_ip, 9200)
    flow = PacketFlow("c->s tcp", str(pair.client.ipv4.ip), server_ip, dport=9200, protocol="tcp")
    receiver = Interface(pair.server.ifname, pair.server_ns)
    raw = OneWayRecorder([flow], sender=pair.client_iface, receiver=receiver)
    hist_only = OneWayRecorder([flow], sender=pair.client_iface, receiver=receiver, events=False)
    phases = Phases()
    hist_only.follow(phases)
    try:
        with raw, hist_only:
            phases.mark("baseline")
            client = socket_in(pair.client_ns, socket.AF_INET, socket.SOCK_STREAM)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect((server_ip, 9200))
            for _ in range(300):
                client.sendall(b"y" * 200)
                got = 0
                while got < 200:
                    got += len(client.recv(4096))
            client.sendall(b"z" * 300_000)  # bulk: GSO packets
            got = 0
            while got < 300_000:
                got += len(client.recv(1 << 16))
            client.close()
            time.sleep(0.1)
    finally:
        server.close()
        thread.join(timeout=2)
    phases.close()
    c = raw.counters()[0]
    lat = raw.events_array()["latency_ns"]
    assert c["stamped"] >= 300 and c["matched"] >= 0.99 * c["stamped"] and c["lost"] == 0
    assert 0 < np.median(lat) < 200_000
    h = hist_only.counters()[0]
    assert len(hist_only.events_array()) == 0 and h["events"] == 0 and h["matched"] == c["matched"]
    assert hist_only.histogram(0, "baseline").total == c["matched"]
    summary = hist_only.write(tmp_path, phases)
    assert summary["samples"] == 0 and summary["histogram_rows"] > 0


def test_raw_events_beyond_max_events_are_counted_not_kept():
    from chaosinject.record.bpf_recorder import BpfRecorder

    class Bench(BpfRecorder):
        source = "oneway"
        placement = "bench"

        def _attach(self, program):
            pass  # driven by BPF_PROG_TEST_RUN below

    rec = Bench([PacketFlow("x", "10.0.0.1", None)], max_events=1000)
    with rec:
        rec._program.test_run("cr_bench_event", 5000)
        while rec._program.ring.pending_bytes():
            time.sleep(0.01)
        assert rec.live()["samples"] == 1000 and rec.live()["lost"] == 4000
    assert len(rec.events_array()) == 1000 and rec.reader_dropped == 4000 and rec.lost() == 0
    assert rec.counters()[0]["events"] == 5000


def test_stop_reads_everything_left_in_the_ring():
    """More than one read's worth (MAX_BATCH) waiting at stop: all of it is read, none left behind."""
    from chaosinject.kernel.ring import MAX_BATCH
    from chaosinject.record.bpf_recorder import BpfRecorder

    class Bench(BpfRecorder):
        source = "oneway"
        placement = "bench"

        def _attach(self, program):
            pass

        def _drain(self):
            pass  # no reader thread: everything waits for stop()

    rec = Bench([PacketFlow("x", "10.0.0.1", None)], ring_pages=4096)
    rec.start()
    rec._program.test_run("cr_bench_event", 3 * MAX_BATCH + 5)
    rec.stop()
    assert len(rec.events_array()) == 3 * MAX_BATCH + 5 and rec.lost() == 0


def test_prog_test_run_runs_the_program_repeat_times_in_the_kernel():
    """The one BPF_PROG_TEST_RUN helper (benchmarks and these tests): the kernel runs the program ``repeat``
    times (its counters say so), returns its verdict and a mean time per run."""
    from chaosinject.kernel.bpf import prog_test_run
    from chaosinject.kernel.record_program import RecordConfig, RecordProgram

    program = RecordProgram(RecordConfig(ring_pages=64))
    try:
        run = prog_test_run(program.prog_fd("cr_bench_hist"), bytes(64), 300)
        assert run.retval == -1 and run.mean_ns > 0  # TC_ACT_UNSPEC
        assert program.counters()[0]["events"] == 0 and int(program.histograms()[0].sum()) == 300
        assert program.test_run("cr_bench_hist", 200) > 0 and int(program.histograms()[0].sum()) == 500
    finally:
        program.close()
