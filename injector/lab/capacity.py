"""The api's capacity, measured at `lab up` before the load starts, and the load's rate chosen from it."""

from __future__ import annotations

import statistics
import threading
import time

from ..httpclient import get
from .state import LabError

LOAD_FRACTION = 0.4     # the load's share of the measured capacity: well below it, room for a fault's extra work
MIN_RATE_PER_S = 2.0


def measure_capacity(url: str, concurrency: int, *, min_s: float = 2.0, max_s: float = 16.0,
                     min_answers: int = 40, enough_per_s: float | None = None, windows: int = 3) -> float:
    """The api's throughput in 200 answers per second: ``concurrency`` closed-loop clients (the api's in-flight
    limit), counted in windows of at least ``min_s`` and ``min_answers`` answers (all of them within ``max_s``).
    Measured before the load generator starts, from this process (its HTTP client costs about what the load
    generator's does).

    One window when it already shows ``enough_per_s`` (the load then runs at the definition's rate: the common case
    on a host); else ``windows`` of them and their median counts. One window misreads: in a QEMU TCG guest the
    first seconds of new code run slower (its translation cache is cold) and a neighbour's burst on shared cores
    steals time (one 2 s window read 9.2/s where the next lab up read 36.8/s); the best of three over-read it
    once under a busy host (load 23/s at "40 %", and the api's /health then missed its 3 s)."""
    if not get(url, 10).status == 200:        # warm: the first query opens a pooled connection
        raise LabError(f"api does not answer {url} with 200 before its capacity is measured")
    done = threading.Event()
    lock = threading.Lock()
    ok = [0]

    def client() -> None:
        while not done.is_set():
            if get(url, 5).status == 200:
                with lock:
                    ok[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, concurrency))]
    start = time.monotonic()
    for t in threads:
        t.start()
    rates: list[float] = []
    w_start, w_n = start, 0
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        with lock:
            n = ok[0]
        elapsed = now - w_start
        if (elapsed >= min_s and n - w_n >= min_answers) or now - start >= max_s:
            rates.append((n - w_n) / elapsed)
            if (enough_per_s is not None and rates[-1] >= enough_per_s) or len(rates) >= windows \
                    or now - start >= max_s:
                break
            w_start, w_n = now, n
    done.set()
    for t in threads:
        t.join(10)
    return statistics.median(rates)


def load_rate(capacity_per_s: float, default_per_s: float) -> tuple[float, str]:
    """The load's rate from the measured capacity: the definition's rate, lowered to LOAD_FRACTION of the
    capacity where that is less (whole requests per second, at least MIN_RATE_PER_S); and a note saying so."""
    cap = max(MIN_RATE_PER_S, float(int(capacity_per_s * LOAD_FRACTION)))
    if cap >= default_per_s:
        return default_per_s, (f"api capacity measured at lab up: {capacity_per_s:.0f}/s, the load "
                               f"{default_per_s / max(capacity_per_s, 1e-9):.0%} of it")
    return cap, (f"lowered from {default_per_s:g}/s: api capacity measured at lab up {capacity_per_s:.1f}/s, the load "
                 f"runs at {LOAD_FRACTION:.0%} of it")
