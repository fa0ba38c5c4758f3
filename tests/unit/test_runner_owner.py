import os
import signal
import subprocess

import pytest

from chaosinject.engines.fake import FakeEngine
from chaosinject.errors import CleanupFailed
from chaosinject.kernel import undo
from chaosinject.kernel.ledger import Ledger
from chaosinject.kernel.owner import KernelOwner
from chaosinject.kernel.sweep import sweep
from chaosinject.plan import Interface, build_plan
from chaosinject.runner import lease_expiry, run_plan
from chaosinject.spec import FaultSpec, parse_flow
from chaosinject.summary import summarize

SECOND = 1_000_000_000


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


@pytest.fixture
def undone(monkeypatch):
    """A ledger entry kind 'test' whose undo is recorded (and fails when the entry says so)."""
    log = []

    def undo_test(entry):
        if entry.get("fail"):
            raise OSError("boom")
        log.append(entry["name"])

    monkeypatch.setitem(undo.UNDO, "test", undo_test)
    return log


class FakeClock:
    def __init__(self):
        self.now = 1_000 * SECOND

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += int(seconds * 1e9)


def make_plan(duration_s=10, lease_s=3):
    return build_plan([(parse_flow("10.0.0.1->10.0.0.2:80/tcp"), Interface("eth0"))], FaultSpec(loss_ratio=0.25),
                      duration_ns=duration_s * SECOND, lease_ns=lease_s * SECOND)


def test_lease_never_reaches_past_the_deadline():
    assert lease_expiry(0, 3, 10) == 3
    assert lease_expiry(9, 3, 10) == 10


def test_run_renews_until_the_deadline_then_undoes(run_dir):
    clock, engine, plan = FakeClock(), FakeEngine(), make_plan()
    start = clock.now
    result = run_plan(plan, engine, clock=clock, sleep=clock.sleep, handle_signals=False)
    assert result.stop_reason == "completed"
    assert engine.steps[0] == ("check", plan.run_id)
    assert engine.steps[1] == ("apply", 1, start + 3 * SECOND)
    renewals = [s[1] for s in engine.steps if s[0] == "renew"]
    assert len(renewals) == 10  # one per second (tick = min(lease/3, 1s))
    assert all(r <= start + 10 * SECOND for r in renewals) and renewals[-1] == start + 10 * SECOND
    assert engine.steps[-1] == ("undo",)
    assert not list((run_dir / "runs").glob("*.json")), "ledger and status must be gone"
    (summary,) = summarize(plan, result.counters)
    (loss,) = summary.achieved
    assert loss.trials == 10_000 and loss.events != 2_500     # drawn per packet (seeded), not booked as 25 %
    assert loss.consistent, loss                                # seed 0: 25 % asked, the draw inside its interval


@pytest.mark.parametrize("seed", range(5))
def test_the_summary_catches_an_engine_that_drops_too_much(seed):
    clock, plan = FakeClock(), make_plan()
    honest = run_plan(plan, FakeEngine(seed=seed), clock=clock, sleep=clock.sleep, handle_signals=False)
    wrong = run_plan(plan, FakeEngine(seed=seed, drop_ratio=0.30), clock=clock, sleep=clock.sleep,
                     handle_signals=False)
    ((honest_loss,),), ((wrong_loss,),) = ([s.achieved for s in summarize(plan, r.counters)] for r in (honest, wrong))
    assert wrong_loss.events > honest_loss.events
    assert not wrong_loss.consistent, wrong_loss    # 30 % of 10,000 vs 25 % asked: ~11 standard errors away


def test_failed_apply_undoes_and_raises(run_dir):
    engine = FakeEngine(fail_on_apply=RuntimeError("netlink said no"))
    with pytest.raises(RuntimeError, match="netlink said no"):
        run_plan(make_plan(), engine, handle_signals=False)
    assert ("undo",) in engine.steps
    assert not list((run_dir / "runs").glob("*.json"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_unwind_and_undo(signum):
    clock, engine = FakeClock(), FakeEngine()

    def sleep(seconds):
        clock.sleep(seconds)
        if clock.now > 1_003 * SECOND:
            os.kill(os.getpid(), signum)

    result = run_plan(make_plan(), engine, clock=clock, sleep=sleep)
    assert result.stop_reason == signal.Signals(signum).name
    assert engine.steps[-1] == ("undo",)
    assert signal.getsignal(signum) is not None  # handlers restored (not ours)


def test_owner_records_before_creating_and_undoes_lifo(undone, run_dir):
    seen_in_ledger = []
    with KernelOwner("r1", handle_signals=False) as owner:
        for name in ("a", "b", "c"):
            owner.create({"kind": "test", "name": name},
                         lambda: seen_in_ledger.append(len(Ledger.load(owner.ledger.path).entries)))
    assert seen_in_ledger == [1, 2, 3]  # written before each creation
    assert undone == ["c", "b", "a"]
    assert not owner.ledger.path.exists()


def test_failed_creation_leaves_no_entry_and_undoes_nothing_it_did_not_make(undone):
    with KernelOwner("r2", handle_signals=False) as owner:
        with pytest.raises(OSError):
            owner.create({"kind": "test", "name": "x"}, lambda: (_ for _ in ()).throw(OSError("EEXIST")))
        assert owner.ledger.entries == []
    assert undone == []


def test_one_failed_undo_does_not_strand_the_rest(undone):
    owner = KernelOwner("r3", handle_signals=False)
    with pytest.raises(CleanupFailed) as err:
        with owner:
            owner.create({"kind": "test", "name": "a"}, lambda: None)
            owner.create({"kind": "test", "name": "bad", "fail": True}, lambda: None)
            owner.create({"kind": "test", "name": "c"}, lambda: None)
    assert undone == ["c", "a"]
    assert len(err.value.failures) == 1
    assert [e["name"] for e in Ledger.load(owner.ledger.path).entries] == ["bad"], "kept for sweep"


def test_sweep_undoes_dead_runs_only(undone):
    proc = subprocess.Popen(["true"])
    proc.wait()
    ledger = Ledger(run_id="dead", pid=proc.pid, entries=[{"kind": "test", "name": "d1"},
                                                          {"kind": "test", "name": "d2"}])
    ledger.save()
    live = Ledger(run_id="live", entries=[{"kind": "test", "name": "l1"}])
    live.save()
    report = sweep()
    assert report.swept_runs == ["dead"] and report.live_runs == ["live"]
    assert undone == ["d2", "d1"]
    assert not ledger.path.exists() and live.path.exists()


def test_a_signal_during_creation_waits_until_the_object_is_owned(undone):
    owner = KernelOwner("r4")
    with pytest.raises(Exception) as err:
        with owner:
            owner.create({"kind": "test", "name": "a"}, lambda: os.kill(os.getpid(), signal.SIGTERM))
            raise AssertionError("not reached: the deferred signal is raised when create() returns")
    assert type(err.value).__name__ == "Interrupted"
    assert undone == ["a"], "the object created while the signal was pending is undone"
