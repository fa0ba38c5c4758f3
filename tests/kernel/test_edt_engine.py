"""The EDT engine inside a kernel with sch_fq (the test VM): delay and jitter from the classifier, held by fq."""

from __future__ import annotations

import os
import statistics
import subprocess
import time

import numpy as np
import pytest

from chaosinject.engines.edt import EdtEngine
from chaosinject.kernel.owner import KernelOwner
from chaosinject.lab.traffic import UdpReceiver, send_udp
from chaosinject.plan import Interface, build_plan
from chaosinject.spec import FaultSpec, parse_flow
from nslab import assert_kernel_hold, qdisc_text

pytestmark = pytest.mark.kernel
DELAY_TOLERANCE_MS = (-1.0, 8.0)
# Debian 11's 5.10: the seeded classifier (CI_SEEDED, act mode) is refused by its verifier ("Failed to load BPF program
# b'ci_egress': Invalid argument", with or without the hold recording; unseeded and netem's steer mode load). The
# likely cause (not yet confirmed by a verifier log): the seeded draw index reads the result of __sync_fetch_and_add,
# an atomic fetch (BPF_FETCH) that came in Linux 5.12.
needs_seeded_classifier = pytest.mark.skipif(
    tuple(int(x) for x in os.uname().release.split(".")[:2]) < (5, 12),
    reason=f"kernel {os.uname().release} refuses the seeded classifier (EINVAL at load; likely its seeded draws' "
           "BPF atomic fetch-and-add, Linux 5.12+)")  # as for netem under TCG (tests/kernel/test_netem_engine.py)


def receive_on_one_cpu(ns: str, ifname: str) -> None:
    """Steer every packet the veth end receives to CPU 0's backlog (RPS), as one NIC queue delivers a flow.

    A veth delivers on the backlog of the CPU that transmitted: fq releases a flow's packets in order, but some
    from the sender's CPU and some from its watchdog timer's, and two backlogs drain independently, so on a
    loaded machine (a TCG guest whose vCPU stalls) two packets released ~1 ms apart can swap at the receiver. The
    test checks the order fq releases, not veth's delivery across CPUs."""
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", f"echo 1 > /sys/class/net/{ifname}/queues/rx-0/rps_cpus"],
                   check=True)


@needs_seeded_classifier
def test_edt_delay_and_jitter_without_reordering_then_lease_expiry_and_exact_restore(engine_pair):
    a, b, end_a, end_b = engine_pair
    receive_on_one_cpu(b, end_b.ifname)
    subprocess.run(["tc", "-n", a, "qdisc", "add", "dev", end_a.ifname, "root", "handle", "78:", "tbf", "rate",
                    "100mbit", "burst", "64kb", "latency", "50ms"], check=True)
    before = qdisc_text(a, end_a.ifname)
    dst = str(end_b.ipv4.ip)
    fault = FaultSpec(delay_ns=50_000_000, jitter_ns=5_000_000, distribution="normal")
    plan = build_plan([(parse_flow(f"{end_a.ipv4.ip}->{dst}:9000/udp"), Interface(end_a.ifname, a))], fault,
                      duration_ns=300 * 10**9, seed=1, engine="edt")
    engine = EdtEngine()
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        engine.apply(plan, owner, time.monotonic_ns() + 300 * 10**9)
        assert "qdisc fq c1c0:" in qdisc_text(a, end_a.ifname)
        rx = UdpReceiver(b, dst, 9000).start()
        send_udp(a, dst, 9000, 150, 100.0)
        rx.stop(drain_s=0.5)
        control = UdpReceiver(b, dst, 9001).start()
        send_udp(a, dst, 9001, 80, 100.0)
        control.stop(drain_s=0.3)
        (hold,) = engine.counters().values()
        delayed_count = hold["delayed_packets"]
        engine.renew(time.monotonic_ns() - 1)  # the lease ends, as if the injector had died
        after_lease = UdpReceiver(b, dst, 9000).start()
        send_udp(a, dst, 9000, 50, 100.0)
        after_lease.stop(drain_s=0.3)
    one_way = np.array(rx.latencies_ns) / 1e6
    low, high = DELAY_TOLERANCE_MS
    assert len(one_way) == 150 and delayed_count == 150
    assert 50 + low <= float(np.median(one_way)) <= 50 + high, np.median(one_way)
    assert_kernel_hold(hold, 50.0, 150, float(np.median(one_way)), jitter_sigma_ms=5.0)   # jitter is symmetric: its median is 50 ms
    p10, p90 = np.percentile(one_way, [10, 90])
    assert 3.0 < p90 - p10 < 30.0, (p10, p90)  # normal, sigma 5 ms: ~12.8 ms between p10 and p90
    assert rx.sequences == sorted(rx.sequences), "jitter must not reorder the flow"
    assert statistics.median(ns / 1e6 for ns in control.latencies_ns) < 5
    assert statistics.median(ns / 1e6 for ns in after_lease.latencies_ns) < 5
    assert qdisc_text(a, end_a.ifname) == before


