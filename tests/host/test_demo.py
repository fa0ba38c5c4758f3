"""`chaos-inject demo` end to end through the real CLI: the seed's experiment on a lab of its own (a unique
prefix, a free subnet, its own state directory), twice (the lab brought up by the demo, then a lab already up),
and Ctrl-C during the fault; nothing left behind each time."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosinject.kernel.netns import existing_namespaces
from chaosinject.lab import LabSpec, lab_down, lab_status, lab_up
from chaosinject.lab.services import TAG_ENV

from .labkit import free_subnet, needs_lab

CLI = [sys.executable, "-m", "chaosinject.cli"]
TITLE = "API handles database connection timeout"

pytestmark = needs_lab


def _free_subnet() -> str:
    return free_subnet("10.214")


@pytest.fixture
def demo(tmp_path):
    spec = LabSpec(prefix="cidm" + secrets.token_hex(2), subnet=_free_subnet(),
                   state_dir=Path("/run/chaos-inject") / f"lab-demo-test-{secrets.token_hex(3)}")
    run_root = tmp_path / "run-root"
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(run_root)}
    args = ["--lab-prefix", spec.prefix, "--lab-subnet", spec.subnet, "--lab-state-dir", str(spec.state_dir)]
    try:
        yield spec, env, args, run_root
    finally:
        lab_down(spec)   # only if a failed assertion left it up: normally there is nothing to remove


def _leftovers(spec: LabSpec, run_root: Path) -> list[str]:
    found = [ns for ns in existing_namespaces() if ns.startswith(spec.prefix + "-")]
    if Path(f"/sys/class/net/{spec.host_link}").exists():
        found.append(spec.host_link)
    if spec.state_dir.exists():
        found.append(str(spec.state_dir))
    needle = f"{TAG_ENV}={spec.prefix}-".encode()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if any(e.startswith(needle) for e in (d / "environ").read_bytes().split(b"\0")):
                    stat = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if stat != "Z":
                        found.append(f"lab process {d.name}")
            except OSError:
                continue
    found += [str(p) for p in run_root.glob("runs/*.json")]             # ledgers / status files of faults
    found += [str(p) for p in run_root.glob("experiments/*.json")]      # a running experiment's status
    return found


def _check_run_dir(run_dir: Path) -> None:
    report = (run_dir / "report.md").read_text()
    assert "state **completed**" in report and "deviated false" in report
    assert "## Recorded samples: steady-state verdict" in report and "steady state:" in report
    # the verdict answers the experiment's question: the 503s are the expected deviation, recovery is judged
    # against the seed's 1 % (the experiment's verdict block), every phase conclusive
    assert "from: the experiment's `verdict` block" in report and "spec: error rate < 1.00%" in report
    assert "expected: baseline steady, fault deviation, recovery steady" in report
    assert "steady state: HELD" in report
    assert "  baseline: steady state before the fault: HELD (error rate 0.00% (0/" in report
    assert "  fault: deviated as expected (error rate " in report
    assert "  recovery: steady state restored: HELD (error rate 0.00% (0/" in report
    # the declared 2 s settle: the recovery's first moment is measured (time to recover), not judged, and said so
    assert "; first 2 s after the fault's removal not judged: " in report
    assert "recovery settle: 2 s (the `verdict` block's recovery_settle)" in report
    assert "- time to recover: " in report and "  recovery: time to recover: " in report
    assert "fault phase: from the fault's activation, " in report
    assert "recorded samples: steady state **HELD** (baseline held, fault deviated, recovery held" in report
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["outcome"] == "held" and verdict["expect"]["fault"] == "deviation"
    assert {p: v["outcome"] for p, v in verdict["phases"].items()} == \
        {"baseline": "held", "fault": "deviated", "recovery": "held"}
    assert "delayed, measured hold per packet over " in report  # the delay measured by the engine, not assumed
    html = (run_dir / "report.html").read_text()
    assert "deviated false" in html and "steady state:" in html
    pngs = ("latency_cdf.png", "latency_over_time.png", "dependence.png")   # dependence: one panel per phase
    for png in pngs:
        assert (run_dir / png).stat().st_size > 1000
        assert f"![{png}]({png})" in report and f"alt='{png}'" in html
    assert html.count("src='data:image/png;base64,") == len(pngs)
    journal = json.loads((run_dir / "journal.json").read_text())
    assert journal["chaos-inject"]["verdict"] == "held"
    rec = verdict["recovery"]
    assert rec == journal["chaos-inject"]["recovery"] and rec["settle_ns"] == 2_000_000_000
    assert rec["requests"] > 200 and rec["excluded"]["requests"] > 0
    assert (rec["time_to_recover_s"] is None) == (rec["errors"] == 0)
    onset = journal["chaos-inject"]["fault_onset"]          # the fault phase starts when the delay is active
    assert 0 < onset["seconds"] < 5 and onset["end_ns"] == journal["chaos-inject"]["phases"]["fault"]["start_ns"]
    assert journal["chaos-inject"]["phases"]["baseline"]["end_ns"] == onset["start_ns"]
    assert journal["experiment"]["title"] == TITLE and journal["status"] == "completed"
    assert not journal["deviated"] and journal["chaos-inject"]["exit_code"] == 0
    probes = {r["activity"]["name"]: r for r in journal["run"] if r["activity"]["type"] == "probe"}
    assert probes["no-500-during-the-fault"]["tolerance_met"] and probes["503-during-the-fault"]["tolerance_met"]
    (fault,) = journal["chaos-inject"]["faults"]
    assert fault["flows"] == ["api->db/tcp"] and fault["state"] == "stopped"
    assert fault["engine"] in ("userspace", "netem", "edt")

    from chaosinject.analysis import load_run

    df = load_run(run_dir).samples
    phase = df["phase"].astype(str)
    assert set(phase) == {"baseline", "fault", "recovery"}
    base, during, after = (df[phase == p] for p in ("baseline", "fault", "recovery"))
    assert len(base) >= 369 and (base["status"] == 200).all()    # enough for a 0-error bound below 1 %
    assert not (during["status"] == 500).any() and (during["status"] == 503).sum() > 100
    # the api's 503 comes at its 1 s database deadline, measured by the load generator
    assert (during[during["status"] == 503]["latency_ns"] > 0.9e9).all()
    assert len(after) > 200 and (after["status"] == 200).mean() > 0.99 and not (after["status"] == 500).any()


def _demo(args, env, record: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    start = time.monotonic()
    out = subprocess.run([*CLI, "demo", "--record", str(record), *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    print(f"\ndemo took {time.monotonic() - start:.1f} s\n{out.stdout}")
    return out


def test_demo_end_to_end_twice_leaves_nothing(demo, tmp_path):
    spec, env, args, run_root = demo
    # 1: no lab up: the demo brings it up and takes it down
    out = _demo(args, env, tmp_path / "run1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "verdict: HELD" in out.stdout and f"report: {tmp_path / 'run1' / 'report.md'}" in out.stdout
    assert "  recovery: time to recover: " in out.stdout and "first 2 s after the fault's removal not judged" \
        in out.stdout
    assert "recorded samples: steady state HELD" in out.stdout and "  fault: deviated as expected" in out.stdout
    assert "taken down" in out.stdout
    _check_run_dir(tmp_path / "run1")
    assert not _leftovers(spec, run_root), _leftovers(spec, run_root)

    # 2: a lab already up is used and left up
    info = lab_up(spec)
    try:
        out = _demo(args, env, tmp_path / "run2")
        assert out.returncode == 0, out.stderr[-3000:]
        assert "already up" in out.stdout and "verdict: HELD" in out.stdout
        _check_run_dir(tmp_path / "run2")
        status = lab_status(spec)
        assert status.up and status.info.processes == info.processes
    finally:
        lab_down(spec)
    time.sleep(0.2)
    assert not _leftovers(spec, run_root), _leftovers(spec, run_root)


def _demo_with_the_fault_on(record: Path, env: dict, args: list[str], *, stdout, wait_s: float) -> subprocess.Popen:
    """`chaos-inject demo` started and read until its method's action has run, 2 s more: the fault is on."""
    proc = subprocess.Popen([*CLI, "demo", "--record", str(record), *args], env=env,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + wait_s
        for line in proc.stderr:    # the runner's live progress
            lines.append(line)
            if "action add-network-delay-to-database" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        time.sleep(2.0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_demo_ctrl_c_during_the_fault_rolls_back_and_takes_the_lab_down(demo, tmp_path):
    spec, env, args, run_root = demo
    proc = _demo_with_the_fault_on(tmp_path / "run", env, args, stdout=subprocess.PIPE, wait_s=60)
    try:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    assert journal["status"] == "interrupted" and journal["chaos-inject"]["state"] == "stopped"
    assert journal["rollbacks"] and journal["rollbacks"][0]["status"] == "succeeded"
    assert "taken down" in stdout
    time.sleep(0.2)
    assert not _leftovers(spec, run_root), _leftovers(spec, run_root)


def test_demo_killed_9_during_the_fault_is_swept_whole(demo, tmp_path):
    """`kill -9` of the demo with the fault on and the lab it brought up: `sweep` alone removes both (the fault's
    run ledger, and the demo's lab ledger: `lab down` of its lab); a second sweep finds nothing."""
    spec, env, args, run_root = demo
    proc = _demo_with_the_fault_on(tmp_path / "run", env, args, stdout=subprocess.DEVNULL, wait_s=120)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -9
    assert _leftovers(spec, run_root), "the killed demo left nothing to sweep: the test did not kill it in time"
    swept = subprocess.run([*CLI, "sweep", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    report = json.loads(swept.stdout)
    kinds = {e["kind"] for e in report["removed"]}
    assert "netns-lab" in kinds and len(report["swept_runs"]) >= 2, report   # the lab's ledger and the fault's
    time.sleep(0.2)
    assert not _leftovers(spec, run_root), _leftovers(spec, run_root)
    assert not list((run_root / "runs").glob("*.json")), list((run_root / "runs").glob("*"))
    again = json.loads(subprocess.run([*CLI, "sweep", "--json"], env=env, capture_output=True, text=True,
                                      timeout=120).stdout)
    assert not (again["swept_runs"] or again["removed"] or again["failures"]), again


def test_quick_demo_is_still_reachable(tmp_path):
    env = {**os.environ, "CHAOS_INJECT_RUN_DIR": str(tmp_path / "run-root")}
    before = set(existing_namespaces())
    out = subprocess.run([*CLI, "demo", "--quick", "--duration", "3s"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "control flow (port 9001): " in out.stdout and "loss 0.00%" in out.stdout
    assert "namespaces removed" in out.stdout
    new = [ns for ns in set(existing_namespaces()) - before if ns.startswith("ci-demo-")]  # (others run too)
    assert not new, new
    assert not list((tmp_path / "run-root").glob("runs/*.json"))
