"""FaultSession without root: the fake engine records steps; the ledger lives in a temporary run dir."""

import json
import os
import threading
import time

import pytest

from chaosinject.blast import apply_percent, parse_percent
from chaosinject.engines.fake import FakeEngine
from chaosinject.errors import ChaosInjectError, InvalidSpec
from chaosinject.kernel.ledger import Ledger, recent_finished
from chaosinject.plan import Interface, build_plan
from chaosinject.prepare import fault_from_options, prepare, start_fault
from chaosinject.session import FaultSession
from chaosinject.spec import FaultSpec, Inventory, parse_flow

MS = 1_000_000


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def make_plan(duration_ms=600, lease_ms=300):
    return build_plan([(parse_flow("10.0.0.1->10.0.0.2:80/udp"), Interface("eth0"))], FaultSpec(loss_ratio=0.1),
                      duration_ns=duration_ms * MS, lease_ns=lease_ms * MS, engine="fake")


def live_status(run_dir):
    files = list((run_dir / "runs").glob("*.status.json"))
    return json.loads(files[0].read_text()) if files else None


def leftovers(run_dir):
    return [p.name for p in (run_dir / "runs").glob("*")] if (run_dir / "runs").exists() else []


def test_start_is_active_on_return_and_the_duration_ends_it(run_dir):
    engine = FakeEngine()
    session = FaultSession(make_plan(duration_ms=600), engine).start()
    assert session.state == "running"
    status = live_status(run_dir)
    assert status["state"] == "running" and status["kind"] == "library"
    assert Ledger.all()[0].meta["kind"] == "library"  # status/sweep see library runs
    result = session.wait(timeout=5)
    assert result.state == "completed" and result.stop_reason == "completed"
    assert engine.steps[-1] == ("undo",)
    assert sum(1 for s in engine.steps if s[0] == "renew") >= 3  # tick = lease/3 = 100 ms
    assert result.counters[0]["matched_packets"] > 0
    assert leftovers(run_dir) == []
    (final,) = recent_finished()
    assert final["state"] == "completed" and final["run_id"] == session.run_id


def test_stop_is_idempotent_and_undoes_at_once(run_dir):
    engine = FakeEngine()
    session = FaultSession(make_plan(duration_ms=60_000), engine).start()
    t0 = time.monotonic()
    first = session.stop()
    assert time.monotonic() - t0 < 1.0
    assert first.state == session.state == "stopped" and first.stop_reason == "stopped"
    assert session.stop() is first
    assert engine.steps.count(("undo",)) == 1
    assert leftovers(run_dir) == []


def test_halted_is_its_own_final_state():
    session = FaultSession(make_plan(duration_ms=60_000), FakeEngine()).start()
    assert session.stop("halted").state == "halted"
    assert recent_finished()[-1]["state"] == "halted"
    with pytest.raises(InvalidSpec, match="stopped, halted"):
        session.stop("paused")


def test_a_session_runs_once():
    session = FaultSession(make_plan(), FakeEngine()).start()
    with pytest.raises(ChaosInjectError, match="already started"):
        session.start()
    session.stop()


def test_stop_before_start_changes_nothing():
    engine = FakeEngine()
    session = FaultSession(make_plan(), engine)
    assert session.state == "pending"
    assert session.stop().state == "stopped"
    assert engine.steps == []


def test_exception_in_the_block_still_rolls_back(run_dir):
    engine = FakeEngine()
    with pytest.raises(KeyError):
        with FaultSession(make_plan(duration_ms=60_000), engine) as session:
            assert session.active
            raise KeyError("the caller's bug")
    assert session.state == "stopped" and engine.steps[-1] == ("undo",)
    assert leftovers(run_dir) == []


def test_failed_apply_raises_in_the_caller_and_leaves_nothing(run_dir):
    engine = FakeEngine(fail_on_apply=RuntimeError("netlink said no"))
    session = FaultSession(make_plan(), engine)
    with pytest.raises(RuntimeError, match="netlink said no"):
        session.start()
    assert session.state == "failed" and ("undo",) in engine.steps
    assert leftovers(run_dir) == []
    assert recent_finished()[-1]["state"] == "failed"


def test_a_renewal_failure_rolls_back_and_is_reported_once(run_dir):
    engine = FakeEngine()
    calls = []

    def renew(expires_ns):
        calls.append(expires_ns)
        if len(calls) > 2:  # the first renewals (one may follow apply at once) work
            raise OSError("map update failed")

    engine.renew = renew
    session = FaultSession(make_plan(duration_ms=60_000), engine).start()
    with pytest.raises(OSError, match="map update failed"):
        session.wait(timeout=5)
    assert session.state == "failed" and engine.steps[-1] == ("undo",)
    assert session.wait(timeout=1).state == "failed"  # raised once, then the result
    assert leftovers(run_dir) == []


