#!/usr/bin/env python3
"""Time to apply and to roll back one rule from Python, warm, versus spawning `tc` (run as root).

Warm: the classifier is compiled and loaded, the interface already has a clsact qdisc and our filter, the map
holds 1,000 other rules. One throwaway namespace pair (veth), nothing else touched. Measured, interleaved in
every iteration so the shared CPU's drift hits all alike:
  (a) one rule into / out of the BPF map: ClassifierProgram.put_rules([rule]) / .delete_rule(key)
  (b) our cls_bpf filter attached / detached: chaosinject.kernel.tc.add_bpf_filter / delete_bpf_filter
      (each opens a pyroute2 NetNS socket; delete first lists the filters to check the name)
      reference: the same netlink requests on one netlink socket (opened in the namespace) kept open
  (c) `tc -n NS filter add dev D egress prio P protocol ip u32 match ... classid 1:1` / `tc -n NS filter del
      dev D egress prio P`, spawned with subprocess.run (the same rule as a u32 filter)

Usage: sudo .venv/bin/python bench/apply_time.py [--iterations N] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _netkit as N  # noqa: E402

from chaosinject.kernel import tc  # noqa: E402
from chaosinject.kernel.bpf import ClassifierConfig, ClassifierProgram  # noqa: E402
from chaosinject.kernel.rtnl import open_rtnl  # noqa: E402

GOAL_MS = 5.0
FILTER_NAME = "chaos-inject:bench-apply"


def timed_ms(fn) -> float:
    """Milliseconds one call took."""
    return C.timed(fn) * 1e3


def run(args) -> dict[str, tuple[list[float], list[float]]]:
    net = None
    program = None
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        net = N.BenchNet("apply")
        dev, _, src, _ = net.connect("pair", 0)
        ns = net.a
        ifindex = tc.link_index(dev, ns)
        tc.add_clsact(ifindex, ns)
        program = ClassifierProgram(ClassifierConfig(max_rules=2048))
        matches = N.rule_matches(1001, src, 1)
        shapes, entries = N.compiled_rules(matches)
        program.set_shapes(shapes)
        program.put_rules(entries[:1000])  # 1,000 other rules already in place
        fd = program.prog_fds["egress"]
        tc.add_bpf_filter(ifindex, "egress", 1, fd, FILTER_NAME, ns)  # the running fault: warm
        one_key, one_rule = entries[1000]
        u32_add = [N.TC, "-n", ns, *N.u32_line(dev, 3, matches[1000]).split()]
        u32_del = [N.TC, "-n", ns, "filter", "del", "dev", dev, "egress", "prio", "3"]

        map_add, map_del, pr_add, pr_del, ref_add, ref_del, tc_add, tc_del = ([] for _ in range(8))
        with open_rtnl(ns) as kept:  # reference only: one socket reused
            eth_p_all = getattr(tc, "ETH_P_ALL", 0x0003)

            def ref_attach():
                kept.tc("add-filter", "bpf", ifindex, ":1", fd=fd, name=FILTER_NAME, parent=tc.PARENTS["egress"],
                        classid=1, direct_action=True, prio=2, protocol=eth_p_all)

            def ref_detach():
                # kind + prio + protocol + handle: without kind pyroute2 sends info = 0 and the kernel deletes
                # every filter on the hook
                kept.tc("del-filter", "bpf", ifindex, handle=1, parent=tc.PARENTS["egress"], prio=2,
                        protocol=eth_p_all)

            def detach():
                assert tc.delete_bpf_filter(ifindex, "egress", 2, FILTER_NAME, ns)

            for i in range(args.iterations + args.warmup):
                keep = i >= args.warmup
                for _ in range(args.map_per_iteration):
                    a = timed_ms(lambda: program.put_rules([(one_key, one_rule)]))
                    d = timed_ms(lambda: program.delete_rule(one_key))
                    if keep:
                        map_add.append(a)
                        map_del.append(d)
                a = timed_ms(lambda: tc.add_bpf_filter(ifindex, "egress", 2, fd, FILTER_NAME, ns))
                d = timed_ms(detach)
                ra = timed_ms(ref_attach)
                rd = timed_ms(ref_detach)
                ta = timed_ms(lambda: subprocess.run(u32_add, check=True))
                td = timed_ms(lambda: subprocess.run(u32_del, check=True))
                if keep:
                    pr_add.append(a)
                    pr_del.append(d)
                    ref_add.append(ra)
                    ref_del.append(rd)
                    tc_add.append(ta)
                    tc_del.append(td)
        # sanity: the map op really lands, and only the warm filter is left
        program.put_rules([(one_key, one_rule)])
        assert program.rule_count() == 1001
        program.delete_rule(one_key)
        assert program.rule_count() == 1000
        left = [(f.prio, f.kind) for f in tc.list_filters(ifindex, ns)]
        assert left == [(1, "bpf")], left
        results = {
            "(a) BPF map: put_rules / delete_rule": (map_add, map_del),
            "(b) cls_bpf filter via pyroute2 (tc.py)": (pr_add, pr_del),
            "    ref: same, one netlink socket kept": (ref_add, ref_del),
            "(c) spawn `tc` u32 filter add / del": (tc_add, tc_del),
        }
    finally:
        N.release(net, program)
    return results


def report(results, args) -> None:
    print(f"\n## Apply / roll back one rule, warm, ms ({args.iterations} iterations interleaved; map ops "
          f"x{args.map_per_iteration} per iteration). Goal <= {GOAL_MS:.0f} ms")
    print(f"{'method':42s} {'apply med':>9s} {'p90':>7s} {'rollback med':>12s} {'p90':>7s} "
          f"{'both med':>9s} {'n':>5s}  goal")
    for label, (add, rem) in results.items():
        both = [a + d for a, d in zip(add, rem)]
        ok = "ok" if C.percentile(add, 90) <= GOAL_MS and C.percentile(rem, 90) <= GOAL_MS else "MISSED"
        print(f"{label:42s} {C.median(add):9.3f} {C.percentile(add, 90):7.3f} {C.median(rem):12.3f} "
              f"{C.percentile(rem, 90):7.3f} {C.median(both):9.3f} {len(add):5d}  {ok}")
    med = {label: (C.median(a), C.median(d)) for label, (a, d) in results.items()}
    tc_a, tc_d = med["(c) spawn `tc` u32 filter add / del"]
    print("\nratio spawned tc / ours (medians; > 1 means ours is faster):")
    for label in ("(a) BPF map: put_rules / delete_rule", "(b) cls_bpf filter via pyroute2 (tc.py)",
                  "    ref: same, one netlink socket kept"):
        a, d = med[label]
        print(f"  {label.strip():42s} apply {tc_a / a:8.1f}x   rollback {tc_d / d:8.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--map-per-iteration", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small smoke run (not for figures)")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.warmup = 30, 3
    started = C.begin("apply_time")
    results = run(args)
    report(results, args)
    print(f"\n(total {started.s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
