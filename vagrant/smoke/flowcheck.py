"""TCP connect times inside the smoke VM (stdlib only; the VM's python3). A connect takes one round trip, so a
delay on the SYN's way shows in full.
  flowcheck.py serve PORT...                  listen on every PORT (0.0.0.0), accept and close, until killed
  flowcheck.py probe HOST PORT COUNT          COUNT connects to HOST:PORT; prints the median and min in ms (JSON)
"""

from __future__ import annotations

import json
import selectors
import socket
import statistics
import sys
import time


def serve(ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        sel.register(s, selectors.EVENT_READ)
    print("listening", *ports, flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept()
            conn.close()


def probe(host: str, port: int, count: int) -> None:
    times = []
    for _ in range(count):
        t = time.monotonic()
        with socket.create_connection((host, port), timeout=10):
            times.append((time.monotonic() - t) * 1e3)
        time.sleep(0.02)
    print(json.dumps({"port": port, "n": count, "median_ms": round(statistics.median(times), 2),
                      "min_ms": round(min(times), 2)}))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    elif sys.argv[1] == "probe":
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
