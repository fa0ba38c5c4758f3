"""Bounded test traffic between namespaces we created: sequence-numbered UDP, counted at the receiver."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

from ..kernel.netns import socket_in

STAMP = struct.Struct("!IQ")  # sequence number, send time (ns)
HEADER = struct.Struct("!IQI")  # ... and a CRC-32 of both, so a flipped bit anywhere is seen
MAGIC_BYTE = 0xA5


def payload(seq: int, size: int) -> bytes:
    stamp = STAMP.pack(seq, time.monotonic_ns())
    body = bytes([MAGIC_BYTE]) * max(0, size - HEADER.size)
    return stamp + zlib.crc32(stamp).to_bytes(4, "big") + body


def intact(data: bytes) -> bool:
    if len(data) < HEADER.size:
        return False
    return (zlib.crc32(data[:STAMP.size]) == int.from_bytes(data[STAMP.size:HEADER.size], "big")
            and data.count(MAGIC_BYTE, HEADER.size) == len(data) - HEADER.size)


@dataclass
class UdpReceiver:
    """Counts what arrives on (address, port) inside ``netns``; flags payloads that differ from the pattern."""

    netns: str | None
    address: str
    port: int
    received: int = 0
    corrupted: int = 0
    sequences: list[int] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)  # arrival - send stamp: one-way delay (same clock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self.sock = socket_in(self.netns, family, socket.SOCK_DGRAM)
        # RCVBUFFORCE (root) passes rmem_max: the receiver, not the fault, must never be what drops
        self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
        self.sock.bind((self.address, self.port))
        self.sock.settimeout(0.05)

    def start(self) -> "UdpReceiver":
        self._thread = threading.Thread(target=self._loop, name=f"udp-rx-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            arrived = time.monotonic_ns()
            self.received += 1
            if intact(data):
                seq, sent = STAMP.unpack_from(data)
                self.sequences.append(seq)
                self.latencies_ns.append(arrived - sent)
            else:
                self.corrupted += 1

    def stop(self, drain_s: float = 0.3) -> None:
        time.sleep(drain_s)  # let packets in flight land
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.sock.close()


def send_udp(netns: str | None, dst: str, port: int, count: int, rate_pps: float, size: int = 64,
             src: str | None = None, src_port: int = 0) -> int:
    """Send ``count`` sequence-numbered datagrams at ``rate_pps`` (bounded in count and time), from ``src``:``src_port``
    when given (e.g. a server's port, to play a flow's replies)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket_in(netns, family, socket.SOCK_DGRAM)
    try:
        if src or src_port:
            sock.bind((src or "", src_port))
        interval = 1.0 / rate_pps
        start = time.monotonic()
        for seq in range(count):
            target = start + seq * interval
            delay = target - time.monotonic()
            if delay > 0.001:  # sleep only when ahead by a millisecond: pacing, not per-packet syscalls
                time.sleep(delay)
            sock.sendto(payload(seq, size), (dst, port))
        return count
    finally:
        sock.close()
