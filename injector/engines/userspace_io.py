"""The userspace delay engine's I/O thread: it receives the packets NFQUEUE hands us, holds each in a heap until
its release time and releases what is due (a copy re-sent from a raw socket, or the original accepted).

``UserspaceEngine`` (``userspace.py``) binds the queues, opens the raw sockets and makes the rules' states, then
hands them to a ``HoldThread``; how long each packet is held is ``userspace_holds.py``'s (``JitterModel``), and
what was achieved is booked there too (``record_hold``). Timing, measured: see ``UserspaceEngine``'s docstring.
"""

from __future__ import annotations

import gc
import heapq
import logging
import os
import select
import sys
import threading
import time

from ..kernel import nfqueue as nq
from .userspace_holds import RuleState, record_hold

log = logging.getLogger(__name__)

SPIN_NS = 150_000            # busy-wait the last 150 µs before a release (select() wakes up ~50-100 µs late)
SPIN_RT_NS = 50_000          # ... 50 µs when the thread is real-time (no timer slack, prompt wake-ups)
RT_PRIORITY = 1              # SCHED_FIFO priority of the I/O thread: the lowest real-time one
MAX_WAIT_S = 0.05            # the I/O thread looks at its stop flag at least this often
SWITCH_INTERVAL_S = 0.0002   # GIL hand-over while we run: another Python thread delays a release by at most this


