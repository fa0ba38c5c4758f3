"""Bounded traffic between namespaces we created: sequence-numbered UDP, counted at the receiver.

Shipped, not a test helper only: `chaos-inject demo --quick` (quick_demo.py) sends and counts its flows with it.
The host and kernel tiers and bench/ use it too (``measure_one_way``: one-way delay of stamped datagrams)."""

from __future__ import annotations

import os
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
             src: str | None = None, src_port: int = 0, sndbuf_bytes: int | None = None) -> int:
    """Send ``count`` sequence-numbered datagrams at ``rate_pps`` (bounded in count and time), from ``src``:``src_port``
    when given (e.g. a server's port, to play a flow's replies). ``sndbuf_bytes`` forces the send buffer (root):
    a datagram a fault holds as it is stays charged to its sender, whose sends would block once the default is
    full."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket_in(netns, family, socket.SOCK_DGRAM)
    try:
        if sndbuf_bytes:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), sndbuf_bytes)
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


# -- one-way latency measurement (delay engines' tests and benchmarks) ---------------------------------------
REALTIME_STAMP = struct.Struct("!IQ")  # sequence, send time (CLOCK_REALTIME ns: the clock of receive timestamps)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("qq")


@dataclass
class OneWay:
    latencies_ns: list[int]
    send_rate: float          # datagrams/s actually sent


def measure_one_way(src_ns: str | None, dst_ns: str | None, dst: str, port: int, count: int, rate_pps: float, *,
                    src: str | None = None, src_port: int = 0, drain_s: float = 0.4,
                    kernel_arrival: bool = True) -> OneWay:
    """One-way latencies of ``count`` UDP datagrams sent at ``rate_pps`` from ``src_ns`` to ``dst``:``port``.

    With ``kernel_arrival``, arrival is the kernel's receive timestamp (SO_TIMESTAMPNS, taken when the datagram
    enters the receiver's stack), not when a Python thread got to it: on a loaded host (or under TCG) the
    receiving thread falls behind and its backlog would be measured instead of the fault. That stamp is taken
    before the receiver's netfilter hooks, so a hold there (the userspace engine's ingress delay) is invisible to
    it: such faults need ``kernel_arrival=False`` (arrival = when the receiving thread got the datagram). The send
    stamp is taken just before sendto; both are CLOCK_REALTIME of this one machine (namespaces share it). Sender
    and receiver threads run SCHED_FIFO 1 (when permitted), as the userspace engine's I/O thread does, so their
    own wake-up latency is not what gets judged.
    ``src``/``src_port`` bind the sender (e.g. a server's port, to play a flow's replies); ``drain_s`` is how long
    to wait for datagrams still held by a fault.
    """
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    fifo = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        fifo = False
    rx = socket_in(dst_ns, family, socket.SOCK_DGRAM)
    tx = socket_in(src_ns, family, socket.SOCK_DGRAM)
    latencies: list[int] = []
    done = threading.Event()
    thread = None
    try:
        rx.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
        if kernel_arrival:
            rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rx.bind((dst, port))
        rx.settimeout(0.05)
        if src or src_port:
            tx.bind((src or "", src_port))

        def receive() -> None:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            except OSError:
                pass
            while True:
                try:
                    data, anc, _flags, _addr = rx.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
                except (TimeoutError, socket.timeout):
                    if done.is_set():
                        return
                    continue
                except OSError:
                    return
                arrived = time.time_ns()
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= TIMESPEC.size:
                        sec, nsec = TIMESPEC.unpack_from(cdata)
                        arrived = sec * 1_000_000_000 + nsec
                if len(data) >= REALTIME_STAMP.size:
                    latencies.append(arrived - REALTIME_STAMP.unpack_from(data)[1])

        thread = threading.Thread(target=receive, name=f"one-way-rx-{port}", daemon=True)
        thread.start()
        pad = bytes([MAGIC_BYTE]) * 52  # 64-byte payload
        interval = 1.0 / rate_pps
        t0 = time.monotonic()
        for seq in range(count):
            ahead = t0 + seq * interval - time.monotonic()
            if ahead > 0.0005:
                time.sleep(ahead)
            tx.sendto(REALTIME_STAMP.pack(seq, time.time_ns()) + pad, (dst, port))
        sent_s = time.monotonic() - t0
        time.sleep(drain_s)
    finally:
        done.set()
        if thread is not None:
            thread.join(timeout=5)
        rx.close()
        tx.close()
        if fifo:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return OneWay(latencies, count / max(sent_s, 1e-9))
