#!/usr/bin/env python3
"""Recording throughput: raw events delivered into numpy through our ring-buffer reader, and the histogram path.

No traffic: the producer is bpf/record.bpf.c's ``cr_bench_event`` (one cr_sample with a raw event per run: the
same code the one-way matcher runs after its lookup) or ``cr_bench_event_batch`` (8 such samples per run: the
test-run loop and the clock read amortised, as when many packets on many CPUs produce at once), driven by
BPF_PROG_TEST_RUN in a thread, ``--chunk`` events per syscall (the syscall releases the GIL), while the main
thread drains the ring with RingReader (mmap, one numpy structured array per batch). Figures per repetition:

* ``raw events``: events delivered into numpy / wall time from the first produce to the last event read, with
  the number lost (ring full: the reservation failed, counted in the kernel). A run with losses is marked.
* ``producer alone``: the kernel's own ns per event (what the program costs, ring reservation included).
* ``reader alone``: the ring filled first (nothing read), then drained: events/s the reader turns into numpy,
  with no producer beside it. With ``producer alone`` this says which side limits the flat-out rate.
* ``histogram``: ``cr_bench_hist`` (histogram update only, no event): samples/s from the kernel's ns per run;
  reading all histograms (16 flows x 3 phases x 4352 buckets) into numpy: ms per read.
* ``test-run loop + clock``: ``cr_bench_clock`` (a clock read, nothing else): the part of every one-per-run
  figure that is not recording (histogram minus it = the histogram update's own cost).

The flat-out runs offer events as fast as the kernel makes them; on a shared 2-core host the reader can be
descheduled long enough for the ring to fill, so they may show losses. The paced runs (batched producer) offer
a fixed rate (--paced, M events/s, --paced-s seconds each) in chunks of --paced-chunk events; "sustained with 0
lost" is the highest offered rate at which no repetition lost an event.

Each line prints the median (min-max) over --reps repetitions. Usage:
    sudo .venv/bin/python bench/record_rate.py [--events 4000000] [--ring-pages 8192] [--reps 5] [--paced 4,8,10,12,16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.kernel.record_program import RecordConfig, RecordProgram  # noqa: E402
from chaosinject.kernel.ring import EVENT_SIZE  # noqa: E402


BATCH = 8  # events per run of cr_bench_event_batch (CR_BENCH_BATCH in bpf/record.bpf.c)
PRODUCERS = {1: "cr_bench_event", BATCH: "cr_bench_event_batch"}


def raw_run(program: RecordProgram, events: int, chunk: int, target_rate: float | None = None, per_run: int = 1
            ) -> tuple[float, int, int, float]:
    """(events/s delivered, delivered, lost, producer ns per event). ``target_rate`` paces the producer
    (events/s); None runs it flat out. ``per_run``: events each test run makes (1 or BATCH); ``events`` and
    ``chunk`` count events."""
    before = program.counters().get(0, {"events": 0, "lost": 0})
    produce_ns: list[int] = []
    done = threading.Event()

    def produce() -> None:
        left = events
        pace = C.Stopwatch()
        sent = 0
        while left > 0:
            n = min(chunk, left)
            produce_ns.append(program.test_run(PRODUCERS[per_run], n // per_run) / per_run)
            left -= n
            sent += n
            if target_rate:
                ahead = sent / target_rate - pace.s
                if ahead > 0:
                    time.sleep(ahead)
        done.set()

    delivered = 0
    checksum = 0
    thread = threading.Thread(target=produce)
    reading = C.Stopwatch()
    thread.start()
    while True:
        finished = done.is_set()
        batch = program.ring.read()
        if len(batch):
            delivered += len(batch)
            checksum += int(batch["latency_ns"][-1])  # touch the decoded data
        elif finished:
            break
        else:
            program.ring.wait(0.001)
    elapsed = reading.s
    thread.join()
    after = program.counters()[0]
    lost = after["lost"] - before["lost"]
    assert delivered + lost == events, (delivered, lost, events)
    assert after["events"] - before["events"] == delivered
    return delivered / elapsed, delivered, lost, statistics.mean(produce_ns)


def drain_run(program: RecordProgram, events: int, chunk: int) -> float:
    """Events/s of the reader alone: ``events`` produced with nothing reading, then drained into numpy."""
    left = events
    while left > 0:
        n = min(chunk, left)
        program.test_run("cr_bench_event", n)
        left -= n
    delivered = 0
    with C.Stopwatch() as draining:
        while True:
            batch = program.ring.read()
            if not len(batch):
                break
            delivered += len(batch)
    elapsed = draining.s
    assert delivered == events, (delivered, events)
    return delivered / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--ring-pages", type=int, default=8192, help="ring size in 4 KiB pages (power of two)")
    ap.add_argument("--hist-repeat", type=int, default=5_000_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--paced", type=lambda t: [float(x) for x in t.split(",")], default=[4.0, 8.0, 10.0, 12.0, 16.0],
                    help="offered rates in M events/s for the paced runs (comma-separated)")
    ap.add_argument("--paced-s", type=float, default=2.0)
    ap.add_argument("--paced-chunk", type=int, default=10_000)
    args = ap.parse_args()
    C.begin("record_rate")

    program = RecordProgram(RecordConfig(ring_pages=args.ring_pages))
    try:
        program.set_phase(1)
        program.test_run("cr_bench_event", 1000)  # warm-up
        program.ring.read()
        flat = {k: ([], [], []) for k in PRODUCERS}   # per events-per-run: rates, lost, producer ns/event
        hist_ns, read_ms, drained, clock_ns = [], [], [], []
        # a ring record is the 8-byte header + the event; fill to 3/4 so no reservation can fail
        fill = args.ring_pages * 4096 // (8 + EVENT_SIZE) * 3 // 4
        for _ in range(args.reps):
            for per_run, (rates, lost, producer) in flat.items():
                rate, _, n_lost, prod_ns = raw_run(program, args.events, args.chunk, per_run=per_run)
                rates.append(rate)
                lost.append(n_lost)
                producer.append(prod_ns)
            drained.append(drain_run(program, fill, args.chunk))
            hist_ns.append(program.test_run("cr_bench_hist", args.hist_repeat))
            clock_ns.append(program.test_run("cr_bench_clock", args.hist_repeat))
            with C.Stopwatch() as reading:
                h = program.histograms()
            read_ms.append(reading.ms)
            assert h[0, 1].sum() > 0
        paced = {}
        for target in args.paced:
            runs = [raw_run(program, int(target * 1e6 * args.paced_s), args.paced_chunk, target * 1e6, BATCH)
                    for _ in range(args.reps)]
            paced[target] = ([r[0] for r in runs], [r[2] for r in runs])
        ring_mib = args.ring_pages * 4096 / 2**20
        print(f"record_rate: {args.reps} reps, ring {ring_mib:.0f} MiB; medians (min-max)")
        print(f"  flat out, {args.events:,} events, {args.chunk:,} per test-run call:")
        for per_run, (rates, lost, producer) in flat.items():
            print(f"    {per_run} event(s) per run:")
            print(f"      raw events into numpy : {C.fmt(rates, ' M/s', 1e-6)}  lost per rep {lost}"
                  + ("" if not any(lost) else "  (some lost: the consumer fell behind at least once)"))
            print(f"      producer alone        : {C.fmt(producer, ' ns/event', 1, 1)} = "
                  f"{C.fmt([1e3 / p for p in producer], ' M/s', 1)}")
        print(f"    reader alone            : {C.fmt(drained, ' M/s', 1e-6)} (a full ring of {fill:,} events "
              "drained, nothing producing)")
        print(f"  paced producer ({BATCH} events per run), {args.paced_s:g} s per rep, {args.paced_chunk:,} events per call:")
        sustained = 0.0
        for target, (r, lo) in paced.items():
            print(f"    {target:4g} M/s offered      : {C.fmt(r, ' M/s', 1e-6)} delivered, lost per rep {lo}")
            if not any(lo):
                sustained = max(sustained, C.median(r))
        print(f"  sustained with 0 lost (highest paced rate with no loss in any rep): {sustained / 1e6:.2f} M/s")
        print(f"  histogram path        : {C.fmt(hist_ns, ' ns/sample', 1, 1)} = "
              f"{C.fmt([1e3 / p for p in hist_ns], ' M/s', 1)} (kernel only: no event, nothing to read)")
        print(f"  test-run loop + clock : {C.fmt(clock_ns, ' ns/run', 1, 1)} (in every one-per-run figure here)")
        print(f"  histograms into numpy : {C.fmt(read_ms, ' ms/read', 1, 3)} ({h.size:,} buckets)")
    finally:
        program.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