class HoldThread:
    """One thread over every queue socket of a run: receive, hold until due, release.

    ``sockets[i]`` is the queue socket of one namespace, ``resenders[i]`` its raw sockets (None when none of its
    rules copies packets), ``by_queue[(i, queue)]`` the state of the rule on that queue. ``passing`` set: what
    is held goes now and every packet reaching us is accepted at once (``held_released`` is set once the held
    ones are gone); ``stop``: the thread releases everything and ends."""

    def __init__(self, sockets: list[nq.QueueSocket], resenders: list[nq.Resender | None],
                 by_queue: dict[tuple[int, int], RuleState], *, realtime: bool, name: str) -> None:
        self.sockets = sockets
        self.resenders = resenders
        self.by_queue = by_queue
        self.realtime = realtime
        self.errors = 0                               # netlink errors the sockets reported
        self.failure: BaseException | None = None     # what ended the thread early, if anything
        self.passing = threading.Event()              # the fault is ending: accept everything at once
        self.held_released = threading.Event()        # ... and the thread has let go of what it held
        self._stop = threading.Event()
        self._heap: list[tuple[int, int, int, int, int, int, bytes | None]] = []
        self._old_switch: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread. Everything allocated so far (modules, pyroute2, the plan) moves to the permanent
        generation first: a full collection no longer walks it, which paused the thread for several ms (p99
        spikes) before; and the GIL switch interval drops to ``SWITCH_INTERVAL_S`` until ``stop``."""
        gc.collect()
        gc.freeze()
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._old_switch, SWITCH_INTERVAL_S))
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """End the thread (it releases every held packet), restore the switch interval; raise if it failed."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        if self._old_switch is not None:
            sys.setswitchinterval(self._old_switch)
            self._old_switch = None
        if self.failure is not None:
            raise RuntimeError(f"the NFQUEUE thread failed: {self.failure!r}")

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        spin_ns = SPIN_NS
        if self.realtime:
            try:  # this thread only (pid 0 = the calling thread on Linux)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
                spin_ns = SPIN_RT_NS
            except (OSError, AttributeError) as exc:
                log.warning("NFQUEUE thread stays SCHED_OTHER (%s): releases are late on a busy host", exc)
        try:
            self._loop(spin_ns)
        except BaseException as exc:  # noqa: BLE001 - reported through the engine's renew()/close
            self.failure = exc
            self._release_all()
        finally:
            self.held_released.set()  # nothing held any more (or nobody to hold it): do not wait on us

    def _loop(self, spin_ns: int) -> None:
        # (due, seq, socket index, queue, packet id, t_rx, copied packet or None)
        heap = self._heap
        socks = self.sockets
        fds = [s.fileno() for s in socks]
        index_of = {fd: i for i, fd in enumerate(fds)}
        by_queue = self.by_queue
        now_ns = time.monotonic_ns
        seq = 0
        due_batch: dict[int, list[tuple[int, int, int]]] = {}

        def receive(i: int) -> None:
            nonlocal seq
            packets, errors = socks[i].receive()
            if errors:
                self.errors += errors
            drops = []
            for p in packets:
                t_rx = now_ns()
                st = by_queue.get((i, p.queue))
                if st is None:
                    socks[i].verdicts([(p.queue, p.packet_id, nq.NF_ACCEPT)])
                    continue
                st.queued_packets += 1
                st.queued_bytes += p.length
                seq += 1
                if st.copy and len(p.payload) == p.length <= st.mtu:  # the original goes now (its sender is
                    # uncharged); the copy is what we hold. A packet longer than the MTU (a local datagram not
                    # yet fragmented) or than a queue message can carry is held as it is.
                    drops.append((p.queue, p.packet_id, nq.NF_DROP))
                    heapq.heappush(heap, (t_rx + st.jitter.draw(st), seq, i, p.queue, p.packet_id, t_rx,
                                          p.payload))
                else:
                    heapq.heappush(heap, (t_rx + st.jitter.draw(st), seq, i, p.queue, p.packet_id, t_rx, None))
            if drops:
                socks[i].verdicts(drops)

        passing = self.passing
        while not self._stop.is_set() and not passing.is_set():
            now = now_ns()
            if heap and heap[0][0] <= now:
                self._release_due(heap, now, due_batch)
                continue
            wait_ns = (heap[0][0] - now - spin_ns) if heap else int(MAX_WAIT_S * 1e9)
            if wait_ns > 0:
                ready, _, _ = select.select(fds, [], [], min(wait_ns / 1e9, MAX_WAIT_S))
                for fd in ready:
                    receive(index_of[fd])
            else:
                # spin until due, still receiving so that arrivals are stamped on time
                for i in range(len(socks)):
                    receive(i)
        if not self._stop.is_set():
            self._pass_through(fds, index_of)
        self._release_all()

    def _pass_through(self, fds: list[int], index_of: dict[int, int]) -> None:
        """The fault is ending: what we hold goes now, in order, then every packet still reaching us is accepted
        as it arrives (egress originals too: no copy needed) until we are stopped."""
        self._release_held()
        self.held_released.set()
        while not self._stop.is_set():
            ready, _, _ = select.select(fds, [], [], MAX_WAIT_S)
            for fd in ready:
                self.accept_waiting(index_of[fd])

    def _release_due(self, heap: list, now: int, batch: dict[int, list]) -> None:
        by_queue = self.by_queue
        batch.clear()
        resenders = self.resenders
        while heap and heap[0][0] <= now:
            due, _, i, queue, packet_id, t_rx, copied = heapq.heappop(heap)
            if copied is None:
                batch.setdefault(i, []).append((queue, packet_id, nq.NF_ACCEPT))
            else:
                resenders[i].send(copied)
            record_hold(by_queue[(i, queue)], now - t_rx, now - due)
        for i, items in batch.items():
            self.sockets[i].verdicts(items)

    def _release_all(self) -> None:
        """The fault is over: every held packet goes now, and so does every packet still waiting in our sockets
        (unbinding would drop it): its original is accepted as it is."""
        self._release_held()
        for i in range(len(self.sockets)):
            self.accept_waiting(i)

    def accept_waiting(self, i: int) -> None:
        """Accept every packet waiting in socket ``i`` as it is (counted as queued and released early). Called
        by the thread, or by the engine's end once the thread is gone."""
        sock = self.sockets[i]
        try:
            while True:
                packets, errors = sock.receive()
                self.errors += errors
                if not packets:
                    break
                for p in packets:
                    st = self.by_queue.get((i, p.queue))
                    if st is not None:
                        st.queued_packets += 1
                        st.queued_bytes += p.length
                        st.released_early += 1
                sock.verdicts([(p.queue, p.packet_id, nq.NF_ACCEPT) for p in packets])
        except OSError:
            pass

    def _release_held(self) -> None:
        """Every packet in the heap goes now, in release order (copies re-sent, originals accepted)."""
        heap = self._heap
        batch: dict[int, list] = {}
        while heap:
            _, _, i, queue, packet_id, _, copied = heapq.heappop(heap)
            if copied is None:
                batch.setdefault(i, []).append((queue, packet_id, nq.NF_ACCEPT))
            else:
                self.resenders[i].send(copied)
            self.by_queue[(i, queue)].released_early += 1
        for i, items in batch.items():
            try:
                self.sockets[i].verdicts(items)
            except OSError:
                pass  # the kernel drops them when the queue goes: nothing else to do


__all__ = ["HoldThread"]
