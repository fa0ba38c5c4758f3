"""Real sch_netem / sch_fq / cls_bpf in a stock Debian kernel (VM tier). See conftest.py for the rules."""

from __future__ import annotations

import os
import socket
import statistics

import pytest

from nslab import ADDRS, udp_delay, veth_pair

pytestmark = pytest.mark.kernel

# Tolerance for the delay under QEMU TCG (software CPU), from measurements (one-way A->B, netem 50 ms, 6.1 and 6.12
# guests on 2 shared host cores; baseline without netem 0.5-0.8 ms):
#   quiet host:                   median 51.3-51.6 ms, min 50.8-51.1, max 51.8-52.8
#   loaded (2 VMs + others, load 4-6): median 52.4-55.1 ms, min 50.8-51.0, max 61-124 (the whole VM stalls at times)
# Host contention only ever adds delay and netem never releases early, so:
#   - no sample below 50 ms - 0.5 ms;
#   - the lower quintile (the least disturbed samples) within 50 ms + 3 ms;
#   - the median within 50 ms + 5 ms on a quiet host; the assertion allows + 15 ms so a loaded CI host does not flake
#     (a missing or doubled delay is still caught: 0 ms or 100 ms).
DELAY_MS = 50
EARLY_SLACK_MS = 0.5
LOW_QUINTILE_TOL_MS = float(os.environ.get("CHAOS_INJECT_TCG_LOWQ_TOL_MS", "3.0"))
MEDIAN_TOL_MS = float(os.environ.get("CHAOS_INJECT_TCG_MEDIAN_TOL_MS", "15.0"))
UNDELAYED_MS = 5.0  # median one-way delay of a path without netem, with TCG overhead and load


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def qdisc_kinds(ipr, index):
    return [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=index)]


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_netem_delay_50ms_on_veth(make_netns, family):
    pair = veth_pair(make_netns("a"), make_netns("b"))
    base = udp_delay(pair, family, count=10)

    with pair.ipr("a") as ipr:
        idx = pair.index(ipr, "a")
        ipr.tc("add", "netem", index=idx, handle="1:", delay=DELAY_MS * 1000)  # pyroute2 netem delay is in µs
        assert "netem" in qdisc_kinds(ipr, idx)

    d = udp_delay(pair, family, count=40)
    print(f"\n[{ADDRS[family][0]}] baseline: {base.summary()}\n[{ADDRS[family][0]}] netem {DELAY_MS}ms: {d.summary()}"
          f" p20 {quantile(d.a_to_b_ms, 0.2):.2f}")

    # A's egress carries the delay, B's does not.
    assert min(d.a_to_b_ms) >= DELAY_MS - EARLY_SLACK_MS, d.summary()
    assert quantile(d.a_to_b_ms, 0.2) <= DELAY_MS + LOW_QUINTILE_TOL_MS, d.summary()
    assert statistics.median(d.a_to_b_ms) <= DELAY_MS + MEDIAN_TOL_MS, d.summary()
    assert statistics.median(d.b_to_a_ms) < UNDELAYED_MS, d.summary()
    assert DELAY_MS - EARLY_SLACK_MS <= quantile(d.rtt_ms, 0.2) <= DELAY_MS + LOW_QUINTILE_TOL_MS + 1, d.summary()

    with pair.ipr("a") as ipr:
        idx = pair.index(ipr, "a")
        ipr.tc("del", index=idx, handle="1:", root=True)
        assert "netem" not in qdisc_kinds(ipr, idx)
    after = udp_delay(pair, family, count=10)
    assert statistics.median(after.a_to_b_ms) < UNDELAYED_MS, after.summary()


def test_fq_qdisc_can_be_created(make_netns):
    pair = veth_pair(make_netns("fq"), make_netns("fqb"))
    with pair.ipr("a") as ipr:
        idx = pair.index(ipr, "a")
        ipr.tc("add", "fq", index=idx, handle="1:")
        assert "fq" in qdisc_kinds(ipr, idx)
        ipr.tc("del", index=idx, handle="1:", root=True)
        assert "fq" not in qdisc_kinds(ipr, idx)


TARGETED_PORT, OTHER_PORT = 5001, 5002  # UDP ports inside the test's own namespaces

# One compile for the module: clang under TCG costs ~7-15 s per BPF() object.
TC_PROGS = rb"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>

BPF_ARRAY(counts, u64, 1);

