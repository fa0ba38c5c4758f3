"""The lab's load generator: ``python3 -m chaosinject.lab.load_generator --config load.json``.

Open loop: requests start on a fixed schedule (``rate_per_s``) whatever the api's latency, each on its own
worker, so a slow api does not slow the offered load (no coordinated omission). Every request appends one
fixed-size record to the log: CLOCK_MONOTONIC start ``t_ns``, ``latency_ns``, HTTP ``status`` (0 on timeout
or connection error; the timeout bounds the whole request: ``chaosinject.httpclient.get``).
``chaosinject.lab.requests`` reads the log. Standard library only (the Vagrant VMs run it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..httpclient import get

# t_ns int64, latency_ns int64, status int32, reserved uint32 (keeps records 8-byte aligned): little-endian
RECORD = struct.Struct("<qqiI")




class LoadGenerator:
    def __init__(self, url: str, log: str | os.PathLike, rate_per_s: float, timeout_s: float) -> None:
        if rate_per_s <= 0 or timeout_s <= 0:
            raise ValueError("rate_per_s and timeout_s must be positive")
        self.url = url
        self.rate, self.timeout_s = float(rate_per_s), float(timeout_s)
        # O_APPEND: each record is one write(), whole, even with many workers
        self.fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.stop = threading.Event()
        # enough workers for every request that may be outstanding at once (rate x timeout), with headroom
        self.pool = ThreadPoolExecutor(max_workers=max(4, int(self.rate * self.timeout_s * 1.5) + 4),
                                       thread_name_prefix="load")

    def _one(self) -> None:
        t0 = time.monotonic_ns()
        status = get(self.url, self.timeout_s).status or 0   # 0: timeout, refused, reset (no HTTP status)
        os.write(self.fd, RECORD.pack(t0, time.monotonic_ns() - t0, status, 0))

    def run(self) -> None:
        interval_ns = int(1e9 / self.rate)
        start, n = time.monotonic_ns(), 0
        while not self.stop.is_set():
            due = start + n * interval_ns
            wait = (due - time.monotonic_ns()) / 1e9
            if wait > 0 and self.stop.wait(wait):
                break
            self.pool.submit(self._one)
            n += 1
        self.pool.shutdown(wait=True, cancel_futures=True)
        os.close(self.fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m chaosinject.lab.load_generator")
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--rate", type=float, help="requests per second; overrides the config")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    gen = LoadGenerator(cfg["url"], cfg["log"], args.rate or cfg["rate_per_s"], cfg["timeout_s"])
    signal.signal(signal.SIGTERM, lambda *_: gen.stop.set())
    signal.signal(signal.SIGINT, lambda *_: gen.stop.set())
    print(f"load: {gen.rate:g} requests/s to {cfg['url']} -> {cfg['log']}", flush=True)
    gen.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