def test_edt_ingress_through_our_ifb_and_nothing_left(engine_pair):
    """Flow A->B:9000, direction ingress, on A: the replies from B:9000 are held by the fq root of our IFB."""
    a, b, end_a, end_b = engine_pair
    a_ip, b_ip = str(end_a.ipv4.ip), str(end_b.ipv4.ip)
    links_before = subprocess.run(["ip", "-n", a, "-o", "link"], capture_output=True, text=True).stdout
    plan = build_plan([(parse_flow(f"{a_ip}->{b_ip}:9000/udp"), Interface(end_a.ifname, a))],
                      FaultSpec(delay_ns=40_000_000), direction="ingress", duration_ns=300 * 10**9, engine="edt")

    def replies_ms(src_port, dst_port):
        rx = UdpReceiver(a, a_ip, dst_port).start()
        send_udp(b, a_ip, dst_port, 60, 100.0, src=b_ip, src_port=src_port)
        rx.stop(drain_s=0.5)
        return [ns / 1e6 for ns in rx.latencies_ns]

    engine = EdtEngine()
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        engine.apply(plan, owner, time.monotonic_ns() + 300 * 10**9)
        delayed, other = replies_ms(9000, 7000), replies_ms(9001, 7001)
        counted = sum(c["delayed_packets"] for c in engine.counters().values())
    low, high = DELAY_TOLERANCE_MS
    assert len(delayed) == 60 and counted == 60, (len(delayed), counted)
    assert 40 + low <= statistics.median(delayed) <= 40 + high, statistics.median(delayed)
    assert statistics.median(other) < 5
    assert subprocess.run(["ip", "-n", a, "-o", "link"], capture_output=True, text=True).stdout == links_before
    assert "clsact" not in qdisc_text(a, end_a.ifname)


@needs_seeded_classifier
def test_edt_flows_with_their_own_faults_and_ge_loss(engine_pair):
    from chaosinject.spec import parse_loss_burst

    a, b, end_a, end_b = engine_pair
    src, dst = str(end_a.ipv4.ip), str(end_b.ipv4.ip)
    iface = Interface(end_a.ifname, a)
    ge = parse_loss_burst("5%,25%")
    plan = build_plan([(parse_flow(f"{src}->{dst}:9000/udp"), iface, FaultSpec(delay_ns=20_000_000)),
                       (parse_flow(f"{src}->{dst}:9001/udp"), iface, FaultSpec(delay_ns=60_000_000)),
                       (parse_flow(f"{src}->{dst}:9002/udp"), iface, FaultSpec(loss_burst=ge))],
                      duration_ns=300 * 10**9, seed=3, engine="edt")
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        EdtEngine().apply(plan, owner, time.monotonic_ns() + 300 * 10**9)
        medians = {}
        for port in (9000, 9001, 9003):
            rx = UdpReceiver(b, dst, port).start()
            send_udp(a, dst, port, 60, 100.0)
            rx.stop(drain_s=0.5)
            medians[port] = statistics.median(ns / 1e6 for ns in rx.latencies_ns)
        lossy = UdpReceiver(b, dst, 9002).start()
        send_udp(a, dst, 9002, 5000, 2000.0)
        lossy.stop(drain_s=0.5)
    low, high = DELAY_TOLERANCE_MS
    assert 20 + low <= medians[9000] <= 20 + high and 60 + low <= medians[9001] <= 60 + high, medians
    assert medians[9003] < 5, medians
    lost = 1 - lossy.received / 5000
    pi, lam = ge.bad_state_ratio, 1 - ge.p - ge.r
    sd = np.sqrt(pi * (1 - pi) / 5000 * (1 + lam) / (1 - lam))
    assert abs(lost - ge.expected_loss_ratio) <= 3.29 * sd, (lost, ge.expected_loss_ratio)


def test_cli_edt_kill_9_lease_expiry_and_sweep(engine_pair, tmp_path):
    import os
    import signal
    import sys

    a, b, end_a, end_b = engine_pair
    dst = str(end_b.ipv4.ip)
    before = qdisc_text(a, end_a.ifname)
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen([sys.executable, "-m", "chaosinject.cli", "--flow", f"{end_a.ipv4.ip}->{dst}:9000/udp",
                             "--netns", a, "--delay", "40ms", "--engine", "edt", "--duration", "600s", "--lease",
                             "2s", "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "run").glob("runs/*.status.json")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the CLI did not become active"
            time.sleep(0.5)
        rx = UdpReceiver(b, dst, 9000).start()
        send_udp(a, dst, 9000, 60, 100.0)
        rx.stop(drain_s=0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(3.0)
        assert "qdisc fq c1c0:" in qdisc_text(a, end_a.ifname), "still attached: only the lease ended the fault"
        after = UdpReceiver(b, dst, 9000).start()
        send_udp(a, dst, 9000, 40, 100.0)
        after.stop(drain_s=0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    low, high = DELAY_TOLERANCE_MS
    assert 40 + low <= statistics.median(ns / 1e6 for ns in rx.latencies_ns) <= 40 + high
    assert statistics.median(ns / 1e6 for ns in after.latencies_ns) < 5
    swept = subprocess.run([sys.executable, "-m", "chaosinject.cli", "sweep"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert swept.returncode == 0 and "swept 1 dead run" in swept.stdout, swept.stdout + swept.stderr
    assert qdisc_text(a, end_a.ifname) == before
