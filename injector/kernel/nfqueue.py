"""NFQUEUE over a raw NETLINK_NETFILTER socket, and the nftables table that steers a run's flows to it.

The queue protocol (linux/netfilter/nfnetlink_queue.h) is small enough to speak with ``struct``: bind a queue
number (copy mode PACKET: a 20-byte range, for which the kernel reports each packet's full length in
NFQA_CAP_LEN and queues GSO packets whole; or whole packets, segmented, to send again with ``Resender``),
receive one netlink message per queued packet, answer with verdicts (several verdict messages in one
``send``: the kernel walks every message in the datagram).

Packets reach a queue through an nftables table of our own (``table inet chaos_inject_<run>``), created in the
flow's namespace and removed as a whole: deleting our table removes exactly our rules, never an operator's.
Each rule matches one flow (counter included) and jumps to chain ``qN``, whose one rule is xtables' NFQUEUE
target with ``--queue-bypass`` (through nft_compat, as iptables-nft does: kernels without CONFIG_NFT_QUEUE,
like this project's, refuse nft's own ``queue`` statement). With no process bound to queue N (the injector
died), the kernel accepts the packet instead of dropping it, so the fault ends at once.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pyroute2 import netns as _netns

NETLINK_NETFILTER = 12
NLMSG_HDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian: packed by hand)
NLA_HDR = struct.Struct("=HH")
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
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


def _nla(kind: int, payload: bytes) -> bytes:
    data = NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


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
        with _in_netns(netns):
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
                for kind, seq, payload in _messages(data):
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
        attrs = (_nla(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_BIND, 0))
                 + _nla(NFQA_CFG_PARAMS, struct.pack(">IB", copy_range, copy_mode))
                 + _nla(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen))
                 + _nla(NFQA_CFG_MASK, struct.pack(">I", NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN))
                 + _nla(NFQA_CFG_FLAGS, struct.pack(">I", flags)))
        self._request(queue, attrs)
        self.queues.append(queue)

    def unbind(self, queue: int) -> None:
        """Unbind ``queue``; the kernel drops what is still queued on it (release first)."""
        try:
            self._request(queue, _nla(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_UNBIND, 0)))
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
                with _in_netns(netns):
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


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _flags, seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            return
        yield kind, seq, data[offset + NLMSG_HDR.size: offset + length]
        offset += (length + 3) & ~3


@contextlib.contextmanager
def _in_netns(netns: str | None) -> Iterator[None]:
    if not netns:
        yield
        return
    if not os.path.exists(f"/var/run/netns/{netns}"):
        raise FileNotFoundError(f"network namespace {netns!r} does not exist")
    _netns.pushns(netns)
    try:
        yield
    finally:
        _netns.popns()


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
            sock._request(65535, _nla(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_UNBIND, 0)))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EPERM, errno.EBUSY):
                return None
            return f"NFQUEUE (nfnetlink_queue answered {exc.strerror})"
        return None
    finally:
        sock.sock.close()


# -- nftables: a table of our own that steers matching packets to the queues ----------------------------------
# Base chains per direction: (chain, netfilter hook, interface key). Priority -150 (mangle): after conntrack
# (-200), before DNAT (-100): egress matches packets as the local application sent them (and forwarded ones after
# DNAT, before SNAT); ingress as they arrived. A re-sent egress copy passes conntrack and NAT like a new packet.
CHAINS = {"egress": (("egress_local", "output", "oifname"), ("egress_forward", "forward", "oifname")),
          "ingress": (("ingress", "prerouting", "iifname"),)}
CHAIN_PRIORITY = -150
PORT_PROTOCOLS = "{ tcp, udp, sctp, udplite }"
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite", 1: "icmp", 58: "ipv6-icmp"}


@dataclass(frozen=True)
class SteerRule:
    """One nft rule: packets on ``ifname`` at ``hook`` matching the 5-tuple go to ``queue``."""

    hook: str                      # egress | ingress
    ifname: str
    family: int                    # 4 | 6
    protocol: int                  # 0 = any
    src: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    sport: int | None
    dport: int | None
    queue: int
    skip_mark: int | None = None   # packets carrying this mark (our own re-sent copies) are not queued again

    @property
    def chain(self) -> str:
        return f"q{self.queue}"

    def expression(self) -> str:
        ifkey = CHAINS[self.hook][0][2]
        parts = [f'{ifkey} "{_quote(self.ifname)}"', f"meta nfproto {'ipv4' if self.family == 4 else 'ipv6'}"]
        if self.skip_mark is not None:
            parts.append(f"meta mark != {self.skip_mark:#x}")
        ip = "ip" if self.family == 4 else "ip6"
        if self.protocol:
            parts.append(f"meta l4proto {PROTOCOL_NAMES.get(self.protocol, self.protocol)}")
        elif self.sport is not None or self.dport is not None:
            parts.append(f"meta l4proto {PORT_PROTOCOLS}")
        if self.src is not None:
            parts.append(f"{ip} saddr {_net(self.src)}")
        if self.dst is not None:
            parts.append(f"{ip} daddr {_net(self.dst)}")
        if self.sport is not None:
            parts.append(f"th sport {self.sport}")
        if self.dport is not None:
            parts.append(f"th dport {self.dport}")
        parts.append(f"counter jump {self.chain}")
        return " ".join(parts)


def _net(net) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _quote(ifname: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", ifname):
        raise ValueError(f"interface name {ifname!r} cannot be written into an nft rule")
    return ifname


def table_name(run_id: str) -> str:
    """nft identifiers: letters, digits, underscore."""
    return "chaos_inject_" + re.sub(r"[^A-Za-z0-9_]", "_", run_id)


def table_script(table: str, rules: list[SteerRule], *, priority: int = CHAIN_PRIORITY) -> str:
    """One nft transaction: ``create`` fails if a table of that name exists (never merge into another's)."""
    lines = [f"create table inet {table}"]
    for queue in sorted({r.queue for r in rules}):
        lines.append(f"add chain inet {table} q{queue}")  # its one rule, the NFQUEUE target: add_queue_targets
    for hook in ("egress", "ingress"):
        chosen = [r for r in rules if r.hook == hook]
        if not chosen:
            continue
        for chain, nf_hook, _ in CHAINS[hook]:
            lines.append(f"add chain inet {table} {chain} {{ type filter hook {nf_hook} priority {priority}; "
                         "policy accept; }")
            for rule in chosen:
                lines.append(f"add rule inet {table} {chain} {rule.expression()}")
    return "\n".join(lines) + "\n"


# nftables netlink, for the one thing the nft tool cannot write on this kernel: the kernel has no nft_queue
# expression (CONFIG_NFT_QUEUE off: `queue num N` is refused) but has xtables' NFQUEUE target, reachable from
# an nftables rule through nft_compat (what iptables-nft does). A chain ``qN`` of our table holds that target.
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWRULE = (NFNL_SUBSYS_NFTABLES << 8) | 6
NLM_F_CREATE, NLM_F_APPEND = 0x400, 0x800
NLA_F_NESTED = 0x8000
NFPROTO_INET = 1
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
NFTA_TARGET_NAME, NFTA_TARGET_REV, NFTA_TARGET_INFO = 1, 2, 3
NFQ_FLAG_BYPASS = 0x01


def _nfmsg(kind: int, flags: int, seq: int, family: int, res_id: int, attrs: bytes) -> bytes:
    body = struct.pack("=BB", family, 0) + struct.pack(">H", res_id) + attrs
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body


def _queue_target_rule(table: str, chain: str, queue: int, seq: int) -> bytes:
    info = struct.pack("=HHH", queue, 1, NFQ_FLAG_BYPASS) + b"\0\0"  # xt_NFQ_info_v3, XT_ALIGNed to 8
    target = (_nla(NFTA_TARGET_NAME, b"NFQUEUE\0") + _nla(NFTA_TARGET_REV, struct.pack(">I", 3))
              + _nla(NFTA_TARGET_INFO, info))
    expr = _nla(NFTA_EXPR_NAME, b"target\0") + _nla(NFTA_EXPR_DATA | NLA_F_NESTED, target)
    attrs = (_nla(NFTA_RULE_TABLE, table.encode() + b"\0") + _nla(NFTA_RULE_CHAIN, chain.encode() + b"\0")
             + _nla(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, _nla(NFTA_LIST_ELEM | NLA_F_NESTED, expr)))
    return _nfmsg(NFT_MSG_NEWRULE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq, NFPROTO_INET, 0,
                  attrs)


NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN = (NFNL_SUBSYS_NFTABLES << 8) | 0, (NFNL_SUBSYS_NFTABLES << 8) | 3
NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 1, 3


def check_queue_target(netns: str | None) -> str | None:
    """None if an nftables rule can carry the NFQUEUE target here; else the kernel's refusal. Changes nothing:
    the batch (a scratch table, chain and rule) has no end message, so the kernel validates it and aborts."""
    table = f"chaos_inject_probe_{os.getpid()}"
    attrs_table = _nla(NFTA_TABLE_NAME, table.encode() + b"\0")
    attrs_chain = _nla(NFTA_CHAIN_TABLE, table.encode() + b"\0") + _nla(NFTA_CHAIN_NAME, b"q0\0")
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    batch = [_nfmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""),
             _nfmsg(NFT_MSG_NEWTABLE, flags, 2, NFPROTO_INET, 0, attrs_table),
             _nfmsg(NFT_MSG_NEWCHAIN, flags, 3, NFPROTO_INET, 0, attrs_chain),
             _queue_target_rule(table, "q0", 0, 4)]
    with _in_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.settimeout(5.0)
        sock.send(b"".join(batch))
        pending = {2, 3, 4}
        while pending:
            for kind, seq, payload in _messages(sock.recv(65536)):
                if kind != NLMSG_ERROR:
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    what = {2: "an nftables table", 3: "an nftables chain",
                            4: "the NFQUEUE target in an nftables rule (nft_compat + xt_NFQUEUE)"}.get(seq, "nftables")
                    return f"{what}: the kernel answered {os.strerror(code)}"
                pending.discard(seq)
        return None
    except TimeoutError:
        return "nftables over netlink: no answer from the kernel"
    finally:
        sock.close()


