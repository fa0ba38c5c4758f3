"""An experiment whose extension block asks for one-way and RTT samples: the runner records them around a
userspace-engine delay on a throwaway pair of namespaces, and the run directory shows the shift per source.

Flow api->db (TCP, db:9000) with a 20 ms delay on ingress at api (db's replies are held in api's PREROUTING):
one-way samples of db->api at the socket placement (cgroup_skb on the receiving sockets, after netfilter)
and RTT samples of the TCP connections api makes, new ones every ~30 ms, so that connections start while
the recorders run. Traffic only between the test's namespaces.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from chaosinject.kernel import nftables

from .conftest import loaded_program_names
from .tcp_echo import TcpEchoTraffic

MS = 1_000_000
DELAY_MS = 20

pytestmark = pytest.mark.skipif(nftables.nft_binary() is None,
                                reason="nft missing (Debian package nftables; run `sudo make setup`)")


def test_experiment_records_oneway_and_rtt_shift_per_source(pair, tmp_path, monkeypatch):
    from chaosinject.experiment.runner import RunOptions, run_experiment
    from chaosinject.experiment.spec import parse_experiment

    inventory = tmp_path / "inventory.toml"
    inventory.write_text(
        f'[hosts.api]\naddresses = ["{pair.client.ipv4.ip}"]\nnetns = "{pair.client_ns}"\n'
        f'interface = "{pair.client.ifname}"\n\n'
        f'[hosts.db]\naddresses = ["{pair.server.ipv4.ip}"]\nports = [9000]\nnetns = "{pair.server_ns}"\n'
        f'interface = "{pair.server.ifname}"\n')
    monkeypatch.setenv("CHAOS_INJECT_INVENTORY", str(inventory))
    doc = {"title": "db replies 20 ms late", "method": [{
        "type": "action", "name": "delay db replies", "provider": {
            "type": "python", "module": "chaosinject.experiment.actions", "func": "network_delay",
            "arguments": {"flow": "api->db/tcp", "delay": f"{DELAY_MS}ms", "duration": "4s",
                          "direction": "ingress", "engine": "userspace"}}}],
        "extensions": [{"name": "chaos-inject", "halt": {"enabled": False, "recovery": "1s"},
                        "record": {"oneway": ["db->api"], "rtt": ["api->db"], "placement": "socket",
                                   "baseline": "2s"}}]}
    run_dir = tmp_path / "exp"
    traffic = TcpEchoTraffic(pair.client_ns, pair.server_ns, str(pair.server.ipv4.ip), 9000)
    try:
        time.sleep(0.2)
        outcome = run_experiment(parse_experiment(doc), RunOptions(run_dir=run_dir, handle_signals=False))
    finally:
        traffic.close()
    assert outcome.state == "completed", outcome.journal["chaos-inject"].get("reason")
    assert traffic.exchanges > 100 and len(traffic.errors) < 3, traffic.errors[:3]

    summary = outcome.journal["chaos-inject"]["recorders"]["record"]
    assert summary["lost"] == 0
    parts = {p.name.split("-")[0] for p in (run_dir / "samples").glob("*.parquet")}
    assert {"oneway", "rtt"} <= parts
    df = pd.concat(pd.read_parquet(p) for p in (run_dir / "samples").glob("*.parquet"))
    shift, median_shift = {}, {}
    for source in ("oneway", "rtt"):
        rows = df[df["source"].astype(str) == source]
        base = rows.loc[rows["phase"] == "baseline", "latency_ns"]
        fault = rows.loc[rows["phase"] == "fault", "latency_ns"]
        assert len(base) > 50 and len(fault) > 50, (source, len(base), len(fault))
        assert set(rows["flow"].astype(str)) == {"db->api" if source == "oneway" else "api->db"}
        median_shift[source] = (fault.median() - base.median()) / MS
        # A TCP RTT sample also holds the peer's time to answer (the ACK rides on the echo): on a loaded
        # host that adds an upward tail to both phases (baseline p90 8 ms at load 9; once, at load 13, the
        # baseline median itself). The delay moves the whole distribution: its low decile shows it cleanly.
        shift[source] = (fault.quantile(0.1) - base.quantile(0.1)) / MS
    # the held replies: one-way db->api pays the delay once, and so does each RTT (the ACK comes back late)
    for source, ms in shift.items():
        assert DELAY_MS - 1 < ms < DELAY_MS + 5, shift
    # one-way has no peer in it: its median moves by the delay too
    assert DELAY_MS - 1 < median_shift["oneway"] < DELAY_MS + 5, median_shift
    # the run's summary states the median shifts of these samples (per source, with a CI)
    stated = {(s["source"], s["flow"]): s["shift_ns"] / MS for s in summary["latency_shift"]}
    assert set(stated) == {("oneway", "db->api"), ("rtt", "api->db")}
    assert stated[("oneway", "db->api")] == pytest.approx(median_shift["oneway"], abs=0.05), stated
    assert stated[("rtt", "api->db")] == pytest.approx(median_shift["rtt"], abs=0.05), stated
    assert len(summary["shifts"]) == 2
    report = (run_dir / "report.md").read_text()
    assert "## Measured latency shift per source" in report
    assert all(line in report for line in summary["shifts"])
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["recorders"]["record"]["samples"] == summary["samples"] > 0
    # nothing left: recorder programs detached, our nft table gone
    assert not [n for n in loaded_program_names() if n.startswith("cr_")]
    assert not [t for t in nftables.list_tables(pair.client_ns) if t.startswith("chaos_inject_")]
