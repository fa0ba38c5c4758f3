#!/usr/bin/env python3
"""Per-packet cost of the chaos-inject classifier versus a chain of u32 filters (run as root).

Part 1 (in-kernel, no traffic): BPF_PROG_TEST_RUN of the classifier's egress program on a prebuilt
Ethernet+IPv4+UDP frame that matches no rule, with 1, 1,000 and 65,536 rules installed, for 1, 2, 4 and 8 match
shapes in use, each with the flow cache (the default: one hash lookup per packet of a known flow) and without it
(the shape walk alone, the design before the flow cache: one probe per shape); a matched frame (rule hit, loss
threshold 0 so it passes) for reference; and a no-op sched_cls program as the floor of the test-run harness.
BPF_PROG_TEST_RUN repeats one packet, so the flow-cache figures are those of an established flow (its first
packet walks the shapes, as without the cache). Each figure is the kernel's own mean ns per run over --repeat runs; the
table shows the median (and range) of --reps such means.

Part 2 (traffic): two throwaway namespaces joined by three veth pairs — bare, our classifier on clsact egress,
and a u32 chain on clsact egress — with the same rule counts (none matching the traffic). UDP echo round-trip
from Python, interleaved across the three pairs in every repetition, so the ratios come from one run.

Installing a u32 chain costs O(n^2) in the kernel (each insert walks the list): ~40 s to 30,000 filters,
~4-6 min to 65,536 on the 2-core VM. Hence the veth part stops at 30,000 unless --max-veth-rules 65536.

Usage: sudo .venv/bin/python bench/classifier_cost.py [--quick] [--max-veth-rules N] [--reps N] [--repeat N]
"""

from __future__ import annotations

import argparse
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _netkit as N  # noqa: E402

from chaosinject.kernel import tc  # noqa: E402
from chaosinject.kernel.bpf import ClassifierConfig, ClassifierProgram, import_bcc, prog_test_run  # noqa: E402
from chaosinject.kernel.netns import socket_in  # noqa: E402

TEST_RUN_COUNTS = (1, 1000, 65536)
VETH_COUNTS = (0, 1, 1000, 10000, 30000, 65536)
MAX_RULES = 65536 + 64
ECHO_PORT = 9000

ECHO_SERVER = r"""
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", %d))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in r:          # parent gone or done: stdin closed
        break
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
""" % ECHO_PORT


def fmt_ns(values: list[float]) -> str:
    return C.fmt(values, digits=1, range_digits=0, width=7)


# -- part 1 ----------------------------------------------------------------------------------------------------
def noop_program():
    bcc = import_bcc()
    prog = bcc.BPF(text=b"int noop(struct __sk_buff *skb) { return -1; }")
    return prog, prog.load_func(b"noop", bcc.BPF.SCHED_CLS).fd


def part1(args) -> list[tuple]:
    untargeted = N.udp4_frame("10.198.0.1", "10.198.0.2", 40000, 9)
    matched = N.udp4_frame("10.198.0.1", "198.18.0.0", 40000, N.RULE_PORT)  # hits rule 0 (shape kind 0)
    noop_bpf, noop_fd = noop_program()
    rows = []
    try:
        for shapes, flow_cache in [(n, cache) for n in args.shapes for cache in (False, True)]:
            design = "flow cache" if flow_cache else "walk only"
            with C.Stopwatch() as compiling:
                program = ClassifierProgram(ClassifierConfig(max_rules=MAX_RULES, flow_cache=flow_cache))
            compile_s = compiling.s
            try:
                with C.Stopwatch() as building:
                    shape_list, entries = N.compiled_rules(N.rule_matches(max(TEST_RUN_COUNTS), "10.198.0.1",
                                                                          shapes))
                entries[0][1].loss_threshold = 0  # rule 0: loss path runs (random draw) but never drops
                build_s = building.s
                program.set_shapes(shape_list)
                fd = program.prog_fds["egress"]
                if shapes == 1:  # the empty classifier: no shapes, no rules
                    program.set_shapes([])
                    rows.append(measure(args, f"{design}: no shapes/rules", fd, noop_fd, untargeted, None))
                    program.set_shapes(shape_list)
                installed = 0
                for count in TEST_RUN_COUNTS:
                    put_s = C.timed(lambda: program.put_rules(entries[installed:count]))
                    assert program.rule_count() == count
                    installed = count
                    print(f"  [{design}, {shapes} shape(s)] {count} rules in map (put {put_s:.2f} s; "
                          f"load {compile_s:.2f} s, build {build_s:.2f} s)", file=sys.stderr)
                    rows.append(measure(args, f"{design}: {shapes} shape(s), {count} rules", fd, noop_fd,
                                        untargeted, matched))
                hit = program.counters(0)["matched_packets"]
                assert hit > 0 and program.counters(0)["dropped_packets"] == 0, program.counters(0)
            finally:
                program.close()
    finally:
        noop_bpf.cleanup()
    return rows