def test_stop_request_file_ends_a_run_from_another_process(run_dir):
    session = FaultSession(make_plan(duration_ms=60_000), FakeEngine()).start()
    (ledger,) = Ledger.all()
    ledger.request_stop()
    result = session.wait(timeout=3)
    assert result.state == "stopped"
    assert leftovers(run_dir) == []


def test_counters_from_the_caller_while_the_thread_renews():
    session = FaultSession(make_plan(duration_ms=60_000), FakeEngine()).start()
    seen = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        seen.append(session.counters()[0]["matched_packets"])
    session.stop()
    assert seen == sorted(seen) and seen[-1] > 0
    assert session.counters()[0]["matched_packets"] >= seen[-1]


def test_foreground_run_stops_on_request_from_another_thread():
    session = FaultSession(make_plan(duration_ms=60_000), FakeEngine(), kind="cli")
    threading.Timer(0.3, session.stop).start()
    result = session.run(handle_signals=False)
    assert result.state == "stopped" and result.stop_reason == "stopped"


def test_library_options_carry_their_units():
    fault = fault_from_options(delay="200ms", jitter="10ms", loss="5%")
    assert (fault.delay_ns, fault.jitter_ns, fault.loss_ratio) == (200 * MS, 10 * MS, 0.05)
    with pytest.raises(InvalidSpec, match="delay: give a duration with its unit"):
        fault_from_options(delay=200)
    with pytest.raises(InvalidSpec, match="loss: give a percentage"):
        fault_from_options(loss=0.1)


def test_start_fault_refuses_bad_input_before_touching_anything(run_dir):
    with pytest.raises(InvalidSpec, match="flow"):
        start_fault(loss="10%", duration="10s")
    with pytest.raises(InvalidSpec, match="duration"):
        start_fault("10.0.0.1->10.0.0.2", interface="eth0", loss="10%", duration=None)
    with pytest.raises(InvalidSpec, match="no fault requested"):
        start_fault("10.0.0.1->10.0.0.2", interface="eth0", duration="10s")
    with pytest.raises(InvalidSpec, match="percent"):
        start_fault("10.0.0.1->10.0.0.2", interface="eth0", loss="1%", duration="10s", percent=0)
    assert leftovers(run_dir) == []


def test_prepare_without_probe_is_the_dry_run_plan():
    prepared = prepare(["10.0.0.1->10.0.0.2:80/udp"], FaultSpec(loss_ratio=0.1), interface="eth0",
                       duration_ns=10_000 * MS, probe_kernel=False)
    assert prepared.plan.engine == "ebpf" and len(prepared.plan.rules) == 1


# -- blast radius ---------------------------------------------------------------------------------------------
INVENTORY = Inventory.from_mapping({"hosts": {
    "api": {"addresses": ["10.0.0.1"]},
    "db": {"addresses": ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "fd00::1"], "ports": [5432]}}})


@pytest.mark.parametrize("text,expected", [("25", 25.0), ("25%", 25.0), ("PERCENT(25)", 25.0), (100, 100.0)])
def test_percent_syntax(text, expected):
    assert parse_percent(text) == expected


@pytest.mark.parametrize("bad", ["0", "101", "-5", "abc", "nan", "PERCENT()"])
def test_percent_bad_input(bad):
    with pytest.raises(InvalidSpec, match="percent"):
        parse_percent(bad)


def test_percent_picks_ceil_of_the_targets_seeded():
    flow = parse_flow("api->db", INVENTORY)  # 4 IPv4 pairs (the v6 address has no v6 source)
    chosen, (selection,) = apply_percent([flow], 25, seed=7)
    assert selection.total == 4 and len(chosen) == 1
    assert chosen[0].dst.ports == (5432,) and len(chosen[0].dst.networks) == 1
    again, _ = apply_percent([flow], 25, seed=7)
    assert again == chosen
    picks = {apply_percent([flow], 25, seed=s)[0][0].dst.networks[0] for s in range(40)}
    assert len(picks) == 4, "every target can be chosen"
    assert len(apply_percent([flow], 30, seed=1)[0]) == 2  # ceil(1.2)
    assert len(apply_percent([flow], 100, seed=1)[0]) == 4
    assert "25% of 4 targets -> 1" in selection.describe(25)


