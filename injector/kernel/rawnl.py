"""A minimal rtnetlink client for qdiscs, with raw attributes.

pyroute2 covers links, routes, clsact and filters; for qdiscs we need what it does not give: an exact
byte-for-byte snapshot of an operator's root qdisc that can be replayed to restore it, and netem options it
does not encode (64-bit latency/jitter, distribution tables, the Gilbert-Elliott loss model).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .rtnl import entered_netns

NETLINK_NETFILTER = 12     # nfqueue.py, nftables.py (socket.NETLINK_ROUTE is 0)
NLMSG_HDR = struct.Struct("=IHHII")
TCMSG = struct.Struct("=BxxxiIII")
NLA_HDR = struct.Struct("=HH")
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLA_F_NESTED = 0x8000
TCA_KIND, TCA_OPTIONS, TCA_STATS, TCA_STAB = 1, 2, 3, 8
TC_H_ROOT, TC_H_INGRESS = 0xFFFFFFFF, 0xFFFFFFF1
REPLAYABLE_ATTRS = (TCA_KIND, TCA_OPTIONS, TCA_STAB)  # what defines a qdisc; stats are not configuration


def nla(kind: int, payload: bytes) -> bytes:
    data = NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _flags, seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            return
        yield kind, seq, data[offset + NLMSG_HDR.size: offset + length]
        offset += (length + 3) & ~3


def error_code(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR message (0: an acknowledgement)."""
    return -struct.unpack_from("=i", payload)[0]


@contextlib.contextmanager
def netlink_socket(netns: str | None, protocol: int) -> Iterator[socket.socket]:
    """A bound netlink socket of ``protocol`` made inside ``netns`` (it stays there), closed after the block.
    FileNotFoundError if the namespace does not exist."""
    with entered_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    try:
        sock.bind((0, 0))
        yield sock
    finally:
        sock.close()


def parse_attrs(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset + NLA_HDR.size <= len(data):
        length, kind = NLA_HDR.unpack_from(data, offset)
        if length < NLA_HDR.size:
            break
        out.append((kind & ~NLA_F_NESTED, data[offset + NLA_HDR.size: offset + length]))
        offset += (length + 3) & ~3
    return out


@dataclass(frozen=True)
class Qdisc:
    ifindex: int
    handle: int
    parent: int
    kind: str
    attrs: tuple[tuple[int, bytes], ...]

    @property
    def config_attrs(self) -> bytes:
        """KIND, OPTIONS and STAB exactly as the kernel reported them: enough to create it again."""
        return b"".join(nla(kind, payload) for kind, payload in self.attrs if kind in REPLAYABLE_ATTRS)

    @property
    def stats(self) -> dict[str, int]:
        for kind, payload in self.attrs:
            if kind == TCA_STATS and len(payload) >= 20:
                sent_bytes, packets, drops, overlimits = struct.unpack_from("=QIII", payload)
                return {"bytes": sent_bytes, "packets": packets, "drops": drops, "overlimits": overlimits}
        return {}


class RtnlSocket:
    def __init__(self, netns: str | None = None):
        with entered_netns(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RtnlSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return the reply messages (type, payload). Netlink errors raise OSError."""
        self.seq += 1
        seq = self.seq
        self.sock.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags | NLM_F_REQUEST, seq, 0)
                       + payload)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + NLMSG_HDR.size <= len(data):
                length, kind, _, msg_seq, _ = NLMSG_HDR.unpack_from(data, offset)
                body = data[offset + NLMSG_HDR.size: offset + length]
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise OSError(code, f"{os.strerror(code)} (rtnetlink message {msg_type})")
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                replies.append((kind, body))
            if not flags & (NLM_F_ACK | NLM_F_DUMP):
                return replies

    # -- qdiscs -------------------------------------------------------------------------------------------
    def qdiscs(self, ifindex: int) -> list[Qdisc]:
        replies = self.request(RTM_GETQDISC, NLM_F_DUMP, TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        out = []
        for _, body in replies:
            _, index, handle, parent, _ = TCMSG.unpack_from(body)
            if index != ifindex:
                continue
            attrs = tuple(parse_attrs(body[TCMSG.size:]))
            kind = next((p.rstrip(b"\0").decode() for t, p in attrs if t == TCA_KIND), "")
            out.append(Qdisc(index, handle, parent, kind, attrs))
        return out

    def root(self, ifindex: int) -> Qdisc | None:
        return next((q for q in self.qdiscs(ifindex) if q.parent == TC_H_ROOT), None)

    def add_qdisc(self, ifindex: int, parent: int, handle: int, attrs: bytes, *, replace: bool = False) -> None:
        flags = NLM_F_ACK | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self.request(RTM_NEWQDISC, flags, TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, 0) + attrs)

    def delete_qdisc(self, ifindex: int, parent: int, handle: int) -> None:
        self.request(RTM_DELQDISC, NLM_F_ACK, TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, 0))


@contextlib.contextmanager
def rtnl(netns: str | None = None) -> Iterator[RtnlSocket]:
    sock = RtnlSocket(netns)
    try:
        yield sock
    finally:
        sock.close()
