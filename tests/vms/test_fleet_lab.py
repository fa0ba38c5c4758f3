"""`make test-vms` (the `vms` tier): the seed's experiment on the three lab VMs run from this machine, as a fleet.
vagrant/lab.sh with CHAOS_LAB_CONTROLLER=host brings db, api and prometheus up as for test_lab.py, writes the
VMs' Ansible inventory (vagrant/inventory.py), hands the api VM's load over to the controller and runs
`chaos-inject run db-timeout.json --inventory hosts.yml` in the lab's namespace (the one place that reaches the
VMs): the api->db delay carried by Ansible to the api VM, the probes against the api and the prometheus VM."""

from __future__ import annotations

import json
from pathlib import Path

# the netem hold around the requested 2 s: the kernel tier's window (tests/ imports as a package from the root)
from tests.kernel.nslab import HOLD_TOLERANCE_MS
from tests.vms.vmkit import namespaces, require_root_and_vm_tools, run_lab

API, DB, PROMETHEUS = "192.168.56.10", "192.168.56.11", "192.168.56.12"     # lab.json's vagrant addresses


def check_run_directory(dest: Path) -> None:
    """What the lab's run directory must show (apart from the test, to check a kept run directory again)."""
    # the inventory the lab wrote: groups api, db, prometheus at the VMs' lab addresses
    inv = json.loads((dest / "hosts.yml").read_text())["all"]["children"]
    assert {g: list(inv[g]["hosts"].values())[0]["ansible_host"] for g in inv} == {
        "api": API, "db": DB, "prometheus": PROMETHEUS}
    # completed, not deviated, the recorded samples (the controller's load) held
    journal = json.loads((dest / "journal.json").read_text())
    assert journal["status"] == "completed" and not journal["deviated"], journal["chaos-inject"].get("reason")
    assert journal["chaos-inject"]["verdict"] == "held", journal["chaos-inject"]
    # the probes ran from the controller (only the VMs answer in its namespace): the api VM's health, the
    # prometheus VM's count of the fault's 503s
    runs = {r["activity"]["name"]: r for r in journal["run"]}
    assert runs["503-during-the-fault"]["status"] == "succeeded" and runs["503-during-the-fault"]["tolerance_met"]
    probes = {p["activity"]["name"]: p for p in journal["steady_states"]["before"]["probes"]}
    assert probes["api-responds-to-health"]["tolerance_met"] and probes["error-rate-is-low"]["tolerance_met"]
    # the fault: carried by the fleet to the api VM only, api -> db:5432
    faults = journal["chaos-inject"]["faults"]
    assert len(faults) == 1 and faults[0]["carrier"] == "fleet", faults
    assert [h["host"] for h in faults[0]["hosts"]] == ["lab-api"], faults[0]["hosts"]
    # the hold per packet measured in the api VM's kernel: ~2 s within the kernel tier's window
    held = [c for c in faults[0]["counters"].values() if c.get("delay_kernel_measured")]
    assert held, faults[0]["counters"]
    c = max(held, key=lambda c: c.get("delay_samples", 0))
    low, high = HOLD_TOLERANCE_MS
    assert c["delay_samples"] > 0 and c["delay_samples_lost"] == 0, c
    assert 2000 + low <= c["delay_p50_ns"] / 1e6 <= 2000 + high, c
    # one run with a host column: fleet.json, fleet-counters.csv, the report's Hosts table
    merged = json.loads((dest / "fleet.json").read_text())
    assert merged["verdict"] == "ok" and merged["hosts"] == ["lab-api"], merged
    host = merged["faults"][0]["hosts"][0]
    # the netem engine counts the packets its classifier steered to netem (matched); delayed_packets is EDT's
    assert host["state"] == "stopped" and host["address"] == API and host["totals"]["matched_packets"] > 0, host
    assert any(DB in flow and "5432" in flow for flow in host["flows"]), host["flows"]
    rows = (dest / "fleet-counters.csv").read_text().splitlines()
    assert rows[0].startswith("host,fleet_run,rule,") and {r.split(",")[0] for r in rows[1:]} == {"lab-api"}
    assert f"| lab-api | {API} | stopped | ok |" in (dest / "report.md").read_text()
    # nothing left on any VM (no live run, ledger, fleet note, netem or clsact qdisc) nor on the controller
    for vm in ("db", "api", "prometheus"):
        status, files, qdiscs = (dest / "left" / f"{vm}.txt").read_text().split("@@")
        assert [r for r in json.loads(status or "[]") if r.get("alive")] == [], (vm, status)
        assert [f for f in files.split() if not f.endswith(":")] == [], (vm, files)
        assert "netem" not in qdiscs and "clsact" not in qdiscs, (vm, qdiscs)
    assert (dest / "left" / "controller.txt").read_text().split() == []


def test_seed_experiment_from_the_host_faults_the_api_vm_through_ansible_and_leaves_nothing(tmp_path):
    require_root_and_vm_tools("the lab")
    ns_before = namespaces()
    run_libvirt_before = Path("/run/libvirt").exists()
    dest = tmp_path / "run"
    stderr = run_lab(dest, {"CHAOS_LAB_CONTROLLER": "host"})
    assert "[vagrant-lab] PASS" in stderr and "verdict: HELD" in stderr
    check_run_directory(dest)
    # and on this machine: the lab's namespace, its libvirt state
    assert {n for n in namespaces() - ns_before if n.startswith("cilab-")} == set()
    assert Path("/run/libvirt").exists() == run_libvirt_before