def test_percent_keeps_a_single_target_flow_whole():
    flow = parse_flow("10.0.0.1->10.0.0.2", INVENTORY)
    chosen, (selection,) = apply_percent([flow], 10, seed=1)
    assert chosen == [flow] and selection.total == 1


def test_percent_shows_in_the_plan():
    prepared = prepare(["api->db"], FaultSpec(loss_ratio=0.1), interface="eth0", duration_ns=10_000 * MS,
                       probe_kernel=False, inventory=INVENTORY, percent=50, seed=3)
    assert len(prepared.plan.rules) == 2
    assert "50% of 4 targets -> 2" in prepared.describe(50)


def test_a_slow_apply_renews_at_once_and_the_duration_counts_from_activation():
    now = [1_000_000 * MS]
    engine = FakeEngine()
    real_apply = engine.apply

    def slow_apply(plan, owner, expires_ns):
        real_apply(plan, owner, expires_ns)
        now[0] += 500 * MS  # a bcc compile longer than the 300 ms lease

    engine.apply = slow_apply

    def sleep(seconds):
        now[0] += int(seconds * 1e9)

    session = FaultSession(make_plan(duration_ms=600, lease_ms=300), engine, clock=lambda: now[0], sleep=sleep)
    start = now[0]
    session.run(handle_signals=False)
    renewals = [s[1] for s in engine.steps if s[0] == "renew"]
    assert renewals[0] == start + 500 * MS + 300 * MS, "renewed right after apply, one lease ahead"
    assert renewals[-1] == start + 500 * MS + 600 * MS, "the deadline is duration after activation"


