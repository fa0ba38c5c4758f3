"""Faults on a fleet of sshd hosts through Ansible: group flows on the wire, blast radius, the dead-man switch,
an unreachable host, sweep --inventory. The hosts are fleetkit's (namespaces of this test, one sshd each)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time

import pytest

from chaosinject.fleet import load_inventory, select_hosts

pytestmark = [pytest.mark.slow]


def wait_until(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s: {what}")


def active_on(fleet, hosts) -> bool:
    return all(any(r.get("state") == "running" for r in fleet.live_runs(h)) for h in hosts)


def assert_host_clean(fleet, host):
    assert fleet.live_runs(host) == [], f"{host} has live runs"
    assert fleet.ledgers(host) == [], f"{host} has ledgers"
    assert "chaos-inject" not in fleet.tc_state(host), f"{host}: {fleet.tc_state(host)}"


def test_group_delay_measured_on_the_wire(clean):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3", "h4"]})
    before = fleet.ping("h1", "h3", count=3)
    assert before and max(before) < 100
    log = fleet.work / "delay.log"
    ctl = fleet.spawn_controller("--inventory", str(inv), "--flow", "web->db", "--delay", "200ms",
                                 "--duration", "25s", "--heartbeat-timeout", "60s", "--json", log=log)
    try:
        wait_until(lambda: active_on(fleet, ["h1", "h2"]), 180, "the delay active on web")
        web_to_db = fleet.ping("h1", "h3", count=5) + fleet.ping("h2", "h4", count=5)
        web_to_web = fleet.ping("h1", "h2", count=5)
        db_to_db = fleet.ping("h3", "h4", count=5)
        assert fleet.live_runs("h3") == [] and fleet.live_runs("h4") == []   # db carries nothing (egress of web)
        ctl.wait(120)
    finally:
        if ctl.poll() is None:
            ctl.send_signal(signal.SIGTERM)
            ctl.wait(60)
    out = log.read_text()
    assert ctl.returncode == 0, out
    # the echo request leaves web 200 ms late; the reply is not delayed: RTT = 200 ms + the path's own
    assert len(web_to_db) >= 8 and statistics.median(web_to_db) >= 195, web_to_db
    assert min(web_to_db) >= 190, web_to_db
    assert max(web_to_web) < 100 and max(db_to_db) < 100, (web_to_web, db_to_db)
    result = json.loads(out[out.index("{"):])
    assert result["verdict"] == "ok"
    by_host = {h["host"]: h for h in result["hosts"]}
    assert set(by_host) == {"h1", "h2"}
    for host in ("h1", "h2"):
        assert by_host[host]["state"] == "completed"
        assert by_host[host]["totals"]["matched_packets"] >= 5
    for host in fleet.hosts:
        assert_host_clean(fleet, host)
    assert fleet.ping("h1", "h3", count=3) and max(fleet.ping("h1", "h3", count=3)) < 100


def test_group_partition_and_one_run_directory(clean):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3", "h4"]})
    record = fleet.work / "partition-run"
    log = fleet.work / "partition.log"
    ctl = fleet.spawn_controller("--inventory", str(inv), "--flow", "web->db", "--partition", "--duration", "25s",
                                 "--heartbeat-timeout", "60s", "--record", str(record), "-q", log=log)
    try:
        wait_until(lambda: active_on(fleet, ["h1", "h2"]), 180, "the partition active on web")
        t0 = time.monotonic()
        cut = fleet.ping("h1", "h3", count=4) + fleet.ping("h2", "h4", count=4)
        cut_took = time.monotonic() - t0
        db_db = fleet.ping("h3", "h4", count=3)
        web_web = fleet.ping("h1", "h2", count=3)
        ctl.wait(120)
    finally:
        if ctl.poll() is None:
            ctl.send_signal(signal.SIGTERM)
            ctl.wait(60)
    assert ctl.returncode == 0, log.read_text()
    assert cut == [], f"web reached db through a partition: {cut} (pinged for {cut_took:.1f}s)"
    assert len(db_db) == 3 and len(web_web) == 3
    assert len(fleet.ping("h1", "h3", count=3)) == 3            # healed
    merged = json.loads((record / "fleet.json").read_text())
    assert merged["verdict"] == "ok" and {h["host"] for h in merged["hosts"]} == {"h1", "h2"}
    assert all(h["verdict"] == "ok" and h["state"] == "completed" and h["totals"]["dropped_packets"] >= 4
               for h in merged["hosts"]), merged["hosts"]
    rows = (record / "counters.csv").read_text().splitlines()
    assert rows[0].startswith("host,rule,") and "dropped_packets" in rows[0]
    assert {r.split(",")[0] for r in rows[1:]} == {"h1", "h2"} and len(rows) == 1 + 4   # 2 hosts x 2 rules
    for host in fleet.hosts:
        assert_host_clean(fleet, host)


def test_controller_kill9_every_host_clean_within_its_heartbeat(clean):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3", "h4"]})
    log = fleet.work / "kill9.log"
    ctl = fleet.spawn_controller("--inventory", str(inv), "--flow", "web->db", "--partition",
                                 "--duration", "120s", "--heartbeat-timeout", "20s", log=log)
    try:
        wait_until(lambda: active_on(fleet, ["h1", "h2"]), 180, "the partition active on web")
        assert fleet.ping("h1", "h3", count=2) == []
        # the last renewal may have just happened: the hosts must be clean within the heartbeat timeout (20 s),
        # plus the supervisor's poll (0.1 s) and its rollback (seconds on a loaded 2-core machine)
        os.kill(ctl.pid, signal.SIGKILL)
        killed = time.monotonic()
        ctl.wait(10)
        wait_until(lambda: not any(fleet.live_runs(h) or fleet.ledgers(h) for h in fleet.hosts), 60,
                   "every host's fault ended after the controller died", step=0.1)
        took = time.monotonic() - killed
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait(10)
    try:
        assert took <= 20 + 8, f"hosts clean {took:.1f}s after kill -9 (heartbeat 20s)"
        for host in ("h1", "h2"):
            records = [json.loads(p.read_text()) for p in (fleet.hosts[host].state_dir / "fleet").glob("*.json")]
            assert len(records) == 1       # the fault module's note of the fleet run (sweep --inventory drops it)
            final = json.loads((fleet.hosts[host].state_dir / "history" / f"{records[0]['run_id']}.json")
                               .read_text())
            assert final["state"] == "halted" and "heartbeat" in final.get("halt", ""), final
            assert_host_clean(fleet, host)
    finally:   # also after a failed assertion: the dead controller's ledger must not be the next test's
        swept = fleet.controller("sweep", "--inventory", str(inv))
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert len(fleet.ping("h1", "h3", count=3)) == 3
    assert fleet.ping("h2", "h4", count=3)


def test_controller_sigint_rolls_back_every_host(clean):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3", "h4"]})
    log = fleet.work / "sigint.log"
    ctl = fleet.spawn_controller("--inventory", str(inv), "--flow", "web->db", "--loss", "30%",
                                 "--duration", "120s", "--heartbeat-timeout", "30s", "--json", log=log)
    try:
        wait_until(lambda: active_on(fleet, ["h1", "h2"]), 180, "the loss active on web")
        ctl.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        ctl.wait(60)
        took = time.monotonic() - t0
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait(10)
    out = log.read_text()
    assert ctl.returncode == 130, out
    assert took < 30, f"rollback took {took:.1f}s: it must not wait for the heartbeat (30 s)"
    result = json.loads(out[out.index("{"):])
    assert result["stopped_by"] == "SIGINT" and {h["state"] for h in result["hosts"]} == {"stopped"}
    for host in fleet.hosts:
        assert_host_clean(fleet, host)


def test_unreachable_host_refuses_and_allow_unreachable_runs_on_the_rest(clean):
    fleet = clean
    # 'down' is h4's address on a port nothing listens on: unreachable for Ansible, and never touched
    inv = fleet.inventory({"web": ["h1", "h2", "down"], "db": ["h3"]},
                          extra_hosts={"down": {"ansible_host": fleet.hosts["h4"].address, "ansible_port": 2222}})
    refused = fleet.controller("--inventory", str(inv), "--flow", "web->db", "--partition", "--duration", "30s")
    assert refused.returncode == 1, refused.stderr
    assert "unreachable: down" in refused.stderr and "nothing was changed" in refused.stderr
    for host in fleet.hosts:
        assert fleet.live_runs(host) == [] and fleet.ledgers(host) == []
        assert list((fleet.hosts[host].state_dir / "history").glob("*.json")) == [] or host != "h4"
    ran = fleet.controller("--inventory", str(inv), "--flow", "web->db", "--partition", "--duration", "3s",
                           "--allow-unreachable", "--json")
    assert ran.returncode in (0, 4), ran.stderr
    assert "running WITHOUT down" in ran.stderr
    result = json.loads(ran.stdout)
    assert result["left_out"] == ["down"]
    assert {h["host"] for h in result["hosts"] if h["status"] == "ok"} == {"h1", "h2"}
    for host in fleet.hosts:
        assert_host_clean(fleet, host)


def test_sweep_inventory_leaves_nothing(clean):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2"], "db": ["h3", "h4"]})
    log = fleet.work / "sweep.log"
    ctl = fleet.spawn_controller("--inventory", str(inv), "--flow", "web->db", "--loss", "50%",
                                 "--duration", "120s", "--heartbeat-timeout", "60s", log=log)
    try:
        wait_until(lambda: active_on(fleet, ["h1", "h2"]), 180, "the loss active on web")
    finally:
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait(10)
    assert active_on(fleet, ["h1", "h2"])            # the heartbeat (60 s) keeps them for now: sweep must end them
    ledgers = [json.loads(p.read_text()) for p in (fleet.ctl_run_dir / "runs").glob("*.json")]
    assert [sorted(e["host"] for e in led["entries"]) for led in ledgers] == [["h1", "h2"]]   # the dead controller's
    swept = fleet.controller("sweep", "--inventory", str(inv), "--json")
    assert swept.returncode == 0, swept.stderr
    assert [(c["run_id"], c["deleted"]) for c in json.loads(swept.stdout)["controller_ledgers"]] == [
        (ledgers[0]["run_id"], True)]
    assert list((fleet.ctl_run_dir / "runs").glob("*.json")) == []
    report = json.loads(swept.stdout)["hosts"]
    assert set(report) == set(fleet.hosts) and all(r["status"] == "ok" for r in report.values())
    assert len(report["h1"]["stopped"]) == 1 and len(report["h2"]["stopped"]) == 1
    for host in fleet.hosts:
        assert_host_clean(fleet, host)
        assert list((fleet.hosts[host].state_dir / "fleet").glob("*")) == []
    again = fleet.controller("sweep", "--inventory", str(inv), "--json")
    assert again.returncode == 0 and all(r["stopped"] == [] for r in json.loads(again.stdout)["hosts"].values())


def test_percent_blast_radius_over_hosts(clean):
    fleet = clean
    inv = fleet.inventory({"web": ["h1", "h2", "h3"], "db": ["h4"]})
    expected = select_hosts("web", ("h1", "h2", "h3"), percent=34, seed=7).chosen
    assert len(expected) == 2                               # ceil(3 x 34 %) = 2
    dry = fleet.controller("--inventory", str(inv), "--flow", "web->db", "--partition", "--duration", "5s",
                           "--percent", "34", "--seed", "7", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"PERCENT(34) of 3 = ceil(1.02) -> 2, seed 7 -> {', '.join(expected)}" in dry.stderr
    assert all(fleet.live_runs(h) == [] for h in fleet.hosts)      # a dry run changes nothing
    log = fleet.work / "percent.log"
    ctl = fleet.spawn_controller("--inventory", str(inv), "--flow", "web->db", "--partition", "--duration", "20s",
                                 "--heartbeat-timeout", "60s", "--percent", "34", "--seed", "7", "--json", log=log)
    try:
        wait_until(lambda: active_on(fleet, expected), 180, "the partition active on the chosen hosts")
        carrying = sorted(h for h in fleet.hosts if fleet.live_runs(h))
        ctl.wait(120)
    finally:
        if ctl.poll() is None:
            ctl.send_signal(signal.SIGTERM)
            ctl.wait(60)
    assert carrying == sorted(expected)
    out = log.read_text()
    result = json.loads(out[out.index("{"):])
    assert result["choices"][0]["chosen"] == list(expected) and result["choices"][0]["members"] == ["h1", "h2", "h3"]
    assert sorted(h["host"] for h in result["hosts"]) == sorted(expected)
    for host in fleet.hosts:
        assert_host_clean(fleet, host)
    assert load_inventory(inv).groups["web"] == ("h1", "h2", "h3")


DIRECT = """
import json, sys
from chaosinject.fleet.ansible import AnsibleRounds
inv, src, dst, history = sys.argv[1:5]
task = {"name": "direct-1", "flows": [f"{src}->{dst}"], "fault": {"loss": "100%"}, "duration": "60s",
        "heartbeat_timeout": "30s"}
