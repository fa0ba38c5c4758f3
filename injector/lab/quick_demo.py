"""`chaos-inject demo --quick`: two throwaway namespaces, a real per-flow loss fault with traffic, a summary.

The faulted flow is client -> server:9000/udp; a second flow to port 9001 is the control and must lose
nothing. The receiver's own count is printed beside the kernel's counters: two independent witnesses.
"""

from __future__ import annotations

import os
import sys
import threading

from ..engines.ebpf import EbpfEngine
from ..errors import NotPermitted
from ..kernel.netns import Topology, unique_name
from ..kernel.owner import KernelOwner
from ..plan import Interface, build_plan
from ..runner import run_plan
from ..spec import FaultSpec, parse_duration_ns, parse_flow, parse_percent_ratio
from ..summary import format_summary, summarize
from .traffic import UdpReceiver, send_udp

FAULTED_PORT, CONTROL_PORT = 9000, 9001


def run_demo(loss: str = "10%", duration: str = "6s", rate_pps: float = 2000.0) -> int:
    if os.geteuid() != 0:
        raise NotPermitted("the demo creates network namespaces: run it as root (sudo make demo)")
    fault = FaultSpec(loss_ratio=parse_percent_ratio(loss, field="loss"))
    duration_ns = parse_duration_ns(duration, field="duration")
    # the namespaces and veth are ledgered before they are made (a run ledger of kind "demo"): after a kill at
    # any point `chaos-inject sweep` removes them (issue #18; tests/host/test_crash_points_demo.py walks it)
    with KernelOwner(unique_name("demo"), meta={"kind": "demo"}) as owner, Topology(owner=owner) as topo:
        client = topo.add_namespace(unique_name("ci-demo-client"))
        server = topo.add_namespace(unique_name("ci-demo-server"))
        c_end, s_end = topo.connect(client, server, "10.203.0.0/30", "fd00:203::/64")
        print(f"lab: {client} {c_end.ipv4.ip} <-veth-> {server} {s_end.ipv4.ip}")
        flow = parse_flow(f"{c_end.ipv4.ip}->{s_end.ipv4.ip}:{FAULTED_PORT}/udp")
        plan = build_plan([(flow, Interface(c_end.ifname, client, how="demo veth"))], fault,
                          duration_ns=duration_ns, lease_ns=1_000_000_000, seed=None)
        print(plan.describe())
        receivers = {port: UdpReceiver(server, str(s_end.ipv4.ip), port).start()
                     for port in (FAULTED_PORT, CONTROL_PORT)}
        # traffic starts once the fault is on and ends before it ends (sender time < duration)
        count = int(rate_pps * max(0.5, duration_ns / 1e9 - 1.5))
        senders = [threading.Thread(target=send_udp, args=(client, str(s_end.ipv4.ip), port, count, rate_pps),
                                    daemon=True) for port in receivers]

        def start_traffic(progress, started=[]):  # noqa: B006 - one-shot latch
            if not started:
                started.append(True)
                for sender in senders:
                    sender.start()

        result = run_plan(plan, EbpfEngine(), on_progress=start_traffic)
        for sender in senders:
            sender.join(timeout=30)
        for receiver in receivers.values():
            receiver.stop()
        print(f"\nrun {plan.run_id} {result.stop_reason}; the classifier and filter are removed")
        print(format_summary(summarize(plan, result.counters)))
        faulted, control = receivers[FAULTED_PORT], receivers[CONTROL_PORT]
        print(f"receiver's count, faulted flow (port {FAULTED_PORT}): {faulted.received}/{count} arrived, "
              f"loss {1 - faulted.received / count:.2%}")
        print(f"receiver's count, control flow (port {CONTROL_PORT}): {control.received}/{count} arrived, "
              f"loss {1 - control.received / count:.2%}")
    print("namespaces removed")
    ok = control.received == count and 0 < faulted.received < count
    if not ok:
        print("demo: UNEXPECTED result (see counts above)", file=sys.stderr)
    return 0 if ok else 1