def test_cli_dry_run_shows_the_blast_radius(tmp_path, capsys):
    from chaosinject.cli import main

    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[hosts.api]\naddresses = ["10.0.0.1"]\n'
                         '[hosts.db]\naddresses = ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"]\nports = [5432]\n')
    args = ["--flow", "api->db", "--inventory", str(inventory), "--interface", "eth0", "--loss", "1%",
            "--duration", "5s", "--percent", "PERCENT(25)", "--seed", "3", "--dry-run"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "25% of 4 targets -> 1: 10.0.0.1->10.0.1." in first and "rules (1):" in first
    assert main(args) == 0
    again = capsys.readouterr().out
    chosen = [line for line in first.splitlines() if "targets ->" in line or line.startswith("  #")]
    assert chosen and chosen == [line for line in again.splitlines()
                                 if "targets ->" in line or line.startswith("  #")], "seeded: the same targets"
    assert main(args[:-5] + ["--percent", "0", "--dry-run"]) == 2
    assert "percent must be in (0, 100]" in capsys.readouterr().err


def test_the_package_facade_exports_what_it_lists():
    import chaosinject as injector

    for name in injector.__all__:
        assert getattr(injector, name) is not None
    assert {"network_latency", "packet_loss", "partition", "kill_process", "cpu_stress", "start_fault",
            "FaultSession"} <= set(injector.__all__)


# -- detach, with the fake engine (the supervisor is a real double-forked process) -----------------------------
def _fake_engines(monkeypatch, **kw):
    import chaosinject.engines.select as select

    monkeypatch.setattr(select, "make_engine", lambda name: FakeEngine(**kw))


def test_detach_returns_when_active_and_stop_ends_the_supervisor(monkeypatch, run_dir):
    from chaosinject.kernel.ledger import process_alive
    from chaosinject.supervisor import detach, stop_runs

    _fake_engines(monkeypatch)
    plan = make_plan(duration_ms=60_000)
    detached = detach(plan, "fake", timeout_s=30)
    assert detached.pid != os.getpid() and process_alive(detached.pid, None)
    (ledger,) = Ledger.all()
    assert ledger.pid == detached.pid and ledger.meta["kind"] == "detached"
    assert ledger.read_status()["state"] == "running"
    (outcome,) = stop_runs([plan.run_id], timeout_s=10)
    assert outcome.outcome == "stopped" and outcome.state == "stopped"
    end = time.monotonic() + 5
    while process_alive(detached.pid, None) and time.monotonic() < end:
        time.sleep(0.05)
    assert not process_alive(detached.pid, None)
    assert leftovers(run_dir) == []
    assert "supervisor pid" in open(detached.log_path).read()


def test_an_error_in_the_supervisor_comes_back_with_the_cli_exit_code(monkeypatch, run_dir):
    from chaosinject.errors import Unsupported
    from chaosinject.supervisor import DetachFailed, detach

    _fake_engines(monkeypatch, fail_on_apply=Unsupported("no clsact on this interface"))
    with pytest.raises(DetachFailed, match="no clsact") as err:
        detach(make_plan(), "fake", timeout_s=30)
    assert err.value.exit_code == 3
    assert leftovers(run_dir) == []
    assert recent_finished()[-1]["state"] == "failed"


def test_stop_refuses_unknown_runs_and_reports_finished_ones(run_dir):
    from chaosinject.supervisor import stop_runs

    with pytest.raises(InvalidSpec, match="no such run"):
        stop_runs(["20990101-000000-beef"])
    session = FaultSession(make_plan(duration_ms=60_000), FakeEngine()).start()
    session.stop()
    (outcome,) = stop_runs([session.run_id])
    assert outcome.outcome == "already-gone" and outcome.state == "stopped"


def test_stop_waits_out_the_moment_between_ledger_and_final_record(run_dir):
    import threading

    from chaosinject.kernel.ledger import record_final
    from chaosinject.supervisor import stop_runs

    run_id = "20990101-000000-cafe"   # its ledger is gone; the owner writes the final record 0.3 s later
    writer = threading.Timer(0.3, record_final, [{"run_id": run_id, "state": "completed", "updated": time.time()}])
    writer.start()
    try:
        (outcome,) = stop_runs([run_id])
    finally:
        writer.join()
    assert outcome.outcome == "already-gone" and outcome.state == "completed"


def test_wait_on_a_session_never_started_is_an_error_not_a_hang():
    with pytest.raises(ChaosInjectError, match="never started"):
        FaultSession(make_plan(), FakeEngine()).wait(timeout=1)


def test_stop_from_a_progress_callback_ends_the_run():
    holder = {}

    def on_progress(progress):
        holder["session"].stop()

    session = FaultSession(make_plan(duration_ms=60_000), FakeEngine(), on_progress=on_progress)
    holder["session"] = session
    session.start()
    assert session.wait(timeout=5).state == "stopped"


def test_stop_from_a_progress_callback_of_a_foreground_run():
    holder = {}
    session = FaultSession(make_plan(duration_ms=60_000), FakeEngine(), kind="cli",
                           on_progress=lambda p: holder["s"].stop())
    holder["s"] = session
    t0 = time.monotonic()
    assert session.run(handle_signals=False).state == "stopped"
    assert time.monotonic() - t0 < 2


def test_history_keeps_the_newest_runs_and_their_logs(monkeypatch, run_dir):
    import chaosinject.kernel.ledger as ledger_mod

    monkeypatch.setattr(ledger_mod, "HISTORY_KEEP", 3)
    for i in range(5):
        (ledger_mod.history_dir()).mkdir(parents=True, exist_ok=True)
        (ledger_mod.history_dir() / f"r{i}.log").write_text("log")
        ledger_mod.record_final({"run_id": f"r{i}", "state": "completed"})
        time.sleep(0.01)
    assert [s["run_id"] for s in recent_finished()] == ["r2", "r3", "r4"]
    assert sorted(p.name for p in ledger_mod.history_dir().glob("*.log")) == ["r2.log", "r3.log", "r4.log"]


def test_the_rollback_without_a_run_id_stops_network_and_held_host_faults(run_dir):
    """stop_network_fault(None) = stop_all_faults: what this process started and holds, host faults included;
    with a run id, only that run."""
    from chaosinject.experiment import actions, hostactions

    first = FaultSession(make_plan(duration_ms=60_000), FakeEngine(), kind="experiment").start()
    second = FaultSession(make_plan(duration_ms=60_000), FakeEngine(), kind="experiment").start()
    actions.register_session(first)
    actions.register_session(second)
    cancel = hostactions._register()           # a held host fault, as kill_hosts/stress_cpu hold one
    holder = threading.Thread(target=lambda: (cancel.wait(30), hostactions._unregister(cancel)), daemon=True)
    holder.start()
    try:
        (one,) = actions.stop_network_fault(first.run_id)["stopped"]
        assert one["run_id"] == first.run_id and one["state"] == "stopped"
        assert second.state == "running" and not cancel.is_set()
        out = actions.stop_network_fault()
        assert second.run_id in [s["run_id"] for s in out["stopped"]] and second.state == "stopped"
        assert out["host_faults_ended"] == 1 and cancel.is_set()
        holder.join(5)
        again = actions.stop_network_fault()                                               # a second rollback
        assert again["host_faults_ended"] == 0 and second.run_id not in [s["run_id"] for s in again["stopped"]]
    finally:
        cancel.set()
        for s in (first, second):
            s.stop()
    assert leftovers(run_dir) == []
