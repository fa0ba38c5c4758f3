"""What the kernel benchmarks share besides the harness (``_common.py``): test packets, rule sets, u32 lines,
throwaway namespaces.

Benchmarks only: nothing here is imported by the product. Everything made here (namespaces, veths, qdiscs,
filters) is removed by ``BenchNet.close`` / ``release`` on every exit path; ``_common.begin`` turns signals into
exceptions so the scripts' ``finally`` blocks run.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import struct
import subprocess

import _common as C
from chaosinject.engines.rules import compile_rules
from chaosinject.plan import Interface, PlannedRule, RuleMatch
from chaosinject.spec.fault import FaultSpec

# Addresses the benchmarks give their own namespaces (nothing else is ever addressed).
BENCH_V4 = ipaddress.ip_network("10.198.0.0/24")
BENCH_V6 = ipaddress.ip_network("fd00:198::/48")
# Addresses that appear only inside rules (never configured, never sent to): RFC 2544 benchmarking range.
RULE_V4 = ipaddress.ip_network("198.18.0.0/15")
RULE_PORT = 7000
FAR_FUTURE_NS = 2**63  # rule expiry (CLOCK_MONOTONIC): never expires during a benchmark


# -- test packets (BPF_PROG_TEST_RUN itself: chaosinject.kernel.bpf.prog_test_run) ----------------------------------
def udp4_frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"chaos-inject bench") -> bytes:
    """Ethernet + IPv4 + UDP frame (checksums are not looked at by the classifier)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0x4000, 64, 17, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    words = struct.unpack("!10H", ip)
    csum = sum(words)
    csum = (csum & 0xFFFF) + (csum >> 16)
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack("!H", ~csum & 0xFFFF) + ip[12:]
    eth = bytes.fromhex("020000000002") + bytes.fromhex("020000000001") + b"\x08\x00"
    return eth + ip + udp


# -- rule sets ----------------------------------------------------------------------------------------------
def rule_matches(count: int, src: str, shapes: int) -> list[RuleMatch]:
    """``count`` distinct egress rules that no benchmark packet matches, spread round-robin over ``shapes``
    match shapes (1 <= shapes <= 8):
      0: udp src/32 -> dst/32 :dport      (the usual per-flow rule)
      1: udp *      -> dst/32 :dport
      2: udp src/32 -> dst/24 :dport
      3: udp src/32:sport -> dst/32 :dport
      4: udp src/32 -> dst/32             (any port)
      5: udp *      -> dst/24 :dport
      6: udp src/24 -> dst/32 :dport
      7: any protocol src/32 -> dst/32
    Destinations are in 198.18.0.0/15 (never configured anywhere); ports make keys unique past 2^17."""
    src_net = ipaddress.ip_network(f"{src}/32")
    base = int(RULE_V4.network_address)
    out = []
    for i in range(count):
        kind = i % shapes
        j = i // shapes
        if kind in (2, 5):
            dst = ipaddress.ip_network(f"{ipaddress.IPv4Address(base + ((j % 512) << 8))}/24")
            dport = RULE_PORT + j // 512
        else:
            dst = ipaddress.ip_network(f"{ipaddress.IPv4Address(base + (j % 131072))}/32")
            dport = RULE_PORT + j // 131072
        if kind == 0:
            out.append(RuleMatch("egress", 4, 17, src_net, dst, None, dport))
        elif kind == 1:
            out.append(RuleMatch("egress", 4, 17, None, dst, None, dport))
        elif kind == 2:
            out.append(RuleMatch("egress", 4, 17, src_net, dst, None, dport))
        elif kind == 3:
            out.append(RuleMatch("egress", 4, 17, src_net, dst, 50000, dport))
        elif kind == 4:  # no port: distinct keys from distinct destinations only (2^17 of them)
            out.append(RuleMatch("egress", 4, 17, src_net, dst, None, None))
        elif kind == 5:
            out.append(RuleMatch("egress", 4, 17, None, dst, None, dport))
        elif kind == 6:
            out.append(RuleMatch("egress", 4, 17, src_net.supernet(new_prefix=24), dst, None, dport))
        else:
            out.append(RuleMatch("egress", 4, 0, src_net, dst, None, None))
    return out


