"""One clsact shared by several users: two overlapping runs (either ending first), a recorder, a run killed with
SIGKILL then swept, an operator's clsact and filter. Whoever removes the last of our filters from a clsact that
chaos-inject made deletes it; an operator's clsact is never deleted (kernel/clsact.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chaosinject.engines.ebpf import EbpfEngine
from chaosinject.kernel import clsact
from chaosinject.kernel.owner import KernelOwner
from chaosinject.kernel.sweep import sweep
from chaosinject.plan import Interface, build_plan
from chaosinject.spec import FaultSpec, parse_flow

from .conftest import our_filters, qdiscs
from .test_cli_lifecycle import cli, delivered, start

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def a_run(pair, port: int, fault: FaultSpec = FaultSpec(partition=True)):
    """One run (its own plan, owner and classifier) on the client's egress; undone when the block ends."""
    flow = f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:{port}/udp"
    plan = build_plan([(parse_flow(flow), pair.client_iface)], fault, direction="egress", duration_ns=60 * 10**9,
                      lease_ns=60 * 10**9)
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        EbpfEngine().apply(plan, owner, time.monotonic_ns() + 60 * 10**9)
        yield plan.run_id


def filter_lines(iface: Interface, hook: str = "egress") -> list[str]:
    return subprocess.run(["tc", "-n", iface.netns, "filter", "show", "dev", iface.name, hook], capture_output=True,
                          text=True, check=True).stdout.splitlines()


def nothing_of_ours(iface: Interface, run_dir: Path) -> None:
    assert not our_filters(iface), "a filter of ours outlived its run"
    assert "clsact" not in qdiscs(iface), "an empty clsact of ours outlived every run"
    assert not clsact.markers(), f"markers left: {clsact.markers()}"
    assert not list(run_dir.glob("runs/*.json"))


@pytest.mark.parametrize("first_to_end", ["creator", "second"])
def test_two_overlapping_runs_on_one_interface(pair, run_dir, first_to_end):
    iface = pair.client_iface
    stack_a, stack_b = contextlib.ExitStack(), contextlib.ExitStack()
    with stack_a, stack_b:
        run_a = stack_a.enter_context(a_run(pair, 9000))
        assert "clsact" in qdiscs(iface)
        (marker,) = clsact.markers()
        assert marker["created_by"] == run_a and marker["ifname"] == iface.name
        stack_b.enter_context(a_run(pair, 9001))
        assert delivered(pair, 9000, 300) == 0 and delivered(pair, 9001, 300) == 0
        assert len(our_filters(iface)) == 2
        first, second = (stack_a, stack_b) if first_to_end == "creator" else (stack_b, stack_a)
        first.close()
        assert len(our_filters(iface)) == 1 and "clsact" in qdiscs(iface)  # the other's filter still needs it
        assert len(clsact.markers()) == 1
        survivor_port = 9001 if first_to_end == "creator" else 9000
        assert delivered(pair, survivor_port, 300) == 0, "the surviving run's fault still holds"
        second.close()
    nothing_of_ours(iface, run_dir)
    assert delivered(pair, 9000, 300) == 300


def test_a_recorder_sharing_the_interface(pair, run_dir):
    pytest.importorskip("numpy")
    from chaosinject.record import OneWayRecorder, PacketFlow

    iface = pair.client_iface
    server_ip = str(pair.server.ipv4.ip)
    flow = PacketFlow("c->s", str(pair.client.ipv4.ip), server_ip, dport=9000, protocol="udp")
    rec = OneWayRecorder([flow], sender=iface, receiver=Interface(pair.server.ifname, pair.server_ns),
                         tc_mode="clsact")
    rec2 = OneWayRecorder([flow], sender=iface, receiver=Interface(pair.server.ifname, pair.server_ns),
                          tc_mode="clsact")
    rec.start()  # the recorder makes the clsact on both ends
    try:
        assert rec.attached_as == "clsact" and "clsact" in qdiscs(iface)
        with a_run(pair, 9000, FaultSpec(loss_ratio=0.5)):
            rec.stop()  # the clsact's creator ends first, while the run's filter is on it
            assert "clsact" in qdiscs(iface) and len(our_filters(iface)) == 1
            assert not any("chaos-inject-rec:" in line for line in filter_lines(iface))
        # then the recorder on a clsact a run made, the run ending first
        with a_run(pair, 9000, FaultSpec(loss_ratio=0.5)):
            rec2.start()
        assert "clsact" in qdiscs(iface)
        rec2.stop()
    finally:
        rec.stop()
        rec2.stop()
    nothing_of_ours(iface, run_dir)
    assert "clsact" not in qdiscs(Interface(pair.server.ifname, pair.server_ns))


