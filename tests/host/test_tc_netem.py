"""The seed's `tc qdisc add dev eth0 root netem delay ...` method and `tc qdisc del dev eth0 root` rollback,
translated into an owned chaos-inject fault: on a veth named eth0 inside a throwaway namespace that carries
an operator's own root qdisc. The delay is measured (TCP connect to a closed port: SYN out, RST back), the
operator's qdisc is untouched throughout, and the rollback removes only our fault."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chaosinject.experiment import RunOptions, load_experiment, run_experiment
from chaosinject.kernel.netns import existing_namespaces

# median time (ms) of 5 TCP connects to a closed port on the server: one round trip, SYN -> RST
CONNECT_MS = r'''
import socket, statistics, sys, time
host = sys.argv[1]
times = []
for _ in range(5):
    s = socket.socket(); s.settimeout(5)
    t = time.monotonic()
    try:
        s.connect((host, 9))
    except OSError:
        pass
    times.append((time.monotonic() - t) * 1000)
    s.close()
print(round(statistics.median(times), 1))
'''


def _tc(ns: str, *args: str, check: bool = True) -> str:
    return subprocess.run(["tc", "-n", ns, *args], capture_output=True, text=True, check=check).stdout


@pytest.fixture
def eth0_pair(pair):
    """The client end renamed eth0, with an operator's root qdisc on it (prio, else pfifo)."""
    for cmd in (["link", "set", "dev", pair.client.ifname, "down"],
                ["link", "set", "dev", pair.client.ifname, "name", "eth0"], ["link", "set", "dev", "eth0", "up"]):
        subprocess.run(["ip", "-n", pair.client_ns, *cmd], check=True)
    for kind in ("prio", "pfifo"):
        if subprocess.run(["tc", "-n", pair.client_ns, "qdisc", "add", "dev", "eth0", "root", "handle", "7:", kind],
                          capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("neither prio nor pfifo can be a root qdisc here")
    return pair


def _experiment(tmp_path, pair, delay: str, extra_rollback: bool = False):
    probe = tmp_path / "connect_ms.py"
    probe.write_text(CONNECT_MS)
    measure = {"type": "probe", "name": "connect-ms", "provider": {
        "type": "process", "path": "ip",
        "arguments": ["netns", "exec", pair.client_ns, sys.executable, str(probe), str(pair.server.ipv4.ip)]}}
    doc = {
        "title": "seed tc netem on eth0", "description": "translated",
        # the bound is far beyond the run's length (a loaded CI host took > 30 s between add and del): the
        # rollback, not the bound, must be what ends the fault
        "configuration": {"chaos-inject": {"netns": pair.client_ns, "tc_duration": "10m"}},
        "steady-state-hypothesis": {"title": "reachable", "probes": [
            {**measure, "name": "baseline-connect-ms", "tolerance": {"type": "regex", "pattern": "^[0-9.]+", "target": "stdout"}}]},
        "method": [
            {"type": "action", "name": "add-network-delay-to-database",
             "provider": {"type": "process", "path": "tc", "arguments": f"qdisc add dev eth0 root netem delay {delay}"}},
            {**measure, "name": "during-connect-ms"}],
        "rollbacks": [
            {"type": "action", "name": "remove-network-delay",
             "provider": {"type": "process", "path": "tc", "arguments": "qdisc del dev eth0 root"}}],
    }
    if extra_rollback:    # a second delete: nothing of ours left, and the operator's qdisc must survive it
        doc["rollbacks"].append({"type": "action", "name": "remove-again",
                                 "provider": {"type": "process", "path": "tc", "arguments": "qdisc del dev eth0 root"}})
    import json

    path = tmp_path / "exp.json"
    path.write_text(json.dumps(doc))
    return load_experiment(path)


def test_seed_tc_netem_becomes_an_owned_delay(eth0_pair, tmp_path):
    pair = eth0_pair
    before = _tc(pair.client_ns, "qdisc", "show", "dev", "eth0")
    lines: list[str] = []
    out = run_experiment(_experiment(tmp_path, pair, "200ms", extra_rollback=True),
                         RunOptions(run_dir=tmp_path / "run", progress=lines.append))
    j = out.journal
    log = "\n".join(lines)
    assert out.state == "completed" and out.exit_code == 0, log
    base = float(j["steady_states"]["before"]["probes"][0]["output"]["stdout"])
    add, during = j["run"]
    assert add["status"] == "succeeded" and add["output"]["status"] == 0
    ci = add["output"]["chaos-inject"]
    assert ci["interface"] == "eth0" and ci["netns"] == pair.client_ns and ci["fault"] == "delay 200ms"
    measured = float(during["output"]["stdout"])
    assert base < 50 and 190 <= measured < 400, (base, measured)
    # said on the console, in the journal and in the report
    assert "tc netem -> chaos-inject fault on eth0" in log
    assert any("tc netem -> chaos-inject fault on eth0" in n for n in j["chaos-inject"]["notes"])
    assert "tc netem -> chaos-inject fault on eth0" in (tmp_path / "run" / "report.md").read_text()
    # the rollback removed ours; the second delete found nothing of ours and touched nothing
    first, second = j["rollbacks"]
    assert ci["run_id"] in first["output"]["stdout"] and "removed" in first["output"]["stdout"]
    assert "nothing to remove" in second["output"]["stdout"] and second["output"]["status"] == 0
    fault = j["chaos-inject"]["faults"][0]
    # stopped (by the rollback's del), not completed (its bound): the del is what removed it
    assert fault["state"] == "stopped" and fault["duration_s"] == 600, fault
    assert fault["flows"] == ["*->*"]
    assert any(v.get("matched_packets") for v in fault["counters"].values())
    assert _tc(pair.client_ns, "qdisc", "show", "dev", "eth0") == before
    assert " 7: root" in before       # the operator's qdisc was there all along
    tables = subprocess.run(["ip", "netns", "exec", pair.client_ns, "nft", "list", "tables"], capture_output=True,
                            text=True).stdout
    assert not tables.strip()
    assert pair.client_ns in existing_namespaces()


def test_untranslatable_netem_is_refused_before_anything_runs(eth0_pair, tmp_path):
    pair = eth0_pair
    before = _tc(pair.client_ns, "qdisc", "show", "dev", "eth0")
    exp = _experiment(tmp_path, pair, "200ms 10ms distribution bogus")
    from chaosinject.experiment.spec import ExperimentInvalid

    with pytest.raises(ExperimentInvalid, match=r"method\[0\].provider.arguments: .*distribution"):
        run_experiment(exp, RunOptions(run_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    assert _tc(pair.client_ns, "qdisc", "show", "dev", "eth0") == before