def compiled_rules(matches: list[RuleMatch], fault: FaultSpec | None = None):
    """Through the product's own compile_rules: (shapes, [(RuleKey, Rule)]) in the order of ``matches``."""
    fault = fault or FaultSpec(loss_ratio=0.1)
    iface = Interface("bench0")
    planned = [PlannedRule(rule_id=i, flow="bench", interface=iface, match=m) for i, m in enumerate(matches)]
    return compile_rules(planned, fault, FAR_FUTURE_NS)


def u32_line(dev: str, prio: int, match: RuleMatch) -> str:
    """The same rule as one u32 filter (a line for `tc -batch`). This kernel has no act_gact, so the filter
    carries a classid instead of `action drop`; the benchmark traffic never matches, so only the walk counts."""
    keys = []
    if match.src is not None:
        keys.append(f"match ip src {match.src}")
    if match.dst is not None:
        keys.append(f"match ip dst {match.dst}")
    if match.protocol:
        keys.append(f"match ip protocol {match.protocol} 0xff")
    if match.sport is not None:
        keys.append(f"match ip sport {match.sport} 0xffff")
    if match.dport is not None:
        keys.append(f"match ip dport {match.dport} 0xffff")
    return f"filter add dev {dev} egress prio {prio} protocol ip u32 {' '.join(keys)} classid 1:1"


# -- processes -----------------------------------------------------------------------------------------------
TC = shutil.which("tc") or "/usr/sbin/tc"


def tc_batch(netns: str, lines: list[str]) -> float:
    """Run `tc -n NETNS -batch -` with the lines on stdin; seconds taken."""
    return C.timed(lambda: subprocess.run([TC, "-n", netns, "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                                          text=True, check=True, stdout=subprocess.DEVNULL))


def check_leftovers(namespaces: list[str]) -> list[str]:
    """Names among ``namespaces`` still listed by `ip netns` (should be none)."""
    listed = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    return [n for n in namespaces if n in listed]


def release(net: "BenchNet | None", program=None) -> None:
    """A benchmark's end: its namespaces first (veths, qdiscs and filters go with them, so nothing uses the
    program any more), then the BPF program, each even if the other failed; a namespace still listed after
    that is an error."""
    try:
        if net is not None:
            net.close()
    finally:
        if program is not None:
            program.close()
    left = check_leftovers([net.a, net.b]) if net is not None else []
    if left:
        raise RuntimeError(f"namespaces left behind: {left}")


# -- namespaces ----------------------------------------------------------------------------------------------
def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, stdout=subprocess.DEVNULL)


class BenchNet:
    """Two throwaway namespaces and veth pairs between them, made with `ip -n` so that nothing is ever created
    in (or moved through) the root namespace. ``close`` deletes both namespaces (veths, qdiscs, filters go with
    them) and is safe to call twice."""

    def __init__(self, tag: str):
        suffix = os.urandom(3).hex()
        self.a, self.b = f"ci-bench-{tag}-{suffix}-a", f"ci-bench-{tag}-{suffix}-b"
        self.namespaces: list[str] = []
        self.pairs: dict[str, tuple[str, str, str, str]] = {}  # name -> (dev a, dev b, addr a, addr b)
        try:
            for ns in (self.a, self.b):
                ip("netns", "add", ns)
                self.namespaces.append(ns)
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def connect(self, name: str, index: int) -> tuple[str, str, str, str]:
        """veth pair number ``index``: a side 10.198.0.(4i+1)/30 + fd00:198:0:i::1/64, b side .2 / ::2."""
        dev_a, dev_b = f"cib{index}a", f"cib{index}b"
        ip("-n", self.a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns", self.b)
        v4 = ipaddress.ip_network(f"10.198.0.{4 * index}/30")
        addrs = []
        for ns, dev, host in ((self.a, dev_a, 1), (self.b, dev_b, 2)):
            addr4 = v4.network_address + host
            ip("-n", ns, "addr", "add", f"{addr4}/30", "dev", dev)
            ip("-n", ns, "addr", "add", f"fd00:198:0:{index}::{host}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
            addrs.append(str(addr4))
        self.pairs[name] = (dev_a, dev_b, addrs[0], addrs[1])
        return self.pairs[name]

    def close(self) -> None:
        errors = []
        while self.namespaces:
            ns = self.namespaces.pop()
            try:
                ip("netns", "del", ns)
            except subprocess.CalledProcessError as exc:
                errors.append((ns, exc))
        if errors:
            raise RuntimeError(f"could not delete namespaces: {errors}")

    def __enter__(self) -> "BenchNet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
