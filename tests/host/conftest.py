"""Host tier: root, bcc and this kernel; every test builds throwaway namespaces and removes them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaosinject.engines.ebpf import EbpfEngine
from chaosinject.kernel.netns import Link, Topology, existing_namespaces, unique_name
from chaosinject.kernel.owner import KernelOwner
from chaosinject.plan import Interface, build_plan
from chaosinject.spec import FaultSpec, parse_flow


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "host tier needs root (network namespaces, clsact, BPF)"
    try:
        from chaosinject.kernel.headers import find_kernel_headers
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (Debian python3-bpfcc; run `sudo make setup`)"
    if find_kernel_headers() is None:
        return "no kernel headers for bcc (run `sudo make setup`)"
    return None


SKIP_REASON = _skip_reason()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/host/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@dataclass
class Pair:
    topo: Topology
    client_ns: str
    server_ns: str
    client: Link
    server: Link

    @property
    def client_iface(self) -> Interface:
        return Interface(self.client.ifname, self.client_ns)


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    path = tmp_path / "run"
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(path))
    yield path
    leftovers = list(path.glob("runs/*.json")) if path.exists() else []
    assert not leftovers, f"ledgers left behind: {leftovers}"


@pytest.fixture
def pair(run_dir):
    topo = Topology()
    try:
        client_ns = topo.add_namespace(unique_name("ci-h-client"))
        server_ns = topo.add_namespace(unique_name("ci-h-server"))
        client, server = topo.connect(client_ns, server_ns, "10.201.0.0/29", "fd00:201::/64")
        yield Pair(topo, client_ns, server_ns, client, server)
    finally:
        made = list(topo.namespaces)
        topo.close()
    assert not set(made) & set(existing_namespaces()), "namespaces left behind"


@contextlib.contextmanager
def injected(flow: str, fault: FaultSpec, iface: Interface, *, direction: str = "egress", seed: int | None = None,
             duration_s: float = 120, lease_s: float | None = None):
    """Apply a plan through the real engine and owner; everything is undone when the block ends."""
    plan = build_plan([(parse_flow(flow), iface)], fault, direction=direction, duration_ns=int(duration_s * 1e9),
                      lease_ns=int((lease_s or duration_s) * 1e9), seed=seed)
    engine = EbpfEngine()
    with KernelOwner(plan.run_id, meta=plan.to_dict(), handle_signals=False) as owner:
        engine.apply(plan, owner, time.monotonic_ns() + int((lease_s or duration_s) * 1e9))
        yield engine
    assert not our_filters(iface), "a filter of ours outlived the run"


def our_filters(iface: Interface) -> list[str]:
    out = subprocess.run(["tc", "-n", iface.netns, "filter", "show", "dev", iface.name, "egress"],
                         capture_output=True, text=True).stdout
    out += subprocess.run(["tc", "-n", iface.netns, "filter", "show", "dev", iface.name, "ingress"],
                          capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "chaos-inject:" in line]


def qdiscs(iface: Interface) -> str:
    return subprocess.run(["tc", "-n", iface.netns, "qdisc", "show", "dev", iface.name], capture_output=True,
                          text=True, check=True).stdout


def loaded_program_names() -> list[str]:
    if not shutil.which("bpftool"):
        pytest.skip("bpftool missing (run `sudo make setup`)")
    import json

    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    return [p.get("name", "") for p in progs]


def sleeper_in(ns: str, seconds: int = 300) -> subprocess.Popen:
    """A `sleep` in netns ``ns`` (its own session), returned once it runs there (`ip netns exec` execs sleep:
    same pid)."""
    from chaosinject.experiment.hostactions import processes_in_netns

    proc = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", str(seconds)], start_new_session=True)
    wait_for(lambda: proc.pid in processes_in_netns(ns), f"sleep {seconds} in {ns}", timeout=5)
    return proc


def cmdlines_in(ns: str) -> list[str]:
    """The command lines of the processes in netns ``ns``, sorted."""
    from chaosinject.experiment.hostactions import processes_in_netns

    out = []
    for pid in processes_in_netns(ns):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except OSError:
            pass     # ended meanwhile
    return sorted(out)


def wait_for(predicate, what: str, timeout: float = 30.0):
    """Poll predicate every 50 ms; its first truthy value, or fail naming what did not happen."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")
