#!/usr/bin/env python3
"""What shared clsact ownership costs, and the host-fault CLI's figures (run as root).

  bare       tc.add_clsact + tc.delete_clsact on lo of a throwaway namespace (pyroute2 netlink, no bookkeeping)
  owned      the same through a KernelOwner: ledger entry, clsact lock, marker written (clsact.use), then the
             owner's close(): release under the lock, nothing attached -> deleted, marker dropped, ledger deleted
  shared     a second user on a clsact the first one made (first holds a filter): use() + release() that keeps it
  cpu-stress `chaos-inject cpu-stress --load 50% --duration 3s --json`: achieved % of one CPU (from /proc) and the
             command's wall time (Python start-up included); 2 shared cores: other jobs steal from the worker
  kill       `chaos-inject kill-process --pid P --grace 1s --restart ...` on a `sleep` we started: SIGTERM -> gone

Prints median (min-max, n). Everything is removed on every exit path (the namespace by Topology.close; runs, markers
and ledgers live in a temporary CHAOS_INJECT_RUN_DIR).

Usage: sudo .venv/bin/python bench/clsact_sharing.py [--trials N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    C.begin("clsact_sharing")
    # under /run, where real ledgers live (tmpfs on most hosts; this VM's /run is on ext4: every fsync counts)
    with tempfile.TemporaryDirectory(prefix="ci-bench-run-", dir="/run") as run_root:
        os.environ["CHAOS_INJECT_RUN_DIR"] = run_root
        from chaosinject.kernel import clsact, tc
        from chaosinject.kernel.netns import Topology, unique_name
        from chaosinject.kernel.owner import KernelOwner

        topo = Topology()
        try:
            ns = topo.add_namespace(unique_name("ci-bench-cls"))
            lo = tc.link_index("lo", ns)
            owned, shared = [], []

            def add_delete() -> None:
                tc.add_clsact(lo, ns)
                tc.delete_clsact(lo, ns)
            bare = C.repeat(add_delete, args.trials)
            for i in range(args.trials):
                with C.Stopwatch() as sw, KernelOwner(f"bench-{i}", handle_signals=False) as owner:
                    with clsact.use(owner, ns, "lo", lo):
                        pass
                owned.append(sw.s)
                assert not tc.has_clsact(lo, ns) and not clsact.markers()
            with KernelOwner("bench-first", handle_signals=False) as first:
                with clsact.use(first, ns, "lo", lo):
                    subprocess.run(["tc", "-n", ns, "filter", "add", "dev", "lo", "egress", "prio", "5",
                                    "protocol", "ip", "u32", "match", "ip", "dst", "198.18.0.1/32", "classid",
                                    "1:1"], check=True)
                first.callback(lambda: subprocess.run(["tc", "-n", ns, "filter", "del", "dev", "lo", "egress",
                                                       "prio", "5"], check=True))
                for i in range(args.trials):
                    with C.Stopwatch() as sw, KernelOwner(f"bench-second-{i}", handle_signals=False) as owner:
                        with clsact.use(owner, ns, "lo", lo):
                            pass
                    shared.append(sw.s)
                    assert tc.has_clsact(lo, ns)
            assert not tc.has_clsact(lo, ns) and not clsact.markers()
        finally:
            topo.close()
        print(f"bare add+delete clsact        {C.fmt(bare, ' ms', 1e3, n=True)}")
        print(f"owned use+release (deleted)   {C.fmt(owned, ' ms', 1e3, n=True)}")
        print(f"shared use+release (kept)     {C.fmt(shared, ' ms', 1e3, n=True)}")

        cli = [sys.executable, "-m", "chaosinject.cli"]
        achieved, walls = [], []
        for _ in range(3):
            with C.Stopwatch() as sw:
                out = subprocess.run([*cli, "cpu-stress", "--load", "50%", "--duration", "3s", "--json"],
                                     capture_output=True, text=True, check=True).stdout
            walls.append(sw.s)
            achieved.append(json.loads(out)["achieved_percent"])
        print(f"cpu-stress 50% for 3s         achieved {C.fmt(achieved, '%', digits=1, n=True)}; "
              f"wall {C.fmt(walls, ' s', n=True)}")
        gone = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(5):
                victim = subprocess.Popen(["sleep", "600"])
                pidfile = Path(tmp) / f"r{i}"
                try:
                    out = subprocess.run([*cli, "kill-process", "--pid", str(victim.pid), "--grace", "1s",
                                          "--restart", f"echo $$ > {pidfile}; exec sleep 600", "--json"],
                                         capture_output=True, text=True, check=True).stdout
                    gone.append(json.loads(out)["stopped_s"])
                finally:
                    if victim.poll() is None:
                        victim.kill()
                    victim.wait()
                    if pidfile.exists():
                        os.kill(int(pidfile.read_text()), 9)  # the restarted sleep our command started
        print(f"kill-process SIGTERM -> gone  {C.fmt(gone, ' ms', 1e3, 1, n=True)}")


if __name__ == "__main__":
    main()
