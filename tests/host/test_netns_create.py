"""kernel.netns.create_namespace: a namespace made from a thread of ours (no helper process that could finish it
after a kill -9), what `ip netns` sees, and this process's own namespace untouched."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time

import pytest

from chaosinject.kernel.netns import create_namespace, existing_namespaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def _remove(name: str) -> None:
    from pyroute2 import netns

    if name in netns.listnetns():
        netns.remove(name)


def test_namespace_is_made_in_a_thread_and_ours_is_unchanged():
    name = f"ci-nstest-{secrets.token_hex(3)}"
    own = os.readlink("/proc/self/ns/net")
    threads = threading.active_count()
    try:
        create_namespace(name)
        assert name in existing_namespaces()
        assert os.readlink("/proc/self/ns/net") == own            # the caller stays where it was
        inside = subprocess.run(["ip", "netns", "exec", name, "readlink", "/proc/self/ns/net"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert inside != own
        links = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
        with pytest.raises(FileExistsError):
            create_namespace(name)                                  # a taken name is refused, not reused
        assert name in existing_namespaces()
    finally:
        _remove(name)
    assert name not in existing_namespaces()
    assert threading.active_count() == threads              # the creating threads have ended


def test_a_process_killed_while_creating_leaves_nothing_that_removal_misses():
    """Killed -9 right after create_namespace returns or during it: no other process of ours goes on creating
    it (pyroute2's netns.create forks one); whatever name is left, netns.remove clears it."""
    name = f"ci-nstest-{secrets.token_hex(3)}"
    code = ("import sys; from chaosinject.kernel.netns import create_namespace; "
            f"create_namespace({name!r}); print('made', flush=True); import time; time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "made"
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert kids == [], f"create_namespace left child processes: {kids}"
        proc.kill()
        proc.wait()
        time.sleep(0.2)
        assert name in existing_namespaces()        # the namespace outlives its maker: sweep removes it (ledgered)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _remove(name)
    assert name not in existing_namespaces()
