"""Userspace delay engine: the fallback for kernels with neither sch_netem nor sch_fq.

Matching packets are steered by an nftables table of ours to NFQUEUE; one I/O thread of this process receives
them and holds each until receive time + delay (+ jitter): egress packets as copies (the original is dropped at
once, the copy re-sent from a raw socket at release), ingress packets as they are (released with ``NF_ACCEPT``).

This module checks a plan, binds the queues, steers packets to them and ends the fault without losing what is
held; the I/O thread is ``userspace_io.py``'s ``HoldThread``, the per-rule delay model and achieved figures
``userspace_holds.py``'s, the queue numbers and nftables rules ``userspace_steering.py``'s.
"""

from __future__ import annotations

import logging
import os
import random
import time

from ..errors import ApplyFailed, InvalidSpec, NotPermitted, Unsupported
from ..kernel import nfqueue as nq
from ..kernel import nftables as nft
from ..kernel.owner import KernelOwner
from ..plan import Interface, Plan
from .common import interface_links
from .userspace_holds import JitterModel, RuleState, hold_statistics
from .userspace_io import HoldThread
from .userspace_steering import (RESEND_MARK, check_fault, plan_namespaces, queue_base, queue_maxlen, rule_seed,
                                 steer_rules, where)

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 2.0        # at the end: how long we wait for the kernel's queues to empty before the table goes
DRAIN_SETTLE_S = 0.005       # ... and for how long they must stay empty (a packet that took a rule just before the
                             # flush is queued a few µs after it)


