"""``chaos-inject run experiment.json --inventory hosts.yml`` on fleetkit's sshd hosts: the method's network fault
carried to the flow's source host, a probe on the controller seeing it through a service chain (the controller ->
an "api" on h1 -> a "db" on h2), the run directory's hosts; and a host cut off from the controller mid-fault ends
its fault by itself within the heartbeat timeout."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time

import pytest

from .test_fleet import assert_host_clean, wait_until, active_on

pytestmark = [pytest.mark.slow]

API_PORT, DB_PORT = 8080, 8081

# the "api" on h1: each GET fetches the "db" on h2 (a new TCP connection each time) and returns its answer
RELAY = """
import sys, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
bind, port, upstream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Relay(BaseHTTPRequestHandler):
    def do_GET(self):
        body = urllib.request.urlopen(upstream, timeout=10).read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer((bind, port), Relay).serve_forever()
"""


def _listening(fleet, host, port):
    return f"{fleet.hosts[host].address}:{port}" in subprocess.run(
        ["ip", "netns", "exec", fleet.hosts[host].ns, "ss", "-ltnH"], capture_output=True, text=True).stdout


@pytest.fixture
def services(clean):
    """db on h2 (python's http.server), api on h1 (the relay above); started and stopped by PID."""
    fleet = clean
    (fleet.work / "www").mkdir(exist_ok=True)
    (fleet.work / "www" / "index.html").write_text("db says hello\n")
    relay = fleet.work / "relay.py"
    relay.write_text(RELAY)
    h1, h2 = fleet.hosts["h1"], fleet.hosts["h2"]
    procs = [subprocess.Popen(["ip", "netns", "exec", h2.ns, sys.executable, "-m", "http.server", str(DB_PORT),
                               "--bind", h2.address, "--directory", str(fleet.work / "www")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen(["ip", "netns", "exec", h1.ns, sys.executable, str(relay), h1.address, str(API_PORT),
                               f"http://{h2.address}:{DB_PORT}/"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        wait_until(lambda: _listening(fleet, "h2", DB_PORT) and _listening(fleet, "h1", API_PORT), 20,
                   "the api and db services listening")
        yield fleet
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _latency_probe(name, url):
    return {"type": "probe", "name": name, "provider": {
        "type": "python", "module": "chaosinject.experiment.probes", "func": "http_latency_samples",
        "arguments": {"url": url, "count": 6, "timeout": 5.0}}}


def test_experiment_delay_between_two_hosts_seen_by_a_probe_on_the_controller(services):
    fleet = services
    inv = fleet.inventory({"api": ["h1"], "db": ["h2"], "others": ["h3", "h4"]})
    url = f"http://{fleet.hosts['h1'].address}:{API_PORT}/"
    experiment = {
        "title": "api->db delay on a fleet", "description": "the seed's experiment, hosts by Ansible",
        "steady-state-hypothesis": {"title": "api answers", "probes": [{
            "type": "probe", "name": "api-up", "tolerance": 200,
            "provider": {"type": "http", "url": url, "timeout": 5}}]},
        "method": [
            _latency_probe("latency-before", url),
            {"type": "action", "name": "delay-api-db", "provider": {
                "type": "python", "module": "chaosinject.experiment.actions", "func": "start_network_fault",
                "arguments": {"flow": f"api->db:{DB_PORT}/tcp", "delay": "200ms", "duration": "90s"}}},
            _latency_probe("latency-during", url)],
        "rollbacks": [{"type": "action", "name": "undo", "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "stop_network_fault"}}]}
    path = fleet.work / "fleet-experiment.json"
    path.write_text(json.dumps(experiment))
    record = fleet.work / "exp-run"
    ran = fleet.controller("run", str(path), "--inventory", str(inv), "--record", str(record),
                           "--heartbeat-timeout", "30s", timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    journal = json.loads((record / "journal.json").read_text())
    outputs = {r["activity"]["name"]: r["output"] for r in journal["run"]}
    before = statistics.median(outputs["latency-before"]["latency_ns"]) / 1e6
    during = statistics.median(outputs["latency-during"]["latency_ns"]) / 1e6
    assert all(outputs["latency-during"]["ok"]), outputs["latency-during"]
    # the api's connection to the db: its SYN and its request each leave h1 200 ms late
    assert during - before >= 190, (before, during)
    fault = journal["chaos-inject"]["faults"][0]
    assert fault["carrier"] == "fleet" and [h["host"] for h in fault["hosts"]] == ["h1"]
    merged = json.loads((record / "fleet.json").read_text())
    assert merged["verdict"] == "ok" and merged["hosts"] == ["h1"]
    host = merged["faults"][0]["hosts"][0]
    assert host["state"] == "stopped" and host["totals"]["delayed_packets"] >= 6, host
    rows = (record / "fleet-counters.csv").read_text().splitlines()
    assert rows[0].startswith("host,fleet_run,rule,") and {r.split(",")[0] for r in rows[1:]} == {"h1"}
    report = (record / "report.md").read_text()
    assert "## Hosts" in report and f"| h1 | {fleet.hosts['h1'].address} | stopped | ok |" in report
    assert "fleet: verdict ok over host(s) h1" in ran.stdout
    for name in fleet.hosts:
        assert_host_clean(fleet, name)


def test_experiment_host_cut_off_from_the_controller_ends_its_fault_within_the_heartbeat(clean):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3"]})
    experiment = {
        "title": "cut", "description": "a host loses its controller mid-fault",
        "method": [
            {"type": "action", "name": "delay-web-db", "provider": {
                "type": "python", "module": "chaosinject.experiment.actions", "func": "start_network_fault",
                "arguments": {"flow": "web->db", "delay": "50ms", "duration": "180s"}}},
            {"type": "probe", "name": "wait", "provider": {"type": "process", "path": "true"},
             "pauses": {"after": 45}}],
        "rollbacks": [{"type": "action", "name": "undo", "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "stop_network_fault"}}]}
    path = fleet.work / "cut-experiment.json"
    path.write_text(json.dumps(experiment))
    record = fleet.work / "cut-run"
    log = fleet.work / "cut.log"
    h1 = fleet.hosts["h1"]
    cut = ["ip", "-n", h1.ns, "route", "add", "blackhole", f"{fleet.ctl_address}/32"]
    ctl = fleet.spawn_controller("run", str(path), "--inventory", str(inv), "--record", str(record),
                                 "--heartbeat-timeout", "15s", log=log)
    try:
        wait_until(lambda: active_on(fleet, ["h1", "h2"]), 180, "the delay active on web")
        subprocess.run(cut, check=True, capture_output=True)      # h1 can no longer answer the controller
        t_cut = time.monotonic()
        wait_until(lambda: not fleet.live_runs("h1") and not fleet.ledgers("h1"), 60,
                   "h1's fault ended without its controller", step=0.2)
        took = time.monotonic() - t_cut
        ctl.wait(180)
    finally:
        if ctl.poll() is None:
            ctl.send_signal(signal.SIGTERM)
            ctl.wait(120)
        subprocess.run(["ip", "-n", h1.ns, "route", "del", "blackhole", f"{fleet.ctl_address}/32"],
                       capture_output=True)
    # the last renewal may have come just before the cut: clean within the heartbeat timeout (15 s), plus the
    # supervisor's poll and its removal (seconds on a loaded 2-core machine)
    assert took <= 15 + 8, f"h1 clean {took:.1f}s after the cut (heartbeat 15s)"
    notes = [json.loads(p.read_text()) for p in (h1.state_dir / "fleet").glob("*.json")]
    assert len(notes) == 1          # the fault module's note of the fleet run (the removal never reached h1)
    final = json.loads((h1.state_dir / "history" / f"{notes[0]['run_id']}.json").read_text())
    assert final["state"] == "halted" and "heartbeat" in final.get("halt", ""), final
    out = log.read_text()
    assert ctl.returncode == 1, out[-3000:]                # the fault was not held as asked on h1
    journal = json.loads((record / "journal.json").read_text())
    assert any("did not reach h1" in n for n in journal["chaos-inject"]["no_effect"]), journal["chaos-inject"]
    merged = json.loads((record / "fleet.json").read_text())
    verdicts = {h["host"]: h["verdict"] for h in merged["faults"][0]["hosts"]}
    assert merged["verdict"] == "failed" and verdicts["h1"] == "failed", merged
    for name in fleet.hosts:
        assert_host_clean(fleet, name)
    assert fleet.controller("sweep", "--inventory", str(inv)).returncode == 0     # drops h1's note
    assert list((h1.state_dir / "fleet").glob("*")) == []