def add_queue_targets(netns: str | None, table: str, queues: list[int]) -> None:
    """In one nftables transaction: chain ``qN`` of ``table`` gets ``NFQUEUE --queue-num N --queue-bypass``."""
    with _in_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.settimeout(5.0)
        seq = 1
        batch = [_nfmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b"")]
        pending = set()
        for queue in queues:
            seq += 1
            pending.add(seq)
            batch.append(_queue_target_rule(table, f"q{queue}", queue, seq))
        seq += 1
        batch.append(_nfmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""))
        sock.send(b"".join(batch))
        while pending:
            for kind, msg_seq, payload in _messages(sock.recv(65536)):
                if kind != NLMSG_ERROR:
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise NftError(f"adding the NFQUEUE target to table {table}: {os.strerror(code)} "
                                   "(needs nft_compat and xt_NFQUEUE in the kernel)")
                pending.discard(msg_seq)
    finally:
        sock.close()


def nft_binary() -> str | None:
    return shutil.which("nft")


def _nft(netns: str | None, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    nft = nft_binary()
    if nft is None:
        raise FileNotFoundError("nft (Debian package nftables) is not installed")
    cmd = [nft, *args]
    if netns:
        if not os.path.exists(f"/var/run/netns/{netns}"):
            raise FileNotFoundError(f"network namespace {netns!r} does not exist")
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)


