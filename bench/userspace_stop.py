#!/usr/bin/env python3
"""Userspace (NFQUEUE) engine: datagrams lost across a normal end while packets are held, and how long the end
takes.

Per case (ingress: a flow's replies held as they are; egress: copies; egress longer than the MTU: held as
they are) and repetition: a fresh pair of namespaces, the engine applied in this process with --delay-ms,
UDP datagrams at --rate for 2 x delay + 0.4 s; at the middle the run ends (the owner undoes everything, in
another thread) while sending goes on. Counted at the receiver: datagrams lost (never arrived) and duplicated;
``held`` is how many were in flight (sent, not yet received) when the end began; ``end ms`` the owner's undo
time (release, flush, drain, table deletion, unbind). Each line: median (min-max) over --reps.
``--delete-first`` deletes the table before the owner's undo, as the engine's end did before the fix (the
kernel drops every packet still queued in the namespace when a hook goes): the loss that fixed.

    sudo .venv/bin/python bench/userspace_stop.py [--reps 5] [--delay-ms 300] [--rate 2000] [--delete-first]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.engines.userspace import UserspaceEngine  # noqa: E402
from chaosinject.kernel import nftables  # noqa: E402
from chaosinject.kernel.netns import Topology, socket_in, unique_name  # noqa: E402
from chaosinject.kernel.owner import KernelOwner  # noqa: E402
from chaosinject.plan import Interface, build_plan  # noqa: E402
from chaosinject.spec import FaultSpec, parse_flow  # noqa: E402

CASES = (("ingress", 64), ("egress", 64), ("egress", 3000))


def one(direction: str, size: int, delay_ms: int, rate: float, delete_first: bool = False) -> dict:
    topo = Topology()
    try:
        a = topo.add_namespace(unique_name("bs-a"))
        b = topo.add_namespace(unique_name("bs-b"))
        la, lb = topo.connect(a, b, "10.198.7.0/29", "fd00:198:7::/64")
        ia, ib = str(la.ipv4.ip), str(lb.ipv4.ip)
        if direction == "ingress":   # replies b:9000 -> a:9500, held at a's PREROUTING
            rx_ns, rx_addr, tx_ns, tx_bind = a, (ia, 9500), b, (ib, 9000)
        else:
            rx_ns, rx_addr, tx_ns, tx_bind = b, (ib, 9000), a, (ia, 0)
        rx = socket_in(rx_ns, socket.AF_INET, socket.SOCK_DGRAM)
        tx = socket_in(tx_ns, socket.AF_INET, socket.SOCK_DGRAM)
        got: list[int] = []
        done = threading.Event()
        try:
            rx.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)   # SO_RCVBUFFORCE
            tx.setsockopt(socket.SOL_SOCKET, 32, 32 << 20)   # SO_SNDBUFFORCE: held originals stay charged
            rx.bind(rx_addr)
            tx.bind(tx_bind)
            tx.sendto(b"warm", rx_addr)
            rx.settimeout(5)
            rx.recv(64)
            rx.settimeout(0.2)

            def receive() -> None:
                while True:
                    try:
                        got.append(int.from_bytes(rx.recv(65536)[:4], "big"))
                    except OSError:
                        if done.is_set():
                            return
            reader = threading.Thread(target=receive, daemon=True)
            reader.start()
            plan = build_plan([(parse_flow(f"{ia}->{ib}:9000/udp"), Interface(la.ifname, a))],
                              FaultSpec(delay_ns=delay_ms * 1_000_000), direction=direction,
                              duration_ns=600 * 10**9)
            owner = KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False)
            owner.__enter__()
            ended: dict = {}
            try:
                UserspaceEngine().apply(plan, owner, time.monotonic_ns() + plan.duration_ns)

                def stop() -> None:
                    if delete_first:
                        nftables.delete_table(a, nftables.table_name(plan.run_id))
                    owner.__exit__(None, None, None)

                def end() -> None:
                    ended["ms"] = C.timed_ms(stop)
                pad, sent, sending, stopper, held = bytes(size - 4), 0, C.Stopwatch(), None, 0
                span = 2 * delay_ms / 1000 + 0.4
                while sending.s < span:
                    tx.sendto(sent.to_bytes(4, "big") + pad, rx_addr)
                    sent += 1
                    if stopper is None and sending.s > span / 2:
                        held = sent - len(got)
                        stopper = threading.Thread(target=end)
                        stopper.start()
                    while sending.s < sent / rate:
                        pass
                stopper.join(30)
            finally:
                if "ms" not in ended:
                    owner.__exit__(None, None, None)
            deadline = time.monotonic() + 3
            while len(got) < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            done.set()
            rx.close()
            tx.close()
        return {"sent": sent, "held": held, "lost": len(set(range(sent)) - set(got)),
                "dup": len(got) - len(set(got)), "end_ms": ended.get("ms", float("nan"))}
    finally:
        topo.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--delay-ms", type=int, default=300)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--delete-first", action="store_true", help="the end's old order: the table goes first")
    args = ap.parse_args()
    C.begin("userspace_stop")
    print(f"delay {args.delay_ms} ms, {args.rate:g} datagrams/s, {args.reps} repetitions per case"
          + (", table deleted first (the old order)" if args.delete_first else ""))
    for direction, size in CASES:
        rows = [one(direction, size, args.delay_ms, args.rate, args.delete_first) for _ in range(args.reps)]
        col = {k: [r[k] for r in rows] for k in rows[0]}
        print(f"{direction:8s} {size:5d} B: sent {C.fmt(col['sent'], digits=0)}, held at the end "
              f"{C.fmt(col['held'], digits=0)}, lost {C.fmt(col['lost'], digits=0)}, duplicated "
              f"{C.fmt(col['dup'], digits=0)}, end ms {C.fmt(col['end_ms'], digits=1)}")


if __name__ == "__main__":
    main()
