"""Kernel tier: tests that need sch_netem / sch_fq, run inside a stock Debian kernel under QEMU.

Run them with `bash scripts/vm/kernel-tier.sh` (it boots the VM and runs `pytest -m kernel tests/kernel`).
Everywhere else every test here is skipped with the reason. Inside the VM a capability probe creates and deletes
a netem qdisc in a throwaway namespace before any test runs.

Network rule: traffic only between namespaces a test creates (names `ci-k-*`), on addresses it gave them
(10.199.0.0/24, fd00:199::/64). Every namespace is removed at teardown, also on failure, and the teardown fails the
test if anything named `ci-k-*` is left (namespaces, links in the root namespace, pinned bpf objects).
"""

from __future__ import annotations

import functools
import os
import secrets

import pytest

NS_PREFIX = "ci-k-"
IN_VM = os.environ.get("CHAOS_INJECT_VM") == "1"
# A real (non-VM) kernel with netem can opt in explicitly; the tests touch only their own namespaces.
ON_HOST_OPT_IN = os.environ.get("CHAOS_INJECT_KERNEL_TIER_ON_HOST") == "1"


@functools.lru_cache(maxsize=1)
def why_not_runnable() -> str | None:
    """None when the kernel tier can run here, else the reason (one line)."""
    if not (IN_VM or ON_HOST_OPT_IN):
        return "kernel tier runs inside the test VM: use `bash scripts/vm/kernel-tier.sh`"
    if os.geteuid() != 0:
        return "kernel tier needs root (network namespaces, qdiscs)"
    try:
        from pyroute2 import IPRoute, netns  # noqa: F401
    except ImportError as e:  # pragma: no cover
        return f"pyroute2 not importable: {e}"
    name = f"{NS_PREFIX}probe-{os.getpid()}"
    try:
        netns.create(name)
    except OSError as e:
        return f"cannot create a network namespace: {e}"
    try:
        with IPRoute(netns=name) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            try:
                ipr.tc("add", "netem", index=lo, handle="1:", delay=1000)
            except Exception as e:  # NetlinkError(2, ...) when sch_netem is missing
                return f"kernel {os.uname().release} cannot create a netem qdisc: {e}"
            ipr.tc("del", index=lo, handle="1:", root=True)
    finally:
        netns.remove(name)
    return None


@pytest.fixture(scope="session", autouse=True)
def _kernel_tier_available():
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)


def leftovers() -> list[str]:
    """Everything named ci-k-* that exists now: namespaces, links in this namespace, pinned bpf objects."""
    from pyroute2 import IPRoute, netns

    left = [f"netns {n}" for n in netns.listnetns() if n.startswith(NS_PREFIX)]
    with IPRoute() as ipr:
        left += [f"link {l.get('ifname')}" for l in ipr.get_links() if l.get("ifname", "").startswith(NS_PREFIX)]
    if os.path.isdir("/sys/fs/bpf"):
        left += [f"bpffs {n}" for n in os.listdir("/sys/fs/bpf") if n.startswith(NS_PREFIX)]
    return left


@pytest.fixture(autouse=True)
def no_leftovers(_kernel_tier_available):
    """Requested first, torn down last: after every other fixture has cleaned up, nothing ci-k-* may remain."""
    before = leftovers()
    assert before == [], f"left over from an earlier run: {before}"
    yield
    after = leftovers()
    if after:
        from pyroute2 import netns

        for n in netns.listnetns():
            if n.startswith(NS_PREFIX):
                netns.remove(n)
        pytest.fail(f"test left kernel objects behind (now removed): {after}")


@pytest.fixture
def make_netns():
    """Factory for throwaway namespaces `ci-k-<tag>-<random>`; all removed at teardown, even on failure."""
    from pyroute2 import netns

    created: list[str] = []

    def make(tag: str) -> str:
        name = f"{NS_PREFIX}{tag}-{secrets.token_hex(3)}"
        netns.create(name)
        created.append(name)
        return name

    yield make
    errors = []
    for name in reversed(created):
        try:
            netns.remove(name)
        except OSError as e:
            errors.append(f"{name}: {e}")
    assert not errors, f"could not remove namespaces: {errors}"


@pytest.fixture
def engine_pair(tmp_path, monkeypatch):
    """(ns_a, ns_b, end_a, end_b): two throwaway namespaces joined by a veth pair, made by the injector's own
    Topology, with a private run directory for ledgers. Removed at teardown, even on failure."""
    from chaosinject.kernel.netns import Topology, unique_name

    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    topo = Topology()
    try:
        a = topo.add_namespace(unique_name(f"{NS_PREFIX}a"))
        b = topo.add_namespace(unique_name(f"{NS_PREFIX}b"))
        end_a, end_b = topo.connect(a, b, "10.199.1.0/30", "fd00:199:1::/64")
        yield a, b, end_a, end_b
    finally:
        topo.close()