class NftError(RuntimeError):
    pass


def check_table(netns: str | None, script: str) -> None:
    """Let the kernel validate the transaction without committing it (``nft --check``)."""
    result = _nft(netns, ["--check", "-f", "-"], script)
    if result.returncode != 0:
        raise NftError(result.stderr.strip() or f"nft --check exited {result.returncode}")


def create_table(netns: str | None, table: str, rules: list[SteerRule]) -> None:
    """Create our table: matches and chains with ``nft -f -`` (one transaction), then the queue targets (a
    second one). Between the two, matching packets jump to an empty chain and pass: no half state drops
    anything. If the second step fails, the table is deleted again before raising: nothing is left."""
    result = _nft(netns, ["-f", "-"], table_script(table, rules))
    if result.returncode != 0:
        raise NftError(result.stderr.strip() or f"nft exited {result.returncode}")
    try:
        add_queue_targets(netns, table, sorted({r.queue for r in rules}))
    except BaseException:
        delete_table(netns, table)
        raise


def delete_table(netns: str | None, table: str) -> bool:
    """Delete our table; False if it (or its namespace) is already gone."""
    try:
        result = _nft(netns, ["delete", "table", "inet", table])
    except FileNotFoundError as exc:
        if "namespace" in str(exc):
            return False
        raise
    if result.returncode == 0:
        return True
    if "No such file or directory" in result.stderr:
        return False
    raise NftError(result.stderr.strip() or f"nft delete table exited {result.returncode}")