/* counts every packet it sees, lets it pass */
int count_egress(struct __sk_buff *skb) {
    int k = 0;
    u64 *v = counts.lookup(&k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return TC_ACT_OK;
}

/* UDP/IPv4 to TARGET_PORT goes to minor 20 of the filter's major (HTB class 1:20, the netem leaf);
   everything else: no verdict -> HTB default class */
int steer(struct __sk_buff *skb) {
    __u8 proto;
    __u16 dport;
    if (skb->protocol != ETH_P_IP_BE)
        return TC_ACT_UNSPEC;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1) < 0 || proto != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr) + 2, &dport, 2) < 0 || dport != TARGET_PORT_BE)
        return TC_ACT_UNSPEC;
    skb->tc_classid = 0x20;  /* minor 20; the major comes from the filter's classid (1:) */
    return TC_ACT_OK;
}
"""


@pytest.fixture(scope="module")
def tc_bpf():
    """The compiled BPF object (bcc), or a skip naming the missing headers."""
    src = os.environ.get("BCC_KERNEL_SOURCE", "")
    if not os.path.isdir(os.path.join(src, "include")):
        pytest.skip(f"no kernel headers for {os.uname().release} (BCC_KERNEL_SOURCE={src!r}); run `make setup`")
    from bcc import BPF

    b = BPF(text=TC_PROGS, cflags=[f"-DTARGET_PORT_BE={socket.htons(TARGETED_PORT)}",
                                   f"-DETH_P_IP_BE={socket.htons(0x0800)}"])
    yield b
    b.cleanup()


@pytest.mark.bcc
def test_bcc_sched_cls_attaches_on_clsact(make_netns, tc_bpf):
    from bcc import BPF

    pair = veth_pair(make_netns("bpf"), make_netns("bpfb"))
    fn = tc_bpf.load_func(b"count_egress", BPF.SCHED_CLS)
    counts = tc_bpf[b"counts"]
    counts[0] = counts.Leaf(0)
    with pair.ipr("a") as ipr:
        idx = pair.index(ipr, "a")
        ipr.tc("add", "clsact", index=idx)
        ipr.tc("add-filter", "bpf", index=idx, handle=":1", fd=fn.fd, name=fn.name,
               parent="ffff:fff3", classid=1, direct_action=True)
        filters = [f for f in ipr.get_filters(index=idx, parent=0xFFFFFFF3) if f.get_attr("TCA_KIND") == "bpf"]
        assert filters, "bpf filter not listed on clsact egress"

    udp_delay(pair, socket.AF_INET, count=10, gap_s=0)
    n = counts[0].value
    assert n >= 10, f"classifier counted {n} packets, expected >= 10"

    with pair.ipr("a") as ipr:
        idx = pair.index(ipr, "a")
        ipr.tc("del", "clsact", index=idx)
        assert "clsact" not in qdisc_kinds(ipr, idx)


@pytest.mark.bcc
def test_bpf_classid_steers_one_flow_into_netem_leaf(make_netns, tc_bpf):
    """The netem engine's kernel mechanism: HTB root, default class 1:10 plain, class 1:20 with a netem leaf, a
    cls_bpf direct-action classifier setting skb->tc_classid for the targeted flow only.
    Gotcha (measured): qdisc_skb_cb's tc_classid is 16 bits, so the program can only give the MINOR; cls_bpf ORs in
    the major of the filter's own classid. A program writing 0x10020 with no filter classid lands in default 1:10."""
    from bcc import BPF

    pair = veth_pair(make_netns("st"), make_netns("stb"))
    fn = tc_bpf.load_func(b"steer", BPF.SCHED_CLS)
    with pair.ipr("a") as ipr:
        idx = pair.index(ipr, "a")
        ipr.tc("add", "htb", index=idx, handle="1:", default=0x10)
        for minor in ("10", "20"):
            ipr.tc("add-class", "htb", index=idx, handle=f"1:{minor}", parent="1:", rate="1000mbit")
        ipr.tc("add", "netem", index=idx, handle="20:", parent="1:20", delay=DELAY_MS * 1000)
        ipr.tc("add-filter", "bpf", index=idx, handle=":1", fd=fn.fd, name=fn.name, parent="1:",
               classid=0x10000, direct_action=True)
        assert sorted(qdisc_kinds(ipr, idx)) == ["htb", "netem"]

    hit = udp_delay(pair, socket.AF_INET, count=30, b_port=TARGETED_PORT)
    miss = udp_delay(pair, socket.AF_INET, count=30, b_port=OTHER_PORT)
    print(f"\ntargeted :{TARGETED_PORT}: {hit.summary()}\nother    :{OTHER_PORT}: {miss.summary()}")

    assert min(hit.a_to_b_ms) >= DELAY_MS - EARLY_SLACK_MS, hit.summary()
    assert quantile(hit.a_to_b_ms, 0.2) <= DELAY_MS + LOW_QUINTILE_TOL_MS, hit.summary()
    assert statistics.median(hit.a_to_b_ms) <= DELAY_MS + MEDIAN_TOL_MS, hit.summary()
    assert statistics.median(miss.a_to_b_ms) < UNDELAYED_MS, miss.summary()
    assert statistics.median(hit.b_to_a_ms) < UNDELAYED_MS, hit.summary()

    with pair.ipr("a") as ipr:
        idx = pair.index(ipr, "a")
        ipr.tc("del", index=idx, handle="1:", root=True)
        assert "htb" not in qdisc_kinds(ipr, idx) and "netem" not in qdisc_kinds(ipr, idx)