out = {}
with AnsibleRounds(inv) as rounds:
    def one(key, t, **kw):
        o = rounds.run(t, kw.pop("args", task), ["h1"], **kw).outcomes["h1"]
        out[key] = {"status": o.status, **o.result}
    one("planned", "fault", check=True)
    one("first", "fault")
    one("second", "fault")
    one("status", "status", args={})
    one("gone", "fault", args={"name": "direct-1", "state": "absent"})
    one("again", "fault", args={"name": "direct-1", "state": "absent"})
    one("archive", "run_archive", args={"path": history})
print(json.dumps(out, default=str))
"""


def test_ansible_collection_modules_directly(clean):
    """The collection as a library user drives it (AnsibleRounds, in the controller's namespace): the check mode
    plan changes nothing, present twice is one run (idempotent), absent stops it, absent again changes nothing."""
    fleet = clean
    inv = fleet.inventory({"web": ["h1"]}, name="direct.yml")
    script = fleet.work / "direct.py"
    script.write_text(DIRECT)
    import sys
    ran = subprocess.run(["ip", "netns", "exec", fleet.ctl_ns, "env", f"TMPDIR={fleet.tmp}", sys.executable, str(script), str(inv),
                          fleet.hosts["h1"].address, fleet.hosts["h2"].address,
                          str(fleet.hosts["h1"].state_dir / "history")], capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["planned"]["status"] == "ok" and out["planned"]["changed"] and "rules (1)" in out["planned"]["plan"]
    assert out["first"]["changed"] is True and out["second"]["changed"] is False
    assert out["first"]["run_id"] == out["second"]["run_id"] and out["second"]["run_state"] == "running"
    assert out["status"]["fleet_runs"]["direct-1"]["alive"] is True
    assert out["gone"]["changed"] is True and out["gone"]["run_state"] == "stopped"
    assert out["again"]["changed"] is False
    import tarfile                      # the run directory, packed on the host for ansible.builtin.fetch
    with tarfile.open(out["archive"]["archive"]) as tar:
        names = tar.getnames()
    assert f"history/{out['first']['run_id']}.json" in names and out["archive"]["files"] >= 1
    os.unlink(out["archive"]["archive"])
    assert_host_clean(fleet, "h1")
