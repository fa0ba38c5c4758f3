"""The shared-clsact rules (kernel/clsact.py) against a fake kernel: who deletes, who never does, stale markers,
and the lock (reentrant in a process, exclusive across processes). The real kernel: tests/host/test_clsact_sharing.py."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from chaosinject.errors import ApplyFailed
from chaosinject.kernel import clsact
from chaosinject.kernel.owner import KernelOwner
from chaosinject.kernel.rtnl import NetlinkError
from chaosinject.kernel.tc import FilterInfo


class FakeKernel:
    """One interface (lo of the root namespace, so the netns inode is real) with or without a clsact."""

    def __init__(self):
        self.clsact = False
        self.filters: list[FilterInfo] = []
        self.index = 1
        self.deleted = 0

    def link_index(self, ifname, netns=None):
        return self.index

    def has_clsact(self, ifindex, netns=None):
        return self.clsact

    def add_clsact(self, ifindex, netns=None):
        if self.clsact:
            raise NetlinkError(17, "exists")
        self.clsact = True

    def delete_clsact(self, ifindex, netns=None):
        self.clsact, self.filters = False, []
        self.deleted += 1

    def list_filters(self, ifindex, netns=None):
        return list(self.filters)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    fake = FakeKernel()
    monkeypatch.setattr(clsact, "tc", fake)
    return fake


def user(kernel, run_id: str, filter_name: str | None = None):
    """A user of the clsact: its ledger entry, then (inside the lock) its filter; close() releases."""
    owner = KernelOwner(run_id, handle_signals=False).__enter__()
    with clsact.use(owner, None, "lo", 1) as made:
        if filter_name:
            f = FilterInfo("egress", len(kernel.filters) + 1, 1, "bpf", filter_name)
            kernel.filters.append(f)
            owner.callback(lambda: kernel.filters.remove(f))
    return owner, made


@pytest.mark.parametrize("creator_ends_first", [True, False])
def test_the_last_user_deletes_a_clsact_we_made(kernel, creator_ends_first):
    a, made_a = user(kernel, "a", "chaos-inject:a")
    b, made_b = user(kernel, "b", "chaos-inject:b")
    assert (made_a, made_b) == (True, False) and len(clsact.markers()) == 1
    first, second = (a, b) if creator_ends_first else (b, a)
    first.close()
    assert kernel.clsact and kernel.deleted == 0 and len(clsact.markers()) == 1
    second.close()
    assert not kernel.clsact and kernel.deleted == 1 and clsact.markers() == []


def test_an_operators_clsact_is_never_deleted(kernel):
    kernel.clsact = True  # there before us, no marker
    a, made = user(kernel, "a", "chaos-inject:a")
    assert not made and clsact.markers() == []
    a.close()
    assert kernel.clsact and kernel.deleted == 0
    assert clsact.sweep_markers() == [] and kernel.clsact


def test_an_operators_filter_keeps_our_clsact_and_the_marker_says_why(kernel):
    a, _ = user(kernel, "a", "chaos-inject:a")
    kernel.filters.append(FilterInfo("ingress", 9, 0x800, "u32", None))
    kernel.filters.append(FilterInfo("ingress", 9, 0x800_000, "u32", None))  # u32's hash-table header, same prio
    a.close()
    assert kernel.clsact
    (marker,) = clsact.markers()
    assert marker["kept"]["why"] == "1 filter(s) attached (0 of other chaos-inject runs, 1 not ours)"
    (_, outcome), = clsact.sweep_markers()
    assert outcome.in_use and kernel.clsact
    kernel.filters.clear()  # the operator removed theirs
    (_, outcome), = clsact.sweep_markers()
    assert outcome.removed and not kernel.clsact and clsact.markers() == []


def test_stale_markers_are_dropped_and_never_claim_a_clsact(kernel):
    a, _ = user(kernel, "a")
    kernel.clsact = False  # someone deleted it
    kernel.clsact = True   # and an operator made a new one (the marker would wrongly claim it) ...
    path = clsact.marker_path(None, "lo", 1)
    text = path.read_text().replace('"netns_ino": ', '"netns_ino": 1')  # ... as if for another namespace
    path.write_text(text)
    a.close()
    assert kernel.clsact and kernel.deleted == 0, "a marker for another namespace never deletes"
    clsact.sweep_markers()
    assert clsact.markers() == [] and kernel.clsact


def test_a_marker_without_its_clsact_is_dropped_when_one_is_made_again(kernel):
    a, _ = user(kernel, "a")
    kernel.clsact = False  # gone behind our back
    b, made = user(kernel, "b")
    assert made and clsact.read_marker(None, "lo", 1)["created_by"] == "b"
    a.close()
    b.close()
    assert not kernel.clsact and clsact.markers() == []


def test_a_refused_add_records_nothing(kernel, monkeypatch):
    def refuse(ifindex, netns=None):
        raise NetlinkError(1, "Operation not permitted")

    monkeypatch.setattr(kernel, "add_clsact", refuse)
    owner = KernelOwner("r", handle_signals=False).__enter__()
    with pytest.raises(ApplyFailed, match="adding a clsact qdisc on lo"):
        with clsact.use(owner, None, "lo", 1):
            pass
    assert owner.ledger.entries == [] and clsact.markers() == []
    owner.close()


def test_the_lock_is_reentrant_here_and_exclusive_across_processes(kernel):
    with clsact.locked():
        with clsact.locked():  # an engine's helper taking it again does not deadlock
            pass
        holder = subprocess.Popen([sys.executable, "-c", (
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"), str(clsact.marker_dir() / ".lock")],
            stderr=subprocess.PIPE, text=True)
        _, err = holder.communicate(timeout=10)
    assert holder.returncode != 0 and "BlockingIOError" in err, "another process got the lock we held"
    script = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)")
    other = subprocess.Popen([sys.executable, "-c", script, str(clsact.marker_dir() / ".lock")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        t = time.monotonic()
        with pytest.raises(TimeoutError, match="held for over"):
            with clsact.locked(timeout_s=0.3):
                pass
        assert time.monotonic() - t >= 0.3
    finally:
        other.kill()  # the process this test started
        other.wait()
    with clsact.locked(timeout_s=5):
        pass
