"""Every netem feature the README lists, on the wire: packets between two namespaces of the test VM through the
injector's netem engine (the plan the CLI builds: one flow per fault, each on its own port, one netem leaf each),
the receiver's count against the request, and the interface exactly as before afterwards.

Tolerances come from the sample size, each stated where it is used: shares are judged with a binomial window
(z = 3.89: a correct engine fails one check in 10,000), quantiles with the order statistics that bracket them
(distribution-free, same level), plus the path's own latency under TCG for delays (README "Achieved hold":
netem never releases early; the veth crossing and the VM's timer slop only add, a few ms at most)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import pytest

from chaosinject.engines.netem import NetemEngine
from chaosinject.errors import ApplyFailed
from chaosinject.kernel.owner import KernelOwner
from chaosinject.plan import Interface, build_plan
from chaosinject.spec import FaultSpec, parse_flow
from nslab import binomial_window, netem_table_quantile, qdisc_text, quantile_ranks, wire

pytestmark = pytest.mark.kernel
PATH_MS = (-0.5, 3.0)      # measured one-way delay minus netem's draw: never early; veth + TCG slop add < 3 ms
ETH_IP_UDP = 14 + 20 + 8   # what netem sees in front of the payload at a veth's egress root


@contextlib.contextmanager
def faults(pair, per_port: dict[int, FaultSpec]):
    """One run of the netem engine with fault per_port[p] on the flow A -> B:p/udp; yields (engine, dst)."""
    a, _b, end_a, end_b = pair
    src, dst = str(end_a.ipv4.ip), str(end_b.ipv4.ip)
    iface = Interface(end_a.ifname, a)
    targets = [(parse_flow(f"{src}->{dst}:{port}/udp"), iface, fault) for port, fault in per_port.items()]
    plan = build_plan(targets, duration_ns=300 * 10**9, engine="netem")
    before = qdisc_text(a, end_a.ifname)
    engine = NetemEngine()
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        engine.apply(plan, owner, time.monotonic_ns() + 300 * 10**9)
        assert "netem" in qdisc_text(a, end_a.ifname)
        yield engine, dst
    assert qdisc_text(a, end_a.ifname) == before, "the interface is exactly as before the run"


def share_ok(k: int, n: int, p: float, what: str) -> None:
    low, high = binomial_window(n, p)
    print(f"{what}: {k}/{n} = {k / n:.4f}, requested {p:.2f}, window [{low:.4f}, {high:.4f}]")
    assert low <= k / n <= high, (what, k, n, p)


def test_duplicate_share_and_a_duplicating_leaf_stays_alone(engine_pair):
    a, b, end_a, _ = engine_pair
    n = 1500
    with faults(engine_pair, {9100: FaultSpec(duplicate_ratio=0.2)}) as (_engine, dst):
        dup = wire(a, b, dst, 9100, n, 1000.0)
    # every datagram arrives, a share of them twice
    seqs = [x.seq for x in dup]
    assert None not in seqs and set(seqs) == set(range(n)), "duplicate alone neither loses nor alters"
    share_ok(len(seqs) - n, n, 0.2, "duplicated")
    # Kernels with the 2025 fix "net/sched: Restrict conditions for adding duplicating netems to qdisc tree"
    # (Debian 6.1.0-57 has it) refuse a duplicating netem beside another netem in one tree: the run fails before
    # any packet is touched and leaves the interface as it was. (A kernel without it builds the tree; either way
    # nothing stays.)
    before = qdisc_text(a, end_a.ifname)
    try:
        with faults(engine_pair, {9100: FaultSpec(duplicate_ratio=0.2), 9102: FaultSpec(loss_ratio=0.2)}):
            print(f"kernel {os.uname().release}: a duplicating netem beside another one is accepted")
    except ApplyFailed as exc:
        assert "Invalid argument" in str(exc), exc
        print(f"kernel {os.uname().release}: a duplicating netem beside another one is refused: {exc}")
    assert qdisc_text(a, end_a.ifname) == before


def test_corrupt_and_loss_shares(engine_pair):
    a, b, _, _ = engine_pair
    n, size = 1500, 1000
    with faults(engine_pair, {9101: FaultSpec(corrupt_ratio=0.2), 9102: FaultSpec(loss_ratio=0.2)}) \
            as (engine, dst):
        cor = wire(a, b, dst, 9101, n, 1000.0, size=size)
        lost = wire(a, b, dst, 9102, n, 1000.0)
        control = wire(a, b, dst, 9103, 300, 1000.0, size=size)
        drops = sum(c["dropped_packets"] for c in engine.counters().values())
    # corrupt: netem flips one bit anywhere in the frame's linear data (Ethernet, IP, UDP headers or payload).
    # netem computes the checksum before the flip, so the receiver's IP and UDP checksums drop most altered
    # frames (6.1 VM: all of them went missing); a flip in the payload that got through would arrive altered
    # (checked: CRC + fill pattern); a few header flips go unseen (source MAC). So the affected share, altered
    # plus missing, lies between P * payload/frame (payload flips alone) and P (every flip seen).
    altered = sum(x.seq is None for x in cor)
    missing = n - len({x.seq for x in cor if x.seq is not None})
    low, _ = binomial_window(n, 0.2 * size / (size + ETH_IP_UDP))
    _, high = binomial_window(n, 0.2)
    seen = (altered + missing) / n
    print(f"corrupted: {altered} altered + {missing} missing of {n} = {seen:.4f}, window [{low:.4f}, {high:.4f}]")
    assert low <= seen <= high
    # loss: the receiver's count and netem's drop counter agree
    got = {x.seq for x in lost}
    share_ok(n - len(got), n, 0.2, "lost")
    assert drops == n - len(got), (drops, n - len(got))
    # a port without a fault: all there, none altered, none twice
    assert sorted(x.seq for x in control) == list(range(300))


def test_reorder_and_rate(engine_pair):
    a, b, _, _ = engine_pair
    n, size, rate_bps = 800, 1000, 1_000_000
    with faults(engine_pair, {9110: FaultSpec(delay_ns=40_000_000, reorder_ratio=0.25),
                              9111: FaultSpec(rate_bps=rate_bps)}) as (_engine, dst):
        reo = wire(a, b, dst, 9110, n, 200.0, drain_s=0.5)
        k = 80
        rated = wire(a, b, dst, 9111, k, 5000.0, size=size, drain_s=1.5)
    # reorder (gap 1): each datagram goes out at once with probability P, else after the delay; sent 5 ms apart,
    # the prompt ones overtake delayed ones
    assert sorted(x.seq for x in reo) == list(range(n))
    prompt = sum(x.one_way_ms < 20 for x in reo)
    share_ok(prompt, n, 0.25, "sent at once (reordered)")
    late = [x.one_way_ms for x in reo if x.one_way_ms >= 20]
    assert 40 + PATH_MS[0] <= statistics.median(late) <= 40 + PATH_MS[1] + 5, statistics.median(late)
    order = [x.seq for x in reo]
    overtaken = sum(1 for i in range(1, n) if order[i] < order[i - 1])
    assert overtaken > 0.1 * n, overtaken
    # rate: a burst leaves one frame (payload + UDP/IP/Ethernet headers) per frame_bits / rate seconds. The span
    # from the first to the last arrival covers k-1 gaps; the kernel's receive stamps of the two ends err by the
    # VM's timer slop (< 5 ms each under TCG) on a span of ~660 ms: 2 %.
    assert sorted(x.seq for x in rated) == list(range(k))
    gap_ms = (rated[-1].arrived_ns - rated[0].arrived_ns) / 1e6 / (k - 1)
    expected_ms = (size + ETH_IP_UDP) * 8 / rate_bps * 1e3
    print(f"rate {rate_bps} bit/s: {gap_ms:.3f} ms per {size + ETH_IP_UDP}-byte frame, expected {expected_ms:.3f}")
    assert abs(gap_ms - expected_ms) <= 0.02 * expected_ms, (gap_ms, expected_ms)


@pytest.mark.parametrize("distribution", ["normal", "pareto", "paretonormal"])
def test_delay_distribution_quantiles(engine_pair, distribution):
    """Delay 60 ms, jitter 10 ms from netem's table: the measured 10th, 50th and 90th percentiles bracket the
    table's own (iproute2's file), within the order statistics' window and the path's latency."""
    a, b, _, _ = engine_pair
    n, mu, sigma = 600, 60.0, 10.0
    with faults(engine_pair, {9120: FaultSpec(delay_ns=int(mu * 1e6), jitter_ns=int(sigma * 1e6),
                                              distribution=distribution)}) as (_engine, dst):
        got = wire(a, b, dst, 9120, n, 200.0, drain_s=1.0)
    assert sorted(x.seq for x in got) == list(range(n))
    ms = sorted(x.one_way_ms for x in got)
    for q in (0.1, 0.5, 0.9):
        expected = mu + sigma * netem_table_quantile(distribution, q)
        lo, hi = quantile_ranks(n, q)
        print(f"{distribution} q{q:.1f}: expected {expected:.2f} ms, sample {ms[int(q * n)]:.2f}, "
              f"window [{ms[lo]:.2f}, {ms[hi]:.2f}] ms")
        assert ms[lo] <= expected + PATH_MS[1] and ms[hi] >= expected + PATH_MS[0], (q, expected, ms[lo], ms[hi])


@pytest.mark.xfail(strict=True, reason="netem (6.1) draws a uniform jitter as rnd % (2 * jitter): the modulo "
                   "undoes its correlated generator, so consecutive delays come out uncorrelated (measured lag-1 "
                   "autocorrelation 0.001 for 75 % asked, n=600); strict: passing on some kernel fails the run")
def test_delay_correlation(engine_pair):
    """--correlation with uniform jitter: consecutive delays (in send order) correlate as asked."""
    a, b, _, _ = engine_pair
    n = 600
    with faults(engine_pair, {9130: FaultSpec(delay_ns=60_000_000, jitter_ns=10_000_000,
                                              delay_correlation_ratio=0.75),
                              9131: FaultSpec(delay_ns=60_000_000, jitter_ns=10_000_000)}) as (_engine, dst):
        corr = wire(a, b, dst, 9130, n, 200.0, drain_s=1.0)
        free = wire(a, b, dst, 9131, n, 200.0, drain_s=1.0)

    def lag1(arrivals):
        d = [x.one_way_ms for x in sorted(arrivals, key=lambda x: x.seq)]
        m = statistics.fmean(d)
        num = sum((d[i] - m) * (d[i - 1] - m) for i in range(1, len(d)))
        return num / sum((v - m) ** 2 for v in d)

    r_corr, r_free = lag1(corr), lag1(free)
    print(f"lag-1 autocorrelation: correlation 75 % -> {r_corr:.3f}, none -> {r_free:.3f} (n={n}, "
          f"sd under independence {1 / n ** 0.5:.3f})")
    assert abs(r_free) <= 3.89 / n ** 0.5
    assert r_corr >= 0.75 - 3.89 / n ** 0.5, r_corr
