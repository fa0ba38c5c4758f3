"""The EDT engine inside a kernel with sch_fq (the test VM): delay and jitter from the classifier, held by fq."""

from __future__ import annotations

import statistics
import subprocess
import time

import numpy as np
import pytest

from injector.engines.edt import EdtEngine
from injector.kernel.owner import KernelOwner
from injector.lab.traffic import UdpReceiver, send_udp
from injector.plan import Interface, build_plan
from injector.spec import FaultSpec, parse_flow
from nslab import qdisc_text

pytestmark = pytest.mark.kernel
DELAY_TOLERANCE_MS = (-1.0, 8.0)  # as for netem under TCG (tests/kernel/test_netem_engine.py)


def test_edt_delay_and_jitter_without_reordering_then_lease_expiry_and_exact_restore(engine_pair):
    a, b, end_a, end_b = engine_pair
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
        delayed_count = sum(c["delayed_packets"] for c in engine.counters().values())
        engine.renew(time.monotonic_ns() - 1)  # the lease ends, as if the injector had died
        after_lease = UdpReceiver(b, dst, 9000).start()
        send_udp(a, dst, 9000, 50, 100.0)
        after_lease.stop(drain_s=0.3)
    one_way = np.array(rx.latencies_ns) / 1e6
    low, high = DELAY_TOLERANCE_MS
    assert len(one_way) == 150 and delayed_count == 150
    assert 50 + low <= float(np.median(one_way)) <= 50 + high, np.median(one_way)
    p10, p90 = np.percentile(one_way, [10, 90])
    assert 3.0 < p90 - p10 < 30.0, (p10, p90)  # normal, sigma 5 ms: ~12.8 ms between p10 and p90
    assert rx.sequences == sorted(rx.sequences), "jitter must not reorder the flow"
    assert statistics.median(ns / 1e6 for ns in control.latencies_ns) < 5
    assert statistics.median(ns / 1e6 for ns in after_lease.latencies_ns) < 5
    assert qdisc_text(a, end_a.ifname) == before