def measure(args, label, fd, noop_fd, untargeted, matched):
    noop, miss, hit = [], [], []
    for _ in range(args.reps):  # interleaved, so drift of the shared CPU hits all three alike
        noop.append(prog_test_run(noop_fd, untargeted, args.repeat).mean_ns)
        run = prog_test_run(fd, untargeted, args.repeat)
        assert run.retval == -1, f"untargeted packet got {run.retval}"  # TC_ACT_UNSPEC: passed on untouched
        miss.append(run.mean_ns)
        if matched is not None:
            run = prog_test_run(fd, matched, args.repeat)
            assert run.retval == -1, f"matched packet (loss 0) got {run.retval}"
            hit.append(run.mean_ns)
    return label, noop, miss, hit


def print_part1(rows, args):
    print(f"\n## Classifier cost per packet: BPF_PROG_TEST_RUN, repeat {args.repeat:,}, median of {args.reps} "
          "(min-max), ns/packet as the kernel reports it")
    print(f"{'configuration':42s} {'untargeted':>20s} {'matched (loss 0)':>20s} {'no-op prog':>20s} "
          f"{'untargeted - no-op':>19s}")
    for label, noop, miss, hit in rows:
        print(f"{label:42s} {fmt_ns(miss):>20s} {fmt_ns(hit) if hit else '-':>20s} {fmt_ns(noop):>20s} "
              f"{C.median(miss) - C.median(noop):19.1f}")


# -- part 2 ----------------------------------------------------------------------------------------------------
class Rtt:
    """UDP echo round trips from namespace a to the echo server in namespace b, on one veth pair."""

    def __init__(self, netns: str, local: str, remote: str):
        self.sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local, 0))
        self.sock.connect((remote, ECHO_PORT))
        self.sock.settimeout(1.0)
        self.lost = 0

    def sample(self, n: int) -> float:
        """Median RTT in µs of n sequential echoes."""
        out = []
        payload = b"x" * 32
        send, recv, clock = self.sock.send, self.sock.recv, time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            send(payload)
            try:
                recv(64)
            except socket.timeout:
                self.lost += 1
                continue
            out.append(clock() - t0)
        return C.median(out) / 1000.0

    def close(self):
        self.sock.close()


class Ping:
    """ICMP echo round trips with iputils ping (-A: one probe in flight): the reply comes from the kernel of
    namespace b, no user process on the far side, so the RTT is closer to the kernel path alone."""

    def __init__(self, netns: str, local: str, remote: str):
        self.argv = ["ip", "netns", "exec", netns, "ping", "-n", "-A", "-W", "1", "-I", local, remote]
        self.lost = 0

    def sample(self, n: int) -> float:
        out = subprocess.run([*self.argv[:-1], "-c", str(n), self.argv[-1]], capture_output=True, text=True,
                             timeout=60 + n)
        times = [float(m) for m in re.findall(r"time=([0-9.]+) ms", out.stdout)]
        self.lost += n - len(times)
        if not times:
            raise RuntimeError(f"ping got no replies: {out.stdout[-300:]} {out.stderr[-300:]}")
        # ping prints whole µs at these RTTs: a median would be quantised, so a 10 %-trimmed mean instead
        times.sort()
        cut = len(times) // 10
        kept = times[cut:len(times) - cut] or times
        return sum(kept) / len(kept) * 1000.0

    def close(self):
        pass


