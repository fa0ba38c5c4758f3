"""`chaos-inject doctor` measures the precision of the delay engine it would choose, on this host, now: a short
self-test between throwaway namespaces, bounded in time, that leaves nothing behind; without it (or without
root) it cites the figure's source: the bench script and the date."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from chaosinject.kernel.netns import existing_namespaces

CLI = [sys.executable, "-m", "chaosinject.cli", "doctor"]
MEASURED = re.compile(r"delay precision \((\w+)\): measured now on this host: \w+, 10 ms asked, added-delay error "
                      r"median ([+-][\d.]+) ms, p99 ([+-][\d.]+) ms, min ([+-][\d.]+) ms \((\d+)/(\d+) UDP")


def test_doctor_measures_the_delay_engine_now_and_leaves_nothing(run_dir):
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}
    started = time.monotonic()
    proc = subprocess.Popen(CLI, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = proc.communicate(timeout=120)
    out = subprocess.CompletedProcess(CLI, proc.returncode, stdout, stderr)
    wall = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    print(line, f"(doctor wall {wall:.2f} s)")
    m = MEASURED.search(line)
    assert m, line
    engine, median, p99, low, received, sent = m.group(1), *map(float, m.group(2, 3, 4)), *map(int, m.group(5, 6))
    assert engine == "userspace", "this kernel has neither netem nor fq: auto picks userspace for delay"
    assert received == sent == 300
    # never early; the README's stated precision of this engine (median +0.08 to +0.13 ms from 6,000 packets,
    # p99 up to +3.2 ms on a loaded 2-core host: bench/delay_engines.py); the self-test's 300 packets in ~1 s
    # get 1 ms for the median, and the busy host's tail 3x that p99
    assert low >= -0.2 and 0 <= median < 1.0 and p99 < 10.0, line
    # bounded: the self-test itself says ~1 s on a quiet host; the whole command well under the CI's patience
    self_test_s = float(re.search(r"self-test ([\d.]+) s", line).group(1))
    assert self_test_s < 8.0 and wall < 20.0, (self_test_s, wall)
    assert not [n for n in existing_namespaces() if n.startswith(f"ci-dr-{proc.pid}-")]   # its pair, not others' doctors
    assert not list(run_dir.glob("runs/*.json")), "the self-test's run is undone and its ledger gone"
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "chaos" not in nft, nft


def test_doctor_without_the_self_test_cites_the_source_and_date(run_dir):
    out = subprocess.run([*CLI, "--no-self-test"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)})
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("delay precision (userspace): not measured (--no-self-test); cited:"), line
    assert re.search(r"bench/delay_engines\.py[^,]*, \d{4}-\d\d-\d\d", line), line
