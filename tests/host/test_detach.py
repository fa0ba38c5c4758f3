"""--detach, stop, kill -9 of the supervisor, and schedule, through the real CLI in throwaway namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from chaosinject.kernel.ledger import process_alive
from chaosinject.lab.traffic import UdpReceiver, send_udp

from .conftest import our_filters, qdiscs

CLI = [sys.executable, "-m", "chaosinject.cli"]


def env(run_dir):
    return {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}


def cli(run_dir, *args, timeout=120):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env(run_dir), timeout=timeout)


def delivered(pair, port=9000, count=300) -> int:
    dst = str(pair.server.ipv4.ip)
    rx = UdpReceiver(pair.server_ns, dst, port).start()
    send_udp(pair.client_ns, dst, port, count, 10_000.0)
    rx.stop()
    return rx.received


def flow_of(pair, port=9000) -> str:
    return f"{pair.client.ipv4.ip}->{pair.server.ipv4.ip}:{port}/udp"


def status(run_dir, *extra) -> list[dict]:
    return json.loads(cli(run_dir, "status", "--json", *extra).stdout)


def wait_gone(pid: int, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not process_alive(pid, None):
            return True
        time.sleep(0.05)
    return False


def wait_running(run_dir, proc, timeout=30.0) -> dict:
    """Until a run's status says running (its ledger exists before the fault is applied: pending)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"exited early: {proc.returncode} {proc.stderr.read()}"
        running = [r for r in status(run_dir) if r["state"] == "running"]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("no run became active")


def clean(pair, run_dir):
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)
    assert not list((run_dir / "runs").glob("*.json")), "ledger left behind"


