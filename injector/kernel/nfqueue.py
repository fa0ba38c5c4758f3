"""NFQUEUE over a raw NETLINK_NETFILTER socket (the nftables table that steers a run's flows to it: nftables.py).

The queue protocol (linux/netfilter/nfnetlink_queue.h) is small enough to speak with ``struct``: bind a queue
number (copy mode PACKET: a 20-byte range, for which the kernel reports each packet's full length in
NFQA_CAP_LEN and queues GSO packets whole; or whole packets, segmented, to send again with ``Resender``),
receive one netlink message per queued packet, answer with verdicts (several verdict messages in one
``send``: the kernel walks every message in the datagram).

Packets reach a queue through the nftables table of nftables.py, whose docstring says how and why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .rawnl import NETLINK_NETFILTER, NLA_HDR, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDR, messages, nla
from .rtnl import entered_netns

NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian: packed by hand)
NLA_TYPE_MASK = 0x3FFF

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
MSG_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
MSG_VERDICT = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
MSG_CONFIG = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG

# config attributes and commands
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_NONE, NFQNL_COPY_META, NFQNL_COPY_PACKET = 0, 1, 2
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 0x1, 0x4
# packet attributes
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD, NFQA_CAP_LEN = 1, 2, 10, 13
NF_DROP, NF_ACCEPT = 0, 1

# nlmsghdr, nfgenmsg, nla header, verdict header (verdict and id big endian: converted with htonl)
_VERDICT = struct.Struct("=IHHIIBBHHHII")
_VERDICT_LEN = _VERDICT.size  # 32 bytes, already 4-aligned


@dataclass(frozen=True)
class QueuedPacket:
    queue: int
    packet_id: int
    length: int        # bytes of the packet in the kernel (NFQA_CAP_LEN)
    payload: bytes = b""


class QueueSocket:
    """One NETLINK_NETFILTER socket inside a namespace, bound to one or more queue numbers.

    Not thread-safe: one thread receives and sends verdicts (the engine's I/O thread).
    """

    def __init__(self, netns: str | None = None, *, rcvbuf_bytes: int = 8 << 20):
        self.netns = netns
        self.queues: list[int] = []
        self._seq = 0
        with entered_netns(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.bind((0, 0))
            # RCVBUFFORCE (root) passes rmem_max: a burst of queued packets must not overflow the socket
            self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf_bytes)
            self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), 4 << 20)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(True)  # receive() asks MSG_DONTWAIT per call
        self._buf = bytearray(65536 + 4096)
        self._view = memoryview(self._buf)

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- configuration (blocking, acknowledged) ------------------------------------------------------------
    def _request(self, queue: int, attrs: bytes) -> None:
        self._seq += 1
        body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", queue) + attrs
        msg = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0) + body
        self.sock.setblocking(True)
        self.sock.settimeout(5.0)
        try:
            self.sock.send(msg)
            while True:
                data = self.sock.recv(65536)
                for kind, seq, payload in messages(data):
                    if kind == NLMSG_ERROR and seq == self._seq:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code:
                            raise OSError(code, f"NFQUEUE config of queue {queue}: {os.strerror(code)}")
                        return
                    # a packet that arrived meanwhile on an already bound queue cannot happen here: the
                    # table steering to us is created after every queue is bound
        finally:
            self.sock.settimeout(None)

    def bind(self, queue: int, *, copy_mode: int = NFQNL_COPY_PACKET, copy_range: int = 20, maxlen: int = 4096,
             fail_open: bool = True, gso: bool = True) -> None:
        """Bind ``queue`` to this socket. EBUSY: another process (or socket) has it.

        ``gso``: GSO packets are queued whole (else the kernel segments them first and fills in checksums:
        what a copy that is to be sent again needs)."""
        flags = (NFQA_CFG_F_GSO if gso else 0) | (NFQA_CFG_F_FAIL_OPEN if fail_open else 0)
        attrs = (nla(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_BIND, 0))
                 + nla(NFQA_CFG_PARAMS, struct.pack(">IB", copy_range, copy_mode))
                 + nla(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen))
                 + nla(NFQA_CFG_MASK, struct.pack(">I", NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN))
                 + nla(NFQA_CFG_FLAGS, struct.pack(">I", flags)))
        self._request(queue, attrs)
        self.queues.append(queue)

    def unbind(self, queue: int) -> None:
        """Unbind ``queue``; the kernel drops what is still queued on it (release first)."""
        try:
            self._request(queue, nla(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_UNBIND, 0)))
        except OSError as exc:
            if exc.errno not in (errno.ENODEV, errno.ENOENT):
                raise
        self.queues.remove(queue)

    # -- data path (non-blocking) --------------------------------------------------------------------------
    def receive(self, limit: int = 256) -> tuple[list[QueuedPacket], int]:
        """Up to ``limit`` queued packets without blocking, and the number of netlink errors seen (e.g. a
        verdict for a packet id the kernel no longer holds; ENOBUFS when the socket overflowed)."""
        packets: list[QueuedPacket] = []
        errors = 0
        recv_into = self.sock.recv_into
        view = self._view
        for _ in range(limit):
            try:
                n = recv_into(self._buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    errors += 1
                    continue
                raise
            offset = 0
            while offset + NLMSG_HDR.size <= n:
                length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(view, offset)
                if length < NLMSG_HDR.size:
                    break
                if kind == MSG_PACKET:
                    packets.append(_parse_packet(view[offset + NLMSG_HDR.size: offset + length]))
                elif kind == NLMSG_ERROR:
                    if struct.unpack_from("=i", view, offset + NLMSG_HDR.size)[0] != 0:
                        errors += 1
                offset += (length + 3) & ~3
        return packets, errors

    def verdicts(self, items: Iterable[tuple[int, int, int]]) -> None:
        """Send (queue, packet id, verdict) for several packets in one datagram."""
        items = list(items)
        if not items:
            return
        chunk = 2048  # 64 KiB datagrams
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            buf = bytearray(_VERDICT_LEN * len(part))
            pack = _VERDICT.pack_into
            for i, (queue, packet_id, verdict) in enumerate(part):
                self._seq += 1
                pack(buf, i * _VERDICT_LEN, _VERDICT_LEN, MSG_VERDICT, NLM_F_REQUEST, self._seq, 0,
                     socket.AF_UNSPEC, 0, socket.htons(queue), 12, NFQA_VERDICT_HDR, socket.htonl(verdict),
                     socket.htonl(packet_id))
            self.sock.send(buf)  # blocking socket: a full send buffer waits rather than losing verdicts

    def close(self) -> None:
        """Unbind our queues and close. Packets still queued are dropped by the kernel: release them first."""
        for queue in list(self.queues):
            with contextlib.suppress(OSError):
                self.unbind(queue)
        self.sock.close()


class Resender:
    """Raw IP sockets in a namespace that send copied packets again, marked so that our rules let them pass.

    Used for egress: the original is dropped as soon as it is copied, which frees it and so uncharges the
    sending socket (a local TCP sender is not throttled by its small-queue limit for the length of the delay,
    and a UDP sender does not block on its send buffer); the copy goes out at release time through the
    routing and OUTPUT/POSTROUTING hooks again."""

    def __init__(self, netns: str | None, mark: int):
        self.sockets: dict[int, socket.socket] = {}
        try:
            for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
                with entered_netns(netns):
                    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)  # header included
                self.sockets[version] = sock
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), 8 << 20)
                sock.setblocking(False)  # a full buffer loses the packet (counted), never stalls the releases
        except BaseException:
            self.close()
            raise
        self.errors = 0

    def send(self, packet: bytes) -> None:
        try:
            if packet[0] >> 4 == 4:
                self.sockets[4].sendto(packet, (socket.inet_ntop(socket.AF_INET, packet[16:20]), 0))
            else:
                self.sockets[6].sendto(packet, (socket.inet_ntop(socket.AF_INET6, packet[24:40]), 0))
        except OSError:
            self.errors += 1  # no route any more, or our send buffer full: lost, as it could be on the wire

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


def _parse_packet(msg: memoryview) -> QueuedPacket:
    queue = int.from_bytes(msg[2:4], "big")
    offset = NFGENMSG.size
    packet_id = length = 0
    payload = b""
    end = len(msg)
    while offset + 4 <= end:
        nla_len, nla_type = NLA_HDR.unpack_from(msg, offset)
        if nla_len < 4:
            break
        nla_type &= NLA_TYPE_MASK
        if nla_type == NFQA_PACKET_HDR:
            packet_id = int.from_bytes(msg[offset + 4: offset + 8], "big")
        elif nla_type == NFQA_CAP_LEN:
            length = int.from_bytes(msg[offset + 4: offset + 8], "big")
        elif nla_type == NFQA_PAYLOAD:
            payload = bytes(msg[offset + 4: offset + nla_len])
        offset += (nla_len + 3) & ~3
    if not length:
        length = len(payload)
    return QueuedPacket(queue, packet_id, length, payload)


def nfqueue_available(netns: str | None = None) -> str | None:
    """None if NFQUEUE can be used in ``netns``; else what is missing. Changes nothing (a socket, closed)."""
    try:
        sock = QueueSocket(netns, rcvbuf_bytes=1 << 16)
    except FileNotFoundError:
        raise
    except OSError as exc:
        return f"NETLINK_NETFILTER sockets ({exc.strerror}): the kernel lacks nfnetlink"
    try:
        # Unbinding a queue nobody bound answers ENODEV when nfnetlink_queue exists; without it nfnetlink
        # answers EINVAL/EOPNOTSUPP (no such subsystem).
        try:
            sock._request(65535, nla(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_UNBIND, 0)))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EPERM, errno.EBUSY):
                return None
            return f"NFQUEUE (nfnetlink_queue answered {exc.strerror})"
        return None
    finally:
        sock.sock.close()


def queued_in_kernel(netns: str | None, queues: Iterable[int]) -> int | None:
    """Packets waiting for a verdict in ``queues`` (the kernel's queue_total), or None if it cannot be read.

    /proc/thread-self/net/... is the calling thread's namespace, the one entered_netns switched to."""
    wanted = set(queues)
    try:
        with entered_netns(netns), open("/proc/thread-self/net/netfilter/nfnetlink_queue") as f:
            text = f.read()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        fields = line.split()  # queue number, peer portid, queue_total, copy mode, copy range, dropped, ...
        if len(fields) >= 3 and int(fields[0]) in wanted:
            total += int(fields[2])
    return total
