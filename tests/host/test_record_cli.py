"""`chaos-inject --record DIR` through the real CLI: baseline, fault, recovery, run directory, live status.

The flow is named through an inventory file written here (both hosts with netns and interface). The fault is a
20 ms delay on the replies (direction ingress), served on this kernel by the userspace engine, which holds them
in the client's PREROUTING: the recording matches at the sockets of a cgroup of ours holding the receiver
(socket placement). Precision as in test_record_oneway: the shift must lie in [19.5, 23] ms.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from chaosinject.analysis import load_run
from chaosinject.kernel import nftables
from chaosinject.kernel.netns import socket_in
from chaosinject.kernel.record_program import cgroup2_root
from chaosinject.record.build import MAX_FLOWS

from .tcp_echo import TcpEchoTraffic
from .test_cli_lifecycle import cli, start, wait_active
from .test_record_oneway import cgroup, socket_in_cgroup  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(nftables.nft_binary() is None, reason="nft missing (Debian package nftables)")
MS = 1_000_000
PORT = 9000


def inventory(tmp_path, pair, ports=(PORT,)) -> str:
    path = tmp_path / f"inventory-{len(ports)}.toml"
    path.write_text(f"""
[hosts.client]
addresses = ["{pair.client.ipv4.ip}"]
netns = "{pair.client_ns}"
interface = "{pair.client.ifname}"