NFT_MSG_DELRULE = (NFNL_SUBSYS_NFTABLES << 8) | 8


def flush_table(netns: str | None, table: str) -> bool:
    """Remove every rule of our table but keep its chains: nothing is steered to the queues any more, and the
    hooks stay registered. (Deleting the table unregisters them, and on hook unregistration the kernel drops
    every packet still waiting for a verdict in any queue of the namespace: what a run's end must avoid.)
    One netlink transaction (a rule deletion naming only the table is ``nft flush table``), in-process: the
    fault ends within a millisecond of the hold's release, not a subprocess later. False if the table (or
    its namespace) is already gone."""
    seq = 1
    batch = [_nfmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""),
             _nfmsg(NFT_MSG_DELRULE, NLM_F_REQUEST | NLM_F_ACK, seq + 1, NFPROTO_INET, 0,
                    _nla(NFTA_RULE_TABLE, table.encode() + b"\0")),
             _nfmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 2, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b"")]
    try:
        with _in_netns(netns):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except FileNotFoundError:
        return False  # the namespace is gone, and our table with it
    try:
        sock.bind((0, 0))
        sock.settimeout(5.0)
        sock.send(b"".join(batch))
        while True:
            for kind, msg_seq, payload in _messages(sock.recv(65536)):
                if kind != NLMSG_ERROR or msg_seq != seq + 1:
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if code == errno.ENOENT:
                    return False
                if code:
                    raise NftError(f"flushing table inet {table}: {os.strerror(code)}")
                return True
    finally:
        sock.close()


def queued_in_kernel(netns: str | None, queues: Iterable[int]) -> int | None:
    """Packets waiting for a verdict in ``queues`` (the kernel's queue_total), or None if it cannot be read.

    /proc/thread-self/net/... is the calling thread's namespace, the one _in_netns switched to."""
    wanted = set(queues)
    try:
        with _in_netns(netns), open("/proc/thread-self/net/netfilter/nfnetlink_queue") as f:
            text = f.read()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        fields = line.split()  # queue number, peer portid, queue_total, copy mode, copy range, dropped, ...
        if len(fields) >= 3 and int(fields[0]) in wanted:
            total += int(fields[2])
    return total


def list_tables(netns: str | None) -> list[str]:
    result = _nft(netns, ["list", "tables"])
    if result.returncode != 0:
        raise NftError(result.stderr.strip())
    return [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("table ")]


def rule_counters(netns: str | None, table: str) -> dict[int, tuple[int, int]]:
    """Queue number -> (packets, bytes) counted by our rules in the kernel."""
    result = _nft(netns, ["-j", "list", "table", "inet", table])
    if result.returncode != 0:
        raise NftError(result.stderr.strip())
    out: dict[int, tuple[int, int]] = {}
    for item in json.loads(result.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        counter = queue = None
        for expr in rule.get("expr", []):
            if "counter" in expr:
                counter = expr["counter"]
            elif "jump" in expr and str(expr["jump"].get("target", "")).startswith("q"):
                queue = int(expr["jump"]["target"][1:])
        if counter is not None and queue is not None:
            packets, nbytes = out.get(queue, (0, 0))
            out[queue] = (packets + counter["packets"], nbytes + counter["bytes"])
    return out
