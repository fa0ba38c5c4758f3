"""The nftables table that steers a run's flows to its NFQUEUE queues (the queues themselves: nfqueue.py).

Packets reach a queue through an nftables table of our own (``table inet chaos_inject_<run>``), created in the
flow's namespace and removed as a whole: deleting our table removes exactly our rules, never an operator's.
Each rule matches one flow (counter included) and jumps to chain ``qN``, whose one rule is xtables' NFQUEUE
target with ``--queue-bypass`` (through nft_compat, as iptables-nft does: kernels without CONFIG_NFT_QUEUE,
like this project's, refuse nft's own ``queue`` statement). With no process bound to queue N (the injector
died), the kernel accepts the packet instead of dropping it, so the fault ends at once.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass

from .rawnl import NETLINK_NETFILTER, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDR, error_code, messages, netlink_socket, nla

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
NLM_F_APPEND = 0x800
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
    target = (nla(NFTA_TARGET_NAME, b"NFQUEUE\0") + nla(NFTA_TARGET_REV, struct.pack(">I", 3))
              + nla(NFTA_TARGET_INFO, info))
    expr = nla(NFTA_EXPR_NAME, b"target\0") + nla(NFTA_EXPR_DATA | NLA_F_NESTED, target)
    attrs = (nla(NFTA_RULE_TABLE, table.encode() + b"\0") + nla(NFTA_RULE_CHAIN, chain.encode() + b"\0")
             + nla(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, nla(NFTA_LIST_ELEM | NLA_F_NESTED, expr)))
    return _nfmsg(NFT_MSG_NEWRULE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq, NFPROTO_INET, 0,
                  attrs)


NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN = (NFNL_SUBSYS_NFTABLES << 8) | 0, (NFNL_SUBSYS_NFTABLES << 8) | 3
NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 1, 3


def check_queue_target(netns: str | None) -> str | None:
    """None if an nftables rule can carry the NFQUEUE target here; else the kernel's refusal. Changes nothing:
    the batch (a scratch table, chain and rule) has no end message, so the kernel validates it and aborts."""
    table = f"chaos_inject_probe_{os.getpid()}"
    attrs_table = nla(NFTA_TABLE_NAME, table.encode() + b"\0")
    attrs_chain = nla(NFTA_CHAIN_TABLE, table.encode() + b"\0") + nla(NFTA_CHAIN_NAME, b"q0\0")
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    batch = [_nfmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b""),
             _nfmsg(NFT_MSG_NEWTABLE, flags, 2, NFPROTO_INET, 0, attrs_table),
             _nfmsg(NFT_MSG_NEWCHAIN, flags, 3, NFPROTO_INET, 0, attrs_chain),
             _queue_target_rule(table, "q0", 0, 4)]
    try:
        with netlink_socket(netns, NETLINK_NETFILTER) as sock:
            sock.settimeout(5.0)
            sock.send(b"".join(batch))
            pending = {2, 3, 4}
            while pending:
                for kind, seq, payload in messages(sock.recv(65536)):
                    if kind != NLMSG_ERROR:
                        continue
                    code = error_code(payload)
                    if code:
                        what = {2: "an nftables table", 3: "an nftables chain",
                                4: "the NFQUEUE target in an nftables rule (nft_compat + xt_NFQUEUE)"}.get(seq,
                                                                                                    "nftables")
                        return f"{what}: the kernel answered {os.strerror(code)}"
                    pending.discard(seq)
            return None
    except TimeoutError:
        return "nftables over netlink: no answer from the kernel"


def add_queue_targets(netns: str | None, table: str, queues: list[int]) -> None:
    """In one nftables transaction: chain ``qN`` of ``table`` gets ``NFQUEUE --queue-num N --queue-bypass``."""
    with netlink_socket(netns, NETLINK_NETFILTER) as sock:
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
            for kind, msg_seq, payload in messages(sock.recv(65536)):
                if kind != NLMSG_ERROR:
                    continue
                code = error_code(payload)
                if code:
                    raise NftError(f"adding the NFQUEUE target to table {table}: {os.strerror(code)} "
                                   "(needs nft_compat and xt_NFQUEUE in the kernel)")
                pending.discard(msg_seq)


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
    setpriv = shutil.which("setpriv")
    if setpriv:
        # nft dies with us: a kill -9 of this process must not leave an nft still running that commits its
        # table after `sweep` already looked for it (seen in the kill -9 soak). The signal survives the execs.
        cmd = [setpriv, "--pdeathsig", "KILL", *cmd]
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
                    nla(NFTA_RULE_TABLE, table.encode() + b"\0")),
             _nfmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 2, socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES, b"")]
    try:
        with netlink_socket(netns, NETLINK_NETFILTER) as sock:
            sock.settimeout(5.0)
            sock.send(b"".join(batch))
            while True:
                for kind, msg_seq, payload in messages(sock.recv(65536)):
                    if kind != NLMSG_ERROR or msg_seq != seq + 1:
                        continue
                    code = error_code(payload)
                    if code == errno.ENOENT:
                        return False
                    if code:
                        raise NftError(f"flushing table inet {table}: {os.strerror(code)}")
                    return True
    except FileNotFoundError:
        return False  # the namespace is gone, and our table with it


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