[hosts.server]
addresses = ["{pair.server.ipv4.ip}"]
ports = {list(ports)}
netns = "{pair.server_ns}"
interface = "{pair.server.ifname}"
""")
    return str(path)


def test_cli_record_measures_the_delay_and_writes_the_run_directory(pair, run_dir, tmp_path, cgroup):
    client_ip, server_ip = str(pair.client.ipv4.ip), str(pair.server.ipv4.ip)
    rx = socket_in_cgroup(cgroup, pair.client_ns, socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((client_ip, PORT + 500))
    rx.settimeout(0.1)
    tx = socket_in(pair.server_ns, socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((server_ip, PORT))
    stop = threading.Event()

    def traffic() -> None:  # replies server:9000 -> client at 500/s for the whole run
        n = 0
        while not stop.is_set():
            n += 1
            tx.sendto(n.to_bytes(8, "big") + b"cli-record", (client_ip, PORT + 500))
            try:
                while True:
                    rx.recv(2048)  # drain (non-blocking after the first timeout)
            except (TimeoutError, socket.timeout, BlockingIOError):
                pass
            rx.settimeout(0)
            time.sleep(0.002)
    thread = threading.Thread(target=traffic, daemon=True)
    out_dir = tmp_path / "rec"
    thread.start()
    proc = None
    try:
        proc = start(run_dir, "--inventory", inventory(tmp_path, pair), "--flow", "client->server/udp",
                     "--direction", "ingress", "--delay", "20ms", "--duration", "3s", "--baseline", "2s",
                     "--recovery", "1s", "--record", str(out_dir), "--record-cgroup", str(cgroup.path))
        time.sleep(2.0)  # the baseline
        wait_active(run_dir, proc, timeout=240)  # after compiling the recorders: slow on a loaded host
        for _ in range(30):  # the first renewals write the recorders' figures into the status
            shown = cli(run_dir, "status")
            if "recording oneway:" in shown.stdout:
                break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=120)
    finally:
        _end(proc)
        stop.set()
        thread.join()
        tx.close()
        rx.close()
    print(out, err, shown.stdout, sep="\n")
    assert proc.returncode == 0, err
    assert "recording oneway:" in shown.stdout  # live figures in `status`
    assert "latency   client->server" in out and "at socket" in out and "requested +20.000 ms" in out
    meta = json.loads((out_dir / "meta.json").read_text())
    assert meta["engine"] == "userspace" and set(meta["phases"]) == {"baseline", "fault", "recovery"}
    (shift,) = [s for s in meta["latency_shift"] if s["source"] == "oneway" and s["placement"] == "socket"]
    assert 19.5 * MS <= shift["shift_ns"] <= 23 * MS, shift
    assert shift["ci_low_ns"] > 10 * MS
    assert meta["lost_events"] == 0
    run = load_run(out_dir)
    counts = run.samples.groupby("phase", observed=True).size()
    # the sender paces by sleep(2 ms): ~400/s on an idle host, less under load (a run at load ~2 had 495 in
    # the fault's ~2.9 s); the counts only show that traffic flowed in every phase, the shift's CI judges it
    assert counts["baseline"] > 250 and counts["fault"] > 250 and counts["recovery"] > 100, counts
    counters = json.loads((out_dir / "counters.json").read_text())
    assert counters["0"]["matched"] > 500 and counters["0"]["flow"] == "client->server/udp"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["latency_shift"] and summary["flows"][0]["counters"]["matched_packets"] > 500
    assert (out_dir / "histograms").is_dir()
    assert not cgroup.pids()


def test_cli_record_refuses_bad_input_and_changes_nothing(pair, run_dir, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "meta.json").write_text("{}")
    common = ["--inventory", inventory(tmp_path, pair), "--flow", "client->server/udp", "--delay", "20ms",
              "--duration", "1s"]
    result = cli(run_dir, *common, "--record", str(used))
    assert result.returncode == 2 and "must be new or empty" in result.stderr
    result = cli(run_dir, *common, "--record", str(tmp_path / "new"), "--record-cgroup", "/tmp")
    assert result.returncode == 2 and "not a cgroup" in result.stderr
    result = cli(run_dir, *common, "--record-cgroup", "/tmp")
    assert result.returncode == 2 and "needs --record" in result.stderr
    # more TCP flows than one RTT recorder's filter map holds: refused, naming the limit, before anything runs
    ports = range(PORT, PORT + MAX_FLOWS + 1)
    result = cli(run_dir, "--inventory", inventory(tmp_path, pair, ports), "--flow", "client->server/tcp",
                 "--delay", "20ms", "--duration", "1s", "--record", str(tmp_path / "new"),
                 "--record-cgroup", str(cgroup2_root()))
    assert result.returncode == 2 and f"at most {MAX_FLOWS}" in result.stderr, result.stderr
    assert not (tmp_path / "new").exists()
    assert not [t for t in nftables.list_tables(pair.client_ns) if t.startswith("chaos_inject_")]
    assert "completed" not in result.stdout  # no run: nothing applied, nothing recorded


def test_cli_record_tcp_rtt_measures_an_egress_delay_one_way_cannot_see(pair, run_dir, tmp_path, cgroup):
    """The userspace engine's egress hold is before every tc hook (no one-way placement sees it: the summary
    says so), but the client's own TCP stack measures it: RTT samples from sock_ops shift by the delay.

    sock_ops switches RTT samples on when a connection is established, so a connection made before the
    recorder attached is never sampled (a single connection opened before a slow attach once gave 0 samples
    at load 6). The client opens a new connection every ~30 ms for the whole run: whenever the recorder
    attaches, the connections after it are sampled, in the baseline and in the fault."""
    server_ip = str(pair.server.ipv4.ip)
    out_dir = tmp_path / "rec"
    traffic = TcpEchoTraffic(pair.client_ns, pair.server_ns, server_ip, PORT, client_socket=lambda: socket_in_cgroup(
        cgroup, pair.client_ns, socket.AF_INET, socket.SOCK_STREAM))
    proc = None
    try:
        proc = start(run_dir, "--inventory", inventory(tmp_path, pair), "--flow", "client->server/tcp",
                     "--delay", "20ms", "--duration", "3s", "--baseline", "2s", "--recovery", "1s",
                     "--record", str(out_dir), "--record-cgroup", str(cgroup.path))
        out, err = proc.communicate(timeout=300)  # compiling the recorders under load: minutes, not seconds
    finally:
        _end(proc)
        traffic.close()
    print(out, err)
    assert proc.returncode == 0, err
    assert traffic.connections > 30 and len(traffic.errors) < 3, traffic.errors[:3]
    assert "OUTPUT hook" in out  # one-way cannot see this hold, and says so
    meta = json.loads((out_dir / "meta.json").read_text())
    assert "requested +20.000 ms" in out  # an egress delay adds to the RTT once
    (rtt,) = [s for s in meta["latency_shift"] if s["source"] == "rtt"]
    assert rtt["baseline_n"] >= 20 and rtt["fault_n"] >= 20, rtt
    assert 19.5 * MS <= rtt["shift_ns"] <= 23 * MS, rtt
    assert meta["lost_events"] == 0
    assert not cgroup.pids()


def test_cli_plain_record_gives_rtt_rows_per_phase_for_a_tcp_flow(pair, run_dir, tmp_path):
    """`--record DIR` alone, a flow named by addresses (no inventory, no cgroup): sock_ops on the cgroup v2 root
    samples the flow's TCP connections (the client is in no cgroup of ours), in the baseline, the fault and the
    recovery. The 20 ms egress delay (userspace engine, held before any tc hook) shows in the RTT: judged on
    the low decile, since an RTT sample also holds the peer's answer time, which load inflates (see
    test_record_experiment); the bounds [19, 25] ms hold the engine's stated precision (median up to +0.13 ms,
    p99 up to +3.2 ms over two runs) plus the sampling of the decile. The engine's own achieved hold is stated beside the request."""
    client_ip, server_ip = str(pair.client.ipv4.ip), str(pair.server.ipv4.ip)
    out_dir = tmp_path / "rec"
    traffic = TcpEchoTraffic(pair.client_ns, pair.server_ns, server_ip, PORT)
    proc = None
    try:
        proc = start(run_dir, "--flow", f"{client_ip}->{server_ip}:{PORT}/tcp", "--netns", pair.client_ns,
                     "--delay", "20ms", "--duration", "3s", "--baseline", "2s", "--recovery", "2s",
                     "--record", str(out_dir))
        out, err = proc.communicate(timeout=300)  # compiling the recorders under load: minutes, not seconds
    finally:
        _end(proc)
        traffic.close()
    print(out, err)
    assert proc.returncode == 0, err
    assert traffic.connections > 30 and len(traffic.errors) < 3, traffic.errors[:3]
    assert "rtt    at sock_ops" in out
    # one-way without an inventory: the client's veth peer is the receiver; it cannot see this engine's egress
    # hold (taken before any tc hook), and the note says so
    assert "oneway at tc" in out and "OUTPUT hook" in out and "(not visible at the tc placement" in out
    meta = json.loads((out_dir / "meta.json").read_text())
    (rec,) = [r for r in meta["recorders"] if r["source"] == "rtt"]
    assert rec["cgroup"] == str(cgroup2_root()) and rec["lost"] == 0
    (oneway,) = [r for r in meta["recorders"] if r["source"] == "oneway"]
    assert oneway["receiver"] == f"{pair.server.ifname} (netns {pair.server_ns})" and oneway["samples"] > 100
    run = load_run(out_dir)
    rtt = run.samples[run.samples["source"].astype(str) == "rtt"]
    per_phase = {ph: g["latency_ns"] for ph, g in rtt.groupby("phase", observed=True)}
    assert all(len(per_phase.get(ph, ())) >= 20 for ph in ("baseline", "fault", "recovery")), \
        {ph: len(v) for ph, v in per_phase.items()}
    low = {ph: v.quantile(0.1) / MS for ph, v in per_phase.items()}
    print("RTT low decile per phase (ms):", low)
    assert 19 <= low["fault"] - low["baseline"] <= 25, low
    assert abs(low["recovery"] - low["baseline"]) < 5, low  # the delay is gone once the fault is removed
    # the engine's own hold per packet, beside the request: never early, and its median within the 1 ms allowance
    # tests/host/test_userspace_delay.py holds the README's +0.08-0.13 ms to 0.5 ms (hundreds of packets)
    achieved = re.search(r"delay\s+requested 20\.000 ms: achieved median (\d+\.\d{3}) ms, p99 (\d+\.\d{3}) ms", out)
    assert achieved, out
    median_ms, p99_ms = float(achieved[1]), float(achieved[2])
    assert 20.0 <= median_ms < 21.0 and p99_ms >= median_ms, (median_ms, p99_ms)


def _end(proc) -> None:
    """A CLI run the test gave up on (timeout, failed assertion) is stopped: it removes what it made."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