@pytest.mark.parametrize("order", ["sweep-then-end", "end-then-sweep"])
def test_kill_9_of_one_run_then_sweep(pair, run_dir, order):
    iface = pair.client_iface
    # A: a CLI run in its own process (it makes the clsact), killed with SIGKILL
    proc = start(run_dir, "--flow", f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:9000/udp", "--netns",
                 pair.client_ns, "--partition", "--duration", "120s", "--lease", "1s", "--quiet")
    try:
        deadline = time.monotonic() + 30
        while not list(run_dir.glob("runs/*.status.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "the CLI run did not become active"
            time.sleep(0.05)
        assert len(clsact.markers()) == 1
        with contextlib.ExitStack() as b:
            b.enter_context(a_run(pair, 9001))  # B shares A's clsact
            proc.kill()  # the process we started, by its own handle
            proc.wait()
            if order == "sweep-then-end":
                report = sweep()
                assert len(report.swept_runs) == 1 and not report.failures
                assert len(our_filters(iface)) == 1 and "clsact" in qdiscs(iface)  # B's filter keeps it
                assert delivered(pair, 9001, 300) == 0
        if order == "end-then-sweep":
            assert "clsact" in qdiscs(iface) and len(our_filters(iface)) == 1  # A's filter (dead run) keeps it
            report = sweep()
            assert len(report.swept_runs) == 1 and not report.failures
            assert any(e["kind"] == "clsact" for e in report.removed)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    nothing_of_ours(iface, run_dir)
    (final,) = json.loads(cli(run_dir, "status", "--json", "--recent", "5").stdout)
    assert final["state"] == "failed" and final["status"]["error"] == "owner died; swept"


def _operator(iface: Interface, *args: str) -> None:
    subprocess.run(["tc", "-n", iface.netns, *args], check=True)


def test_an_operators_clsact_and_filter_are_never_touched(pair, run_dir):
    iface = pair.client_iface
    _operator(iface, "qdisc", "add", "dev", iface.name, "clsact")
    _operator(iface, "filter", "add", "dev", iface.name, "ingress", "prio", "7", "protocol", "ip", "u32",
              "match", "ip", "dst", "192.0.2.1/32", "classid", "1:1")
    before = filter_lines(iface, "ingress"), filter_lines(iface)
    with contextlib.ExitStack() as a, contextlib.ExitStack() as b:
        a.enter_context(a_run(pair, 9000))
        b.enter_context(a_run(pair, 9001))
        assert not clsact.markers(), "an existing clsact is not ours: no marker"
        a.close()
    assert (filter_lines(iface, "ingress"), filter_lines(iface)) == before
    assert "clsact" in qdiscs(iface)
    assert sweep().removed == []  # sweep has nothing of ours to remove either
    assert "clsact" in qdiscs(iface) and filter_lines(iface, "ingress") == before[0]


def test_an_operators_filter_on_our_clsact_keeps_it_until_it_is_gone(pair, run_dir):
    iface = pair.client_iface
    with a_run(pair, 9000):
        _operator(iface, "filter", "add", "dev", iface.name, "ingress", "prio", "9", "protocol", "ip", "u32",
                  "match", "ip", "dst", "192.0.2.1/32", "classid", "1:1")
    assert "clsact" in qdiscs(iface) and not our_filters(iface)
    (marker,) = clsact.markers()
    assert "1 not ours" in marker["kept"]["why"]  # the marker says why it stays
    report = sweep()
    assert report.clsacts_kept and report.clsacts_kept[0]["ifname"] == iface.name
    assert "clsact" in qdiscs(iface) and len(filter_lines(iface, "ingress")) >= 1
    _operator(iface, "filter", "del", "dev", iface.name, "ingress", "prio", "9")
    report = sweep()  # empty now, and marked ours: removed
    assert [e["kind"] for e in report.removed] == ["clsact"]
    nothing_of_ours(iface, run_dir)


def test_concurrent_users_in_two_processes_never_lose_a_clsact(pair, run_dir):
    """Two processes attach and release on one interface as fast as they can: without the lock one of them
    would attach to a clsact the other has just judged empty and deleted (the add fails)."""
    script = textwrap.dedent(f"""
        import subprocess, sys
        from chaosinject.kernel import clsact, tc
        from chaosinject.kernel.owner import KernelOwner
        ns, dev = {pair.client_ns!r}, {pair.client.ifname!r}
        index = tc.link_index(dev, ns)
        for i in range(25):
            with KernelOwner(f"race-{{sys.argv[1]}}-{{i}}", handle_signals=False) as owner:
                with clsact.use(owner, ns, dev, index):
                    prio = tc.free_prio(index, "egress", ns, start=100)
                    subprocess.run(["tc", "-n", ns, "filter", "add", "dev", dev, "egress", "prio", str(prio),
                                    "protocol", "ip", "u32", "match", "ip", "dst", "192.0.2.9/32", "classid",
                                    "1:1"], check=True)
                # undone before the release (LIFO): this user's filter goes first
                owner.callback(lambda p=prio: subprocess.run(["tc", "-n", ns, "filter", "del", "dev", dev,
                                                              "egress", "prio", str(p)], check=True))
        print("ok")
    """)
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for n in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0 and out.strip() == "ok", err
    iface = pair.client_iface
    assert not filter_lines(iface) and "clsact" not in qdiscs(iface) and not clsact.markers()
