"""Blast radius and a FIS template for real, checked on the wire (not dry runs).

`--percent 25` over two flows at once (two inventory hosts with 8 and 4 addresses: 12 address pairs) partitions
ceil(25 %) of each flow's pairs, the seeded ones, and nothing else: every one of the 12 destinations is probed and
the cut share is measured. The seed's FIS template, as written (terminate-instances on PERCENT(25) of the hosts
tagged Environment=staging, App=api), runs through `chaos-inject run` against four "instances" (namespaces of
this test, each running a UDP echo service): probes on the wire show exactly one instance's service replaced (a new
process answers, the old one never again) while the other three keep answering from their original processes."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from chaosinject.experiment.hostactions import processes_in_netns
from chaosinject.kernel.netns import Topology, existing_namespaces, socket_in, unique_name
from chaosinject.lab.traffic import UdpReceiver, send_udp

from .conftest import our_filters, qdiscs, wait_for

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "chaosinject.cli"]


def delivered(pair, dst: str, count: int, port: int = 9000) -> int:
    rx = UdpReceiver(pair.server_ns, dst, port).start()
    send_udp(pair.client_ns, dst, port, count, 5_000.0)
    rx.stop()
    return rx.received


def test_percent_over_two_flows_cuts_the_seeded_share_of_each(pair, run_dir, tmp_path):
    sizes = {"srva": 8, "srvb": 4}
    addresses, k = {}, 1
    for host, n in sizes.items():
        addresses[host] = [f"10.202.0.{k + i}" for i in range(n)]
        k += n
    for a in sum(addresses.values(), []):
        subprocess.run(["ip", "-n", pair.server_ns, "addr", "add", f"{a}/32", "dev", pair.server.ifname], check=True)
    subprocess.run(["ip", "-n", pair.client_ns, "route", "add", "10.202.0.0/28", "dev", pair.client.ifname],
                   check=True)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text("".join(f'[hosts.{h}]\naddresses = {json.dumps(a)}\nports = [9000]\n'
                                 for h, a in addresses.items()))
    every = sum(addresses.values(), [])
    for a in every:                       # all reachable before the fault (neighbours resolved)
        wait_for(lambda: delivered(pair, a, 20) == 20, f"20 of 20 datagrams to {a} without a fault")
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}
    src = pair.client.ipv4.ip
    args = ["--flow", f"{src}->srva/udp", "--flow", f"{src}->srvb/udp", "--inventory", str(inventory),
            "--netns", pair.client_ns, "--partition", "--percent", "25", "--seed", "11", "--duration", "120s",
            "--lease", "2s", "--json"]
    n = 200
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # bcc compiles the classifier first: ~3 s on a quiet host, over 30 s at load 16 on 2 cores
        wait_for(lambda: proc.poll() is not None or list(run_dir.glob("runs/*.status.json")), "the run's status",
                 timeout=180)
        assert proc.poll() is None, proc.communicate()
        got = {a: delivered(pair, a, n) for a in every}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    report = json.loads(out)
    rules = json.dumps(report["plan"]["rules"])
    assert set(got.values()) <= {0, n}, f"each destination is either cut or whole: {got}"
    for host, addrs in addresses.items():
        cut = [a for a in addrs if got[a] == 0]
        expected = math.ceil(0.25 * len(addrs))
        print(f"{host}: {len(cut)}/{len(addrs)} address pairs cut (25 % -> ceil = {expected}): {cut}")
        assert len(cut) == expected, (host, cut)
        planned = [a for a in addrs if f"-> {a}:9000" in rules]    # the plan's rules: "udp SRC -> DST:9000"
        assert planned == cut, (planned, cut)                      # what the plan chose is what the wire shows
    share = sum(v == 0 for v in got.values()) / len(got)
    print(f"measured cut share over both flows: {share:.3f} (3 of 12: 2 of 8 + 1 of 4)")
    assert share == 3 / 12
    assert sum(f["counters"]["dropped_packets"] for f in report["flows"]) == 3 * n
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)


ECHO = """import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7000))
while True:
    data, peer = s.recvfrom(512)
    s.sendto(str(os.getpid()).encode(), peer)