def test_detach_returns_when_active_and_stop_rolls_back(pair, run_dir):
    t0 = time.monotonic()
    result = cli(run_dir, "--flow", flow_of(pair), "--netns", pair.client_ns, "--partition", "--duration", "60s",
                 "--detach", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert time.monotonic() - t0 < 30, "returned once active, not after the duration"
    assert delivered(pair) == 0, "the fault is active when --detach returns"
    (run,) = status(run_dir)
    assert run["run_id"] == info["run_id"] and run["pid"] == info["pid"] != os.getpid()
    assert run["kind"] == "detached" and run["state"] == "running" and run["alive"]
    assert os.getsid(info["pid"]) == info["pid"] or os.getsid(info["pid"]) != os.getsid(0), "own session"

    stopped = cli(run_dir, "stop", info["run_id"])
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped (stopped)" in stopped.stdout
    assert wait_gone(info["pid"]), "the supervisor exits after the rollback"
    clean(pair, run_dir)
    assert delivered(pair) == 300
    finished = [r for r in status(run_dir, "--recent", "5") if r.get("finished")]
    assert finished[-1]["run_id"] == info["run_id"] and finished[-1]["state"] == "stopped"
    assert "recently finished" in cli(run_dir, "status").stdout


def test_detached_run_ends_at_its_duration(pair, run_dir):
    result = cli(run_dir, "--flow", flow_of(pair), "--netns", pair.client_ns, "--partition", "--duration", "2s",
                 "--lease", "1s", "--detach")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    pid = status(run_dir)[0]["pid"]
    assert wait_gone(pid, timeout=15)
    clean(pair, run_dir)
    (final,) = [r for r in status(run_dir, "--recent", "3") if r["run_id"] == run_id]
    assert final["state"] == "completed"


def test_kill_9_of_the_supervisor_ends_the_fault_by_lease_and_sweep_cleans(pair, run_dir):
    result = cli(run_dir, "--flow", flow_of(pair), "--netns", pair.client_ns, "--partition", "--duration", "120s",
                 "--lease", "1s", "--detach", "--json")
    assert result.returncode == 0, result.stderr
    pid = json.loads(result.stdout)["pid"]
    assert delivered(pair) == 0
    os.kill(pid, signal.SIGKILL)  # the supervisor we started (its pid from our own run's output)
    assert wait_gone(pid)
    time.sleep(1.3)
    assert our_filters(pair.client_iface), "still attached: only the lease ended the fault"
    assert delivered(pair) == 300
    (run,) = status(run_dir)
    assert run["state"] == "dead"
    stop = cli(run_dir, "stop", "--all")
    assert stop.returncode == 0 and "no live runs" in stop.stdout  # --all: live runs only
    swept = cli(run_dir, "sweep")
    assert swept.returncode == 0 and "swept 1 dead run" in swept.stdout
    clean(pair, run_dir)


def test_sigterm_to_the_supervisor_rolls_back(pair, run_dir):
    result = cli(run_dir, "--flow", flow_of(pair), "--netns", pair.client_ns, "--loss", "50%", "--duration", "60s",
                 "--detach", "--json")
    info = json.loads(result.stdout)
    os.kill(info["pid"], signal.SIGTERM)
    assert wait_gone(info["pid"])
    clean(pair, run_dir)
    (final,) = [r for r in status(run_dir, "--recent", "3") if r["run_id"] == info["run_id"]]
    assert final["state"] == "stopped" and final["status"]["stop_reason"] == "SIGTERM"


def test_errors_before_the_fault_is_active_come_from_the_foreground(pair, run_dir):
    bad = cli(run_dir, "--flow", flow_of(pair), "--netns", pair.client_ns, "--loss", "150%", "--duration", "5s",
              "--detach")
    assert bad.returncode == 2 and "loss" in bad.stderr
    missing = cli(run_dir, "--flow", "10.201.0.1->10.201.0.2", "--loss", "1%", "--duration", "5s",
                  "--netns", pair.client_ns, "--interface", "nosuch0", "--detach")
    assert missing.returncode == 3 and "nosuch0" in missing.stderr, missing.stderr
    clean(pair, run_dir)
    assert status(run_dir) == []


def test_stop_all_ends_several_detached_runs(pair, run_dir):
    # one run per interface (runs sharing one clsact: tests/host/test_clsact_sharing.py)
    from chaosinject.plan import Interface

    server_iface = Interface(pair.server.ifname, pair.server_ns)
    pids = []
    for flow, netns in ((flow_of(pair), pair.client_ns),
                        (f"{pair.server.ipv4.ip}->{pair.client.ipv4.ip}:9001/udp", pair.server_ns)):
        result = cli(run_dir, "--flow", flow, "--netns", netns, "--partition", "--duration", "60s", "--detach",
                     "--json")
        assert result.returncode == 0, result.stderr
        pids.append(json.loads(result.stdout)["pid"])
    assert len(status(run_dir)) == 2
    stopped = cli(run_dir, "stop", "--all", "--json")
    assert stopped.returncode == 0
    assert sorted(o["outcome"] for o in json.loads(stopped.stdout)) == ["stopped", "stopped"]
    assert all(wait_gone(p) for p in pids)
    clean(pair, run_dir)
    assert not our_filters(server_iface) and "clsact" not in qdiscs(server_iface)


def test_stop_reaches_a_foreground_cli_run(pair, run_dir):
    proc = subprocess.Popen([*CLI, "--flow", flow_of(pair), "--netns", pair.client_ns, "--loss", "10%",
                             "--duration", "120s", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(run_dir))
    try:
        run_id = wait_running(run_dir, proc)["run_id"]
        delivered(pair, count=500)
        assert cli(run_dir, "stop", run_id).returncode == 0
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["stop_reason"] == "stopped" and report["flows"][0]["counters"]["matched_packets"] == 500
    clean(pair, run_dir)


def test_schedule_runs_count_times_without_overlap(pair, run_dir):
    t0 = time.monotonic()
    result = cli(run_dir, "schedule", "@every 2s", "--count", "2", "--", "--flow", flow_of(pair), "--netns",
                 pair.client_ns, "--loss", "10%", "--duration", "1s", "--quiet", timeout=120)
    # each run matched no packet (no traffic): exit 4 per run, so the schedule reports failures
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("ended with exit code 4") == 2
    assert "2 run(s), 2 failed" in result.stderr
    assert time.monotonic() - t0 >= 4.0, "the first run waits for the first tick"
    finished = [r for r in status(run_dir, "--recent", "10") if r.get("finished")]
    assert [r["state"] for r in finished] == ["completed", "completed"]
    starts = sorted(r["status"]["started"] for r in finished)
    ends = sorted(r["status"]["updated"] for r in finished)
    assert starts[1] >= ends[0], "runs never overlap"
    clean(pair, run_dir)


def test_schedule_refuses_bad_input_before_the_first_tick(run_dir):
    for args, match in ((["schedule", "@every 10s", "--count", "1", "--", "--flow", "10.0.0.1->", "--duration", "1s",
                          "--loss", "1%"], "looks cut by the shell"),
                        (["schedule", "@every 10s", "--", "--flow", "1.1.1.1->2.2.2.2", "--loss", "1%"],
                         "--duration"),
                        (["schedule", "61 * * * *", "--", "--flow", "a->b"], "minute: 61"),
                        (["schedule", "@every 10s"], "give the run after --"),
                        (["schedule", "@every 10s", "--", "--flow", "1.1.1.1->2.2.2.2", "--loss", "1%",
                          "--duration", "1s", "--detach"], "cannot --detach")):
        t0 = time.monotonic()
        result = cli(run_dir, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert match in result.stderr, (match, result.stderr)
        assert time.monotonic() - t0 < 8


def test_schedule_sigint_stops_the_running_job_and_rolls_back(pair, run_dir):
    proc = subprocess.Popen([*CLI, "schedule", "@every 1s", "--immediately", "--", "--flow", flow_of(pair),
                             "--netns", pair.client_ns, "--partition", "--duration", "60s", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(run_dir),
                            start_new_session=True)
    try:
        wait_running(run_dir, proc)
        assert delivered(pair) == 0
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C on a terminal: the scheduler's process group (ours)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    clean(pair, run_dir)
    assert delivered(pair) == 300


def test_schedule_runs_an_experiment_file(run_dir, tmp_path):
    experiment = tmp_path / "tick.json"
    experiment.write_text(json.dumps({
        "title": "tick", "description": "a process action only",
        "method": [{"type": "action", "name": "mark", "provider": {"type": "process", "path": "sh",
                                                                 "arguments": f"-c 'echo x >> {tmp_path}/ticks'"}}]}))
    result = subprocess.run([*CLI, "schedule", "@every 1s", "--count", "2", "--", "run", str(experiment), "-q"],
                            capture_output=True, text=True, env=env(run_dir), timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ticks").read_text() == "x\nx\n"
    assert "dry run: nothing was run" in result.stderr  # the file was checked before the first tick
    bad = tmp_path / "bad.json"
    bad.write_text('{"title": "x", "method": [{"type": "action"}]}')
    refused = subprocess.run([*CLI, "schedule", "@every 1s", "--", "run", str(bad)], capture_output=True, text=True,
                             env=env(run_dir), timeout=60, cwd=tmp_path)
    assert refused.returncode == 2 and "method[0].name: required" in refused.stderr


def test_a_detached_delay_is_held_by_the_supervisor(pair, run_dir):
    import statistics

    import pytest

    from chaosinject.kernel import nftables
    from chaosinject.lab.traffic import measure_one_way

    if nftables.nft_binary() is None:
        pytest.skip("nft missing (Debian package nftables; run `sudo make setup`)")
    result = cli(run_dir, "--flow", flow_of(pair, 9200), "--netns", pair.client_ns, "--delay", "20ms",
                 "--duration", "60s", "--detach", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    try:
        assert status(run_dir)[0]["engine"] == "userspace"
        held = measure_one_way(pair.client_ns, pair.server_ns, str(pair.server.ipv4.ip), 9200, 200, 200.0)
        median_ms = statistics.median(held.latencies_ns) / 1e6
        assert len(held.latencies_ns) == 200 and 20 <= median_ms < 23, median_ms
    finally:
        stopped = cli(run_dir, "stop", info["run_id"])
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert wait_gone(info["pid"])
    assert not nftables.list_tables(pair.client_ns), "our nftables table outlived the run"
    clean(pair, run_dir)
