#!/usr/bin/env python3
"""Recording's cost on the traffic itself: ns per packet its programs add, recording on vs off.

Off, no program of ours runs on the packet path (tcx links exist only while recording). On, every packet
leaving the sender's interface runs ``cr_stamp`` (parse + up to 16 filter checks; a recorded packet also
inserts its stamp into the LRU table), every packet arriving at the receiver runs ``cr_match_tc`` (parse + one
table lookup; a hit adds one sample: histogram + raw event, ``cr_bench_event``). Each program runs in the
kernel on a real Ethernet/IPv4/UDP packet by BPF_PROG_TEST_RUN (the kernel's own ns per run, no traffic);
lines print the median (min-max) over --reps repetitions of --runs runs. The added cost per recorded
packet is stamp (recorded) + match (lookup) + sample; per other packet, stamp (not recorded) + match (miss).

Usage: sudo .venv/bin/python bench/record_overhead.py [--runs 200000] [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _netkit as N  # noqa: E402

from chaosinject.kernel.bpf import prog_test_run  # noqa: E402
from chaosinject.kernel.record_program import RecordConfig, RecordProgram  # noqa: E402
from chaosinject.record.bpf_recorder import PacketFlow  # noqa: E402


PAYLOAD = b"p" * 64


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    C.begin("record_overhead")
    flows = [PacketFlow(f"f{i}", "10.0.0.1", "10.0.0.2", dport=9000 + i, protocol="udp") for i in range(16)]
    recorded = N.udp4_frame("10.0.0.1", "10.0.0.2", 40000, 9015, PAYLOAD)  # the last of 16 filters: most checks
    other = N.udp4_frame("10.0.0.1", "10.0.0.2", 40000, 8000, PAYLOAD)     # matches none: every filter checked
    program = RecordProgram(RecordConfig(ring_pages=1024))
    try:
        program.set_filters([f.to_filter(events=True) for f in flows])
        rows = {}
        for name, prog, packet in (("stamp, not recorded (every other packet)", "cr_stamp", other),
                                   ("stamp, recorded (LRU insert)", "cr_stamp", recorded),
                                   ("match, lookup miss", "cr_match_tc", other),
                                   ("sample (histogram + raw event)", "cr_bench_event", bytes(64))):
            fd = program.prog_fd(prog)
            rows[name] = [prog_test_run(fd, packet, args.runs).mean_ns for _ in range(args.reps)]
            if prog == "cr_bench_event":  # keep the ring from filling between repetitions
                while len(program.ring.read()):
                    pass
        if not program.counters().get(15, {}).get("stamped"):
            raise SystemExit("the recorded packet was not stamped: the figures would not measure what they say")
        print(f"recording overhead per packet, BPF_PROG_TEST_RUN, {args.runs} runs x {args.reps} reps, 16 filters")
        for name, values in rows.items():
            print(f"  {name:42s} {C.fmt(values, ' ns', digits=1, width=7)}")
        med = {k: C.median(v) for k, v in rows.items()}
        on = med["stamp, recorded (LRU insert)"] + med["match, lookup miss"] + med["sample (histogram + raw event)"]
        print(f"  recorded packet, on - off: ~{on:.0f} ns (stamp + lookup + sample); other packets: "
              f"~{med['stamp, not recorded (every other packet)'] + med['match, lookup miss']:.0f} ns; off: 0")
    finally:
        program.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