"""


def _echo(ns: str, script: Path) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(script)], start_new_session=True)


def _ask(client_ns: str, addr: str) -> int | None:
    """The pid of the echo service answering at addr:7000, or None (no answer within 0.2 s)."""
    with socket_in(client_ns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(b"who", (addr, 7000))
            return int(s.recv(64))
        except (TimeoutError, socket.timeout, ConnectionRefusedError, ValueError):
            return None


def test_the_seed_fis_template_replaces_one_instance_on_the_wire(run_dir, tmp_path):
    template = json.loads((REPO / "injector/experiment/examples/seed-fis-template.json").read_text())
    assert template["targets"]["ec2-instances"]["selectionMode"] == "PERCENT(25)"
    del template["stopConditions"]        # its CloudWatch alarm becomes a Prometheus halt: no Prometheus here
    (tmp_path / "fis.json").write_text(json.dumps(template))
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    topo = Topology()
    services: dict[str, subprocess.Popen] = {}
    made: list[str] = []
    try:
        client = topo.add_namespace(unique_name("ci-h-fisc"))
        hosts = {}
        for i in range(4):
            ns = topo.add_namespace(unique_name(f"ci-h-fis{i}"))
            _c, end = topo.connect(client, ns, f"10.203.{i}.0/30", f"fd00:203:{i}::/64")
            hosts[f"web{i}"] = (ns, str(end.ipv4.ip))
        made = list(topo.namespaces)
        (tmp_path / "inventory.toml").write_text("".join(
            f'[hosts.{h}]\naddresses = ["{addr}"]\nnetns = "{ns}"\n'
            f'tags = {{Environment = "staging", App = "api"}}\nrestart = "exec {sys.executable} {script}"\n'
            for h, (ns, addr) in hosts.items()))
        services = {h: _echo(ns, script) for h, (ns, _a) in hosts.items()}
        first = {h: wait_for(lambda a=a: _ask(client, a), f"{h}'s echo answers", timeout=20)
                 for h, (_ns, a) in hosts.items()}
        assert first == {h: p.pid for h, p in services.items()}   # `ip netns exec` execs: the service's own pid
        # probe every instance on the wire, 20 times a second, while the experiment runs
        seen: dict[str, list[int | None]] = {h: [] for h in hosts}
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                for h, (_ns, a) in hosts.items():
                    seen[h].append(_ask(client, a))
                time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_dir)}
        try:
            run = subprocess.run([*CLI, "run", str(tmp_path / "fis.json"), "--inventory",
                                  str(tmp_path / "inventory.toml"), "--seed", "4", "--record", str(tmp_path / "rec")],
                                 capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
            assert run.returncode == 0, run.stdout + run.stderr
            journal = json.loads((tmp_path / "rec" / "journal.json").read_text())
            (activity,) = journal["run"]
            (entry,) = activity["output"]["hosts"]            # PERCENT(25) of four tagged instances: one
            victim = entry["host"]
            wait_for(lambda: _ask(client, hosts[victim][1]) not in (None, first[victim]),
                     "a replacement answers at the terminated instance's address", timeout=20)
            time.sleep(0.5)
        finally:
            stop.set()
            prober.join(timeout=10)
        assert journal["status"] == "completed", journal["status"]
        assert activity["status"] == "succeeded" and entry["restarted"] is True, activity
        assert services[victim].pid in entry["killed_pids"]
        for h, answers in seen.items():
            pids = {p for p in answers if p is not None}
            print(f"{h}: {len(answers)} probes, answered by {sorted(pids)}, unanswered {answers.count(None)}")
            if h == victim:
                new = pids - {first[h]}
                assert len(new) == 1, pids                          # one replacement process
                last_old = max(i for i, p in enumerate(answers) if p == first[h])
                assert all(p != first[h] for p in answers[last_old + 1:])
                assert answers[-1] in new                           # the replacement answers at the end
            else:
                assert pids == {first[h]} and answers.count(None) == 0, (h, pids)  # untouched, always answering
        assert services[victim].wait(timeout=10) is not None
    finally:
        for proc in services.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for ns in made:
            for pid in processes_in_netns(ns):
                os.kill(pid, signal.SIGKILL)
        for proc in services.values():
            proc.wait(timeout=10)
        topo.close()
    assert not set(made) & set(existing_namespaces()), "namespaces left behind"