class UserspaceEngine:
    """Delay and jitter by holding packets in userspace (NFQUEUE), for kernels without netem and fq.

    How: an nftables table of ours (``inet chaos_inject_<run>``, in each flow's namespace) matches each rule's
    packets (egress: output and forward + ``oifname``; ingress: prerouting + ``iifname``; priority -150, after
    conntrack and before NAT, so local egress packets are matched as the application sent them) and hands them
    to NFQUEUE queue N (one queue per rule) with the bypass flag. One I/O thread, SCHED_FIFO priority 1,
    receives them in batches, keeps them in a heap keyed by release time (receive time + delay + jitter) and
    releases what is due: it sleeps in ``select()`` until 50 µs before the next release (150 µs if it cannot be
    real-time) and busy-waits the rest while still receiving, so arrivals are stamped on time (without the
    busy-wait, releases were 31-39 µs late at the median; with it, 2-18 µs). CPU: the engine process used
    ~35-45 % of one core at 3,000 and at 10,000 packets/s (busy-waiting included). While it runs, the
    process's GIL switch interval is 0.2 ms, and the objects alive at ``apply`` are moved out of the garbage
    collector's reach (``gc.freeze()``: full collections paused releases for ms).

    Egress packets are copied whole (the kernel segments GSO packets and fills in checksums first), the
    original is dropped at once and the copy is sent at release time from a raw socket in the namespace, with
    fwmark ``0x63686169`` that our rules skip; it goes through routing and the OUTPUT/POSTROUTING hooks again
    (an operator's rules there see the packet twice; two runs delaying the same packets delay it once). A
    packet longer than the device MTU (a local datagram is fragmented after our hook; a raw socket would refuse
    it) is held as it is. Holding the originals instead (``copy_egress=False``) keeps them charged to the
    sending socket, as netem avoids by orphaning them: a local TCP sender's small-queue limit then throttled
    bulk transfer to 2.3 Mbit/s at 20 ms (270-370 Mbit/s with copies), and UDP senders blocked on their send
    buffer. Ingress packets are held and released with ``NF_ACCEPT`` verdicts.

    Order: without jitter, a rule's packets leave in arrival order (equal delays, ties by arrival). With jitter
    each packet leaves at its own time, so jitter larger than the packet spacing reorders, as netem does.

    If the process dies (even SIGKILL), its netlink socket closes, the kernel destroys the queues and the
    bypass flag makes our rules accept packets at once: the fault ends immediately. Packets held at that moment
    are lost (at most rate x delay of them). ``sweep`` deletes the leftover table. On a normal end, every held
    packet is released at once and from then on each packet reaching us is accepted as it arrives; the table's
    rules are flushed (its hooks stay: deleting a table unregisters them, and the kernel then drops every packet
    still queued in the namespace: all held ingress packets were lost that way); once the kernel's queues are
    empty the table is deleted, then the queues are unbound. Measured (``bench/userspace_stop.py``: 300 ms, 2,000
    datagrams/s, ~600 held when the end began, medians of 5 runs, 2026-11-27, loaded host): 0 lost for ingress,
    egress and egress longer than the MTU; the old order (table first) lost 597 / 0 / 595; the end took 103 /
    106 / 57 ms. The kernel's drop on
    hook removal is per namespace, not per queue: when another run's table (or any base chain) in the same
    namespace is deleted, packets we hold there at that moment are lost. If a queue
    overflows (``maxlen``, sized for 20,000 packets/s over the longest delay) the kernel lets packets pass
    undelayed (fail-open): ``matched_packets`` (kernel rule counter) minus ``queued_packets`` shows how many.

    Measured precision (``bench/delay_engines.py --engines userspace --rate 3000 --count 6000``: UDP one-way
    delay between two namespaces on this project's 2-core 6.18 microVM, 3,000 packets/s, 6,000 packets per
    delay, error = achieved added delay - requested, arrival = the kernel's receive stamp; egress, so the copy
    path; 2026-12-06, load 10.4): median +0.08 / +0.13 / +0.11 ms and p99 +0.33 / +0.50 / +0.47 ms for 1 / 10 /
    100 ms; never early (p1 of the error +0.05 to +0.07 ms). A run of 2026-11-27 (four other jobs on the host)
    had medians +0.13 to +0.14 ms and p99 +1.2 to +3.2 ms. The ~0.1 ms median excess is the NFQUEUE round trip
    (kernel -> this process -> verdict or re-send); the p99 is host stalls (a quieter host gave +0.2 to +0.7 ms
    in an earlier run of the same measurement). Without the real-time thread, p99 on a loaded host (load 4)
    reached +1 to +50 ms. The
    counters report what was achieved per rule: ``delay_p50_ns``, ``delay_p99_ns`` (release time - receive
    time) and ``release_late_p50_ns`` / ``release_late_p99_ns`` (release time - planned release time).
    """

    name = "userspace"

    def __init__(self, *, realtime: bool = True, copy_egress: bool = True) -> None:
        self.realtime = realtime
        self.copy_egress = copy_egress
        self._resenders: list[nq.Resender | None] = []
        self._states: dict[int, RuleState] = {}
        self._sockets: list[nq.QueueSocket] = []
        self._by_queue: dict[tuple[int, int], RuleState] = {}   # (socket index, queue) -> rule
        self._tables: list[tuple[str | None, str]] = []
        self._io: HoldThread | None = None        # the I/O thread (userspace_io.py), once started

    # -- before any change -------------------------------------------------------------------------------
    def check(self, plan: Plan) -> None:
        self._check(plan)

    def _check(self, plan: Plan) -> dict[Interface, dict]:
        """check(), returning the plan's links as looked up (apply reads their MTU: no second lookup)."""
        if os.geteuid() != 0:
            raise NotPermitted("the userspace engine needs root (CAP_NET_ADMIN: nftables and NFQUEUE); "
                               "run it with sudo")
        for fault in plan.faults:  # each flow may have its own
            check_fault(fault)
        if nft.nft_binary() is None:
            raise Unsupported("the userspace engine needs the nft tool (Debian package nftables)")
        if len(plan.rules) > 0x8000:
            raise InvalidSpec(f"the flows expand to {len(plan.rules)} rules; the userspace engine has 32768 "
                              "queues", field="flow")
        links = interface_links(plan)  # every interface (and namespace) exists, else Unsupported naming it
        for netns in plan_namespaces(plan):
            missing = nq.nfqueue_available(netns) or nft.check_queue_target(netns)
            if missing:
                raise Unsupported(f"the userspace engine needs {missing}")
            rules = steer_rules(plan, netns, queue_base(plan.run_id), self.copy_egress)
            try:
                nft.check_table(netns, nft.table_script(nft.table_name(plan.run_id), rules))
            except nft.NftError as exc:
                raise Unsupported(f"nftables refused our table{where(netns)}: {exc}") from None
        return links

    # -- apply -------------------------------------------------------------------------------------------
    def apply(self, plan: Plan, owner: KernelOwner, expires_ns: int) -> None:
        links = self._check(plan)
        maxlen = max(queue_maxlen(fault) for fault in plan.faults)
        seed_root = plan.seed if plan.seed is not None else random.SystemRandom().getrandbits(64)
        table = nft.table_name(plan.run_id)
        namespaces = plan_namespaces(plan)
        # 1. queues (in-process: they die with us), bound before any packet is steered to them
        bound: dict[str | None, list[nft.SteerRule]] = {}
        for netns in namespaces:
            sock, rules = self._bind_queues(plan, netns, maxlen)
            owner.callback(sock.close)
            index = len(self._sockets)
            self._sockets.append(sock)
            resender = None
            if any(r.skip_mark is not None for r in rules):
                try:
                    resender = nq.Resender(netns, RESEND_MARK)
                except OSError as exc:
                    raise ApplyFailed(f"opening raw sockets{where(netns)} failed: {exc}") from exc
                owner.callback(resender.close)
            self._resenders.append(resender)
            bound[netns] = rules
            planned = [r for r in plan.rules if r.interface.netns == netns]
            for rule, steer in zip(planned, rules):
                copy = steer.skip_mark is not None
                state = RuleState(rule=rule, queue=steer.queue, rng=random.Random(rule_seed(seed_root, rule)),
                                   jitter=JitterModel(plan.fault_of(rule)), copy=copy,
                                   mtu=links[rule.interface]["mtu"] if copy else 0)
                self._states[rule.rule_id] = state
                self._by_queue[(index, steer.queue)] = state
        # 2. the I/O thread; stopping it releases every held packet (after the tables are gone)
        self._io = HoldThread(self._sockets, self._resenders, self._by_queue, realtime=self.realtime,
                              name=f"chaos-inject-nfqueue-{plan.run_id}")
        self._io.start()
        owner.callback(self._io.stop)
        # 3. the tables that steer packets to us, one per namespace; recorded in the ledger first
        for netns in namespaces:
            rules = bound[netns]
            entry = {"kind": "nft-table", "netns": netns, "family": "inet", "name": table}

            def make(netns=netns, rules=rules) -> None:
                try:
                    nft.create_table(netns, table, rules)
                except (nft.NftError, OSError) as exc:
                    raise ApplyFailed(f"creating nftables table inet {table}{where(netns)} failed: {exc}") from exc
            owner.create(entry, make)
            self._tables.append((netns, table))
            # Undone before the table: deleting it unregisters its hooks, and the kernel then drops every packet
            # still waiting in a queue of the namespace (ingress packets are held as they are: all were lost).
            owner.callback(lambda netns=netns: self._end_steering(netns, table))

    def _bind_queues(self, plan: Plan, netns: str | None, maxlen: int) -> tuple[nq.QueueSocket, list[nft.SteerRule]]:
        """A socket in ``netns`` bound to one queue per rule. Another program's queue numbers are left alone:
        on EBUSY we move to another base."""
        base = queue_base(plan.run_id)
        for attempt in range(16):
            rules = steer_rules(plan, netns, (base + attempt * 977) & 0x7FFF, self.copy_egress)
            sock = nq.QueueSocket(netns)
            try:
                for rule in rules:
                    if rule.skip_mark is not None:  # whole packets, segmented and with checksums: to send again
                        sock.bind(rule.queue, maxlen=maxlen, copy_range=0xFFFF, gso=False)
                    else:
                        sock.bind(rule.queue, maxlen=maxlen)
                return sock, rules
            except OSError as exc:
                sock.close()
                if exc.errno != 16:  # EBUSY
                    raise ApplyFailed(f"binding NFQUEUE queues{where(netns)} failed: {exc}") from exc
            except BaseException:
                sock.close()
                raise
        raise ApplyFailed(f"no free range of {len(rules)} NFQUEUE queue numbers{where(netns)}")

    def _end_steering(self, netns: str | None, table: str) -> None:
        """The first step of a normal end in ``netns``: the I/O thread releases every held packet and from now
        on accepts what reaches it at once; our table's rules are flushed (its hooks stay registered, so the
        kernel drops nothing); we wait until the kernel holds none of our packets there. Only then may the
        table be deleted."""
        io = self._io
        io.passing.set()
        if io.alive():
            io.held_released.wait(timeout=DRAIN_TIMEOUT_S)
        try:
            nft.flush_table(netns, table)
        except (nft.NftError, OSError) as exc:
            log.warning("flushing nftables table inet %s%s failed (%s): packets held now may be lost when it "
                        "is deleted", table, where(netns), exc)
            return
        indexes = [i for i, sock in enumerate(self._sockets) if sock.netns == netns]
        queues = [q for i in indexes for q in self._sockets[i].queues]
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        empty_since = None
        while True:
            if not io.alive():
                for i in indexes:  # nobody else reads the sockets any more
                    io.accept_waiting(i)
            left = nq.queued_in_kernel(netns, queues)
            now = time.monotonic()
            if left is None:  # cannot see the kernel's queues: give the thread a moment instead
                time.sleep(0.05)
                return
            if left == 0:
                empty_since = now if empty_since is None else empty_since
                if now - empty_since >= DRAIN_SETTLE_S:
                    return
            else:
                empty_since = None
            if now > deadline:
                log.warning("%d packet(s) still queued%s after %.0f s: the kernel drops them with the table",
                            left, where(netns), DRAIN_TIMEOUT_S)
                return
            time.sleep(0.001)

    def renew(self, expires_ns: int) -> None:
        """Nothing to renew: the fault lives exactly as long as this process (bypass ends it when we die), and
        the runner stops us at the deadline."""
        if self._io is not None and self._io.failure is not None:
            raise ApplyFailed(f"the NFQUEUE thread failed: {self._io.failure!r}")

    def counters(self) -> dict[int, dict[str, int]]:
        kernel: dict[tuple[str | None, int], tuple[int, int]] = {}
        for netns, table in self._tables:
            try:
                for queue, value in nft.rule_counters(netns, table).items():
                    kernel[(netns, queue)] = value
            except (nft.NftError, OSError, ValueError):
                pass
        out: dict[int, dict[str, int]] = {}
        netlink_errors = self._io.errors if self._io is not None else 0
        for rule_id, st in self._states.items():
            packets, nbytes = kernel.get((st.rule.interface.netns, st.queue), (st.queued_packets, st.queued_bytes))
            row = {"matched_packets": packets, "matched_bytes": nbytes, "queued_packets": st.queued_packets,
                   "queued_bytes": st.queued_bytes, "delayed_packets": st.delayed_packets,
                   "released_early_packets": st.released_early, "netlink_errors": netlink_errors,
                   "resend_errors": sum(r.errors for r in self._resenders if r is not None)}
            row.update(hold_statistics(st))
            out[rule_id] = row
        return out


__all__ = ["UserspaceEngine", "JitterModel"]
