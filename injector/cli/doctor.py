"""`chaos-inject doctor`: what this kernel supports, which engine serves which fault, and the precision of the
delay engine `--engine auto` would choose, measured on this host now.

The self-test (about a second): two throwaway namespaces joined by a veth (names `ci-dr-<pid>-*`, 10.196.0.0/30,
no route out; ledgered before they are made, so a kill -9 leaves what `sweep` removes), a baseline of UDP datagrams, then the delay engine applied in this process to one flow with
SELF_TEST_DELAY and the same datagrams again; error = one-way latency (kernel receive stamp - send stamp) -
baseline median - requested delay. Everything is undone by one owner, last-first (the engine's objects, then the
namespaces), also on failure or Ctrl-C. When it cannot run (not root, no delay engine here, a failure) doctor says why and prints the
engine's cited figure instead (engines/select.py: the bench script and the date it was measured).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

SELF_TEST_DELAY_NS = 10_000_000
SELF_TEST_PACKETS = 300          # per phase; p99 of 300 is the 3rd largest error
SELF_TEST_RATE = 2000.0          # packets/s: 0.15 s per phase
SELF_TEST_PORT = 9009


@dataclass(frozen=True)
class SelfTest:
    engine: str
    packets: int
    received: int
    median_ns: float
    p99_ns: float
    min_ns: float
    wall_s: float

    def line(self) -> str:
        return (f"measured now on this host: {self.engine}, {SELF_TEST_DELAY_NS / 1e6:g} ms asked, added-delay "
                f"error median {self.median_ns / 1e6:+.2f} ms, p99 {self.p99_ns / 1e6:+.2f} ms, min "
                f"{self.min_ns / 1e6:+.2f} ms ({self.received}/{self.packets} UDP datagrams at "
                f"{SELF_TEST_RATE:g}/s between two throwaway namespaces; self-test {self.wall_s:.1f} s)")


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank (the bench harness's definition)."""
    import math

    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def delay_self_test(engine_name: str) -> SelfTest:
    """Apply ``engine_name`` with a 10 ms delay on one flow between two throwaway namespaces and measure it.

    One owner holds everything, ledgered before it is made (kind "probe", like the capability probe's: not a
    run): the two namespaces, then the veth made inside the first with its peer in the second (it never exists
    in this namespace), then the engine's objects. Undone last-first; after a kill -9, `sweep` does the same."""
    import secrets
    import statistics

    from ..engines.select import make_engine
    from ..kernel.netns import create_namespace
    from ..kernel.owner import KernelOwner
    from ..kernel.rtnl import open_rtnl
    from ..lab.traffic import measure_one_way
    from ..plan import Interface, build_plan
    from ..spec import FaultSpec, parse_flow

    started = time.monotonic()
    tag = secrets.token_hex(3)
    a, b = f"ci-dr-{os.getpid()}-{tag}-a", f"ci-dr-{os.getpid()}-{tag}-b"   # ours alone: pid and random part
    if_a, if_b = f"cidr{tag}a", f"cidr{tag}b"
    src, dst = "10.196.0.1", "10.196.0.2"
    plan = build_plan([(parse_flow(f"{src}->{dst}:{SELF_TEST_PORT}/udp"), Interface(if_a, a),
                        FaultSpec(delay_ns=SELF_TEST_DELAY_NS))], duration_ns=60 * 10**9, engine=engine_name)
    with KernelOwner(plan.run_id, meta={**plan.to_dict(), "kind": "probe"}) as owner:
        for ns in (a, b):
            owner.create({"kind": "netns", "name": ns}, lambda ns=ns: create_namespace(ns))
        with open_rtnl(a) as rtnl:
            rtnl.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": b})
        for ns, ifname, address in ((a, if_a, src), (b, if_b, dst)):
            with open_rtnl(ns) as rtnl:
                index = rtnl.link_lookup(ifname=ifname)[0]
                rtnl.addr("add", index=index, address=address, prefixlen=30)
                rtnl.link("set", index=index, state="up")
                rtnl.link("set", index=rtnl.link_lookup(ifname="lo")[0], state="up")
        measure_one_way(a, b, dst, SELF_TEST_PORT, 20, SELF_TEST_RATE, drain_s=0.05)   # neighbours resolved
        base = measure_one_way(a, b, dst, SELF_TEST_PORT, SELF_TEST_PACKETS, SELF_TEST_RATE, drain_s=0.05)
        base_median = statistics.median(base.latencies_ns) if base.latencies_ns else 0.0
        make_engine(engine_name).apply(plan, owner, time.monotonic_ns() + plan.duration_ns)
        # egress: the engine holds each datagram before the receiver's kernel stamp is taken
        held = measure_one_way(a, b, dst, SELF_TEST_PORT, SELF_TEST_PACKETS, SELF_TEST_RATE,
                               drain_s=0.05 + 3 * SELF_TEST_DELAY_NS / 1e9)
    errors = sorted(x - base_median - SELF_TEST_DELAY_NS for x in held.latencies_ns)
    if not errors:
        raise RuntimeError("no datagram arrived during the self-test")
    return SelfTest(engine_name, SELF_TEST_PACKETS, len(errors), statistics.median(errors),
                    _percentile(errors, 99), errors[0], time.monotonic() - started)


def precision_line(caps, self_test: bool = True) -> str:
    """What doctor says about the delay engine auto would choose: measured now, or the cited figure and why."""
    from ..engines.select import choose_engine, engine_info
    from ..errors import Interrupted, Unsupported
    from ..spec import FaultSpec

    try:
        name, _ = choose_engine(FaultSpec(delay_ns=SELF_TEST_DELAY_NS), caps)
    except Unsupported as exc:
        return f"delay precision: no delay engine here ({exc})"
    cited = f"cited: {engine_info(name).precision}"
    if not self_test:
        return f"delay precision ({name}): not measured (--no-self-test); {cited}"
    if os.geteuid() != 0:
        return f"delay precision ({name}): not measured (the self-test needs root); {cited}"
    try:
        return f"delay precision ({name}): {delay_self_test(name).line()}"
    except Interrupted:
        raise
    except Exception as exc:  # a failed self-test must not hide the rest of the report
        return f"delay precision ({name}): self-test failed ({type(exc).__name__}: {exc}); {cited}"


def cmd_doctor(args) -> int:
    from ..engines.select import doctor_report
    from ..kernel.probe import probe
    from .exits import EXIT_OK

    caps = probe()
    print(doctor_report(caps), flush=True)
    if getattr(args, "warm_cache", False):
        from ..engines.warm import format_warmed, warm_program_cache

        print(format_warmed(warm_program_cache(caps)), flush=True)
    print(precision_line(caps, self_test=not getattr(args, "no_self_test", False)))
    return EXIT_OK
