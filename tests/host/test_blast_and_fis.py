"""Blast radius and FIS for real on this host (not dry runs): `--percent 50` partitions one of a host's two
addresses, the seeded pick, and leaves the other's traffic whole; a FIS template (the seed's, PERCENT(50) of two
tagged hosts) kills and restarts the processes of exactly one host's namespace through `chaos-inject run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from chaosinject.experiment.hostactions import processes_in_netns
from chaosinject.lab.traffic import UdpReceiver, send_udp

from .conftest import cmdlines_in, our_filters, qdiscs, sleeper_in, wait_for

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "chaosinject.cli"]
SECOND_ADDRESS = "10.201.0.6"          # in the pair's 10.201.0.0/29, beside the server's own address


def delivered(pair, dst: str, port: int = 9000, count: int = 400) -> int:
    rx = UdpReceiver(pair.server_ns, dst, port).start()
    send_udp(pair.client_ns, dst, port, count, 5_000.0)
    rx.stop()
    return rx.received


def test_percent_partitions_the_seeded_half_of_a_hosts_addresses(pair, run_dir, tmp_path):
    subprocess.run(["ip", "-n", pair.server_ns, "addr", "add", f"{SECOND_ADDRESS}/29", "dev", pair.server.ifname],
                   check=True)
    addresses = [str(pair.server.ipv4.ip), SECOND_ADDRESS]
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(f'[hosts.srv]\naddresses = {json.dumps(addresses)}\nports = [9000]\n')
    for a in addresses:                   # both reachable before the fault (neighbours resolved)
        wait_for(lambda: delivered(pair, a, count=50) == 50, f"50 of 50 datagrams to {a} without a fault")
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}
    args = ["--flow", f"{pair.client.ipv4.ip}->srv/udp", "--inventory", str(inventory), "--netns", pair.client_ns,
            "--partition", "--percent", "50", "--seed", "7", "--duration", "120s", "--lease", "2s", "--json"]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # bcc compiles the classifier first: ~3 s on a quiet host, over 30 s at load 16 on 2 cores
        wait_for(lambda: proc.poll() is not None or list(run_dir.glob("runs/*.status.json")), "the run's status",
                 timeout=180)
        assert proc.poll() is None, proc.communicate()
        got = {a: delivered(pair, a) for a in addresses}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    report = json.loads(out)
    (rule,) = report["plan"]["rules"]                     # one of the two targets, chosen by the seed
    assert sorted(got.values()) == [0, 400], got          # that one partitioned, the other untouched
    (cut,) = [a for a, n in got.items() if n == 0]
    assert cut in json.dumps(rule)
    (flow,) = report["flows"]
    assert flow["counters"]["matched_packets"] == flow["counters"]["dropped_packets"] == 400
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)
    # the same seed picks the same address (the dry run says which, before anything is touched)
    dry = subprocess.run([*CLI, *args, "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert cut in dry.stdout + dry.stderr




def test_a_fis_template_kills_and_restarts_the_seeded_share_of_tagged_hosts(pair, run_dir, tmp_path):
    template = json.loads((REPO / "injector/experiment/examples/seed-fis-template.json").read_text())
    template["targets"]["ec2-instances"]["selectionMode"] = "PERCENT(50)"
    del template["stopConditions"]        # its CloudWatch alarm becomes a Prometheus halt: no Prometheus here
    (tmp_path / "fis.json").write_text(json.dumps(template))
    tags = '{Environment = "staging", App = "api"}'
    (tmp_path / "inventory.toml").write_text(
        f'[hosts.web1]\naddresses = ["{pair.server.ipv4.ip}"]\nnetns = "{pair.server_ns}"\ntags = {tags}\n'
        'restart = "exec sleep 297"\n'
        f'[hosts.web2]\naddresses = ["{pair.client.ipv4.ip}"]\nnetns = "{pair.client_ns}"\ntags = {tags}\n'
        'restart = "exec sleep 296"\n')
    services = {pair.server_ns: sleeper_in(pair.server_ns, 300), pair.client_ns: sleeper_in(pair.client_ns, 301)}
    try:
        env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}
        run = subprocess.run([*CLI, "run", str(tmp_path / "fis.json"), "--inventory", str(tmp_path / "inventory.toml"),
                              "--seed", "4", "--record", str(tmp_path / "record")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        journal = json.loads((tmp_path / "record" / "journal.json").read_text())
        assert journal["status"] == "completed", journal["status"]
        (activity,) = journal["run"]
        assert activity["status"] == "succeeded", activity
        (entry,) = activity["output"]["hosts"]            # PERCENT(50) of the two tagged hosts: one
        killed_ns = {"web1": pair.server_ns, "web2": pair.client_ns}[entry["host"]]
        spared_ns = pair.client_ns if killed_ns == pair.server_ns else pair.server_ns
        assert services[killed_ns].wait(timeout=10) is not None        # the original process is gone
        assert services[killed_ns].pid in entry["killed_pids"] and entry["restarted"] is True
        restarted = "sleep 297" if killed_ns == pair.server_ns else "sleep 296"
        assert cmdlines_in(killed_ns) == [restarted]                      # the inventory's restart, in its netns
        assert services[spared_ns].poll() is None                       # the other host untouched
        assert cmdlines_in(spared_ns) == [f"sleep {services[spared_ns].args[-1]}"]
    finally:
        for ns in (pair.server_ns, pair.client_ns):
            for pid in processes_in_netns(ns):
                os.kill(pid, signal.SIGKILL)
        for proc in services.values():
            proc.wait(timeout=10)
