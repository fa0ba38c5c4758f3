"""`chaos-inject doctor --warm-cache`: every classifier variant of this kernel compiled into the program cache,
so the faults that follow load it (no bcc compile). The warm-up's programs are held by the doctor's file
descriptors only: they die with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from chaosinject.lab.traffic import UdpReceiver, send_udp

from .conftest import our_filters, qdiscs
from .test_detach import wait_running

CLI = [sys.executable, "-m", "chaosinject.cli"]


def compiled_programs(cache):
    """The cache's program files (named by their key; kernel-identity.json beside them is not a program)."""
    return sorted(p for p in cache.glob("*.json") if p.stem != "kernel-identity")


def test_warm_cache_compiles_each_variant_once_and_a_fault_then_compiles_nothing(pair, run_dir, tmp_path):
    cache = tmp_path / "progcache"
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir), "CHAOS_INJECT_PROG_CACHE": str(cache)}

    first = subprocess.run([*CLI, "doctor", "--warm-cache", "--no-self-test"], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    lines = [ln for ln in first.stdout.splitlines() if ln.startswith("  classifier (")]
    print("\n".join(lines))
    assert len(lines) >= 4 and all("compiled and cached" in ln or "not for this kernel" in ln for ln in lines)
    files = compiled_programs(cache)
    assert len(files) == sum("compiled and cached" in ln for ln in lines)

    again = subprocess.run([*CLI, "doctor", "--warm-cache", "--no-self-test"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "compiled and cached" not in again.stdout and again.stdout.count("cached already") == len(files)

    # a partition and a seeded loss (two of the variants) load from the cache: no new file, and they act
    dst = str(pair.server.ipv4.ip)
    flow = f"{pair.client.ipv4.ip}->{dst}:9000/udp"
    for fault in (["--partition"], ["--loss", "100%", "--seed", "7"]):
        rx = UdpReceiver(pair.server_ns, dst, 9000).start()
        proc = subprocess.Popen([*CLI, "--flow", flow, "--netns", pair.client_ns, *fault, "--duration", "4s",
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_running(run_dir, proc)
            send_udp(pair.client_ns, dst, 9000, 300, 1000.0)
            out, err = proc.communicate(timeout=60)
        finally:
            rx.stop()
        assert proc.returncode == 0, err
        assert rx.received == 0, (fault, rx.received)
        summary = json.loads(out)
        assert summary["plan"]["engine"] == "ebpf" and summary["flows"][0]["counters"]["matched_packets"] == 300, summary
    assert compiled_programs(cache) == files
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)