def part2(args) -> tuple[list[tuple], dict]:
    counts = [c for c in VETH_COUNTS if c <= args.max_veth_rules]
    if args.max_veth_rules not in counts:
        counts.append(args.max_veth_rules)
    net = None
    program = None
    echo = None
    rtts: list[Rtt] = []
    pings: list[Ping] = []
    rows = []
    info: dict = {}
    try:
        net = N.BenchNet("cost")
        ns_a, ns_b = net.a, net.b
        pairs = {name: net.connect(name, i) for i, name in enumerate(("bare", "bpf", "u32"))}
        echo = subprocess.Popen(["ip", "netns", "exec", ns_b, sys.executable, "-c", ECHO_SERVER],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([echo.stdout], [], [], 10)
        if not ready or echo.stdout.readline().strip() != "ready":
            raise RuntimeError("echo server did not start")

        (bpf_dev, _, bpf_src, _), (u32_dev, _, u32_src, _) = pairs["bpf"], pairs["u32"]
        bpf_ifindex = tc.link_index(bpf_dev, ns_a)
        u32_ifindex = tc.link_index(u32_dev, ns_a)
        tc.add_clsact(bpf_ifindex, ns_a)
        tc.add_clsact(u32_ifindex, ns_a)
        program = ClassifierProgram(ClassifierConfig(max_rules=MAX_RULES))
        bpf_shapes, bpf_entries = N.compiled_rules(N.rule_matches(max(counts), bpf_src, 1))
        program.set_shapes(bpf_shapes)
        tc.add_bpf_filter(bpf_ifindex, "egress", 1, program.prog_fds["egress"], "chaos-inject:bench", ns_a)
        u32_matches = N.rule_matches(max(counts), u32_src, 1)

        for _dev_a, _dev_b, addr_a, addr_b in pairs.values():
            rtts.append(Rtt(ns_a, addr_a, addr_b))
            pings.append(Ping(ns_a, addr_a, addr_b))
        for r in rtts + pings:  # neighbours resolved, caches warm
            r.sample(100)

        installed = 0
        for count in counts:
            put_s = C.timed(lambda: program.put_rules(bpf_entries[installed:count]))
            lines = [N.u32_line(u32_dev, 10, m) for m in u32_matches[installed:count]]
            batch_s = N.tc_batch(ns_a, lines) if lines else 0.0
            installed = count
            print(f"  [veth] {count} rules: map put {put_s:.2f} s, tc -batch u32 {batch_s:.2f} s",
                  file=sys.stderr)
            samples = {name: [] for name in pairs}
            ping_samples = {name: [] for name in pairs}
            n = args.packets if count < 10000 else max(100, args.packets // 4)
            for _ in range(args.reps):
                for name, r, p in zip(pairs, rtts, pings):
                    samples[name].append(r.sample(n))
                    ping_samples[name].append(p.sample(n))
            rows.append((count, samples, ping_samples, put_s, batch_s, n))
        info["lost"] = sum(r.lost for r in rtts)
        info["ping_lost"] = sum(p.lost for p in pings)
        info["bpf_counters_rule0"] = program.counters(0)
    finally:
        for r in rtts:
            r.close()
        if echo is not None:
            try:
                echo.stdin.close()
                echo.wait(timeout=5)
            except Exception:
                echo.kill()
                echo.wait()
        N.release(net, program)
    return rows, info


def print_part2(rows, args, info):
    print(f"\n## Round trip over veth between two throwaway namespaces, µs: median over {args.reps} interleaved "
          "repetitions of the median of N sequential echoes.\n## UDP: Python client and echo server; ICMP: "
          "ping -A, kernel replies (per sample: 10 %-trimmed mean, ping prints whole µs).\n## Rules on clsact "
          "egress of the sender; none match the traffic.")
    for title, index in (("UDP echo (Python)", 1), ("ICMP echo (ping)", 2)):
        print(f"\n{title}")
        print(f"{'rules':>6s} {'N':>5s} {'bare':>7s} {'ours(cls_bpf)':>14s} {'u32 chain':>10s} "
              f"{'ours/bare':>10s} {'u32/bare':>9s} {'u32/ours':>9s}")
        for row in rows:
            count, samples, n = row[0], row[index], row[5]
            bare, ours, u32 = (C.median(samples[k]) for k in ("bare", "bpf", "u32"))
            print(f"{count:6d} {n:5d} {bare:7.1f} {ours:14.1f} {u32:10.1f} {ours / bare:10.2f} "
                  f"{u32 / bare:9.2f} {u32 / ours:9.2f}")
    print("\ninstall time for the step up to each count (s): "
          + ", ".join(f"{r[0]}: map put {r[3]:.2f} / tc -batch u32 {r[4]:.2f}" for r in rows))
    print(f"(UDP echoes lost: {info.get('lost', 0)}; pings lost: {info.get('ping_lost', 0)}; "
          f"rule 0 of ours matched {info.get('bpf_counters_rule0', {}).get('matched_packets', '?')} packets: "
          "expected 0)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repeat (default 1e6)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per figure (median reported)")
    parser.add_argument("--packets", type=int, default=1000, help="echoes per RTT sample (1/4 from 10k rules)")
    parser.add_argument("--max-veth-rules", type=int, default=30000,
                        help="largest rule count on the veth pairs (default 30000, the published comparison "
                             "point; 65536 works but installing the u32 chain takes ~4-6 min more)")
    parser.add_argument("--quick", action="store_true", help="small smoke run (not for figures)")
    parser.add_argument("--skip-veth", action="store_true")
    parser.add_argument("--shapes", default="1,2,4,8", help="match shapes in use, part 1 (default 1,2,4,8)")
    args = parser.parse_args()
    args.shapes = [int(x) for x in args.shapes.split(",")]
    if args.quick:
        args.repeat, args.reps, args.packets, args.max_veth_rules = 100_000, 3, 200, 1000
    started = C.begin("classifier_cost")
    rows1 = part1(args)
    print_part1(rows1, args)
    sys.stdout.flush()
    if not args.skip_veth:
        rows2, info = part2(args)
        print_part2(rows2, args, info)
    print(f"\n(total {started.s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
