"""Recording without root: flows to filters, placements, recorder choice from a plan, the run directory written
by a Recording of a fake recorder, latency shift and counters.json."""

import ipaddress
import json

import numpy as np
import pytest

from chaosinject.analysis import load_run
from chaosinject.plan import Interface, build_plan
from chaosinject.record import PacketFlow, Recording, latency_shift, placement_sees, write_samples
from chaosinject.record.recording import engine_counters
from chaosinject.record.runrecord import recorders_for_plan
from chaosinject.spec import FaultSpec, Inventory, parse_flow


def test_packet_flow_validation_and_filter_bytes():
    f = PacketFlow("a->b", "10.0.0.1", "10.0.0.2", sport=None, dport=9000, protocol="udp")
    flt = f.to_filter(events=True)
    assert flt.family == 4 and flt.proto == 17 and flt.flags == 1
    assert bytes(flt.daddr)[:4] == ipaddress.ip_address("10.0.0.2").packed  # network byte order in memory
    assert flt.dport.to_bytes(2, "little") == (9000).to_bytes(2, "big") and flt.sport == 0
    v6 = PacketFlow("a->b", None, "fd00::2", protocol="tcp").to_filter(events=False)
    assert v6.family == 6 and bytes(v6.daddr) == ipaddress.ip_address("fd00::2").packed and v6.flags == 0
    with pytest.raises(ValueError, match="at least one address"):
        PacketFlow("x", None, None)
    with pytest.raises(ValueError, match="protocol"):
        PacketFlow("x", "10.0.0.1", None, protocol="sctp")
    with pytest.raises(ValueError, match="port 70000"):
        PacketFlow("x", "10.0.0.1", None, dport=70000)


def test_placements_say_which_engine_holds_they_see():
    assert not placement_sees("userspace", "egress", "tc") and not placement_sees("userspace", "egress", "socket")
    assert placement_sees("userspace", "ingress", "socket") and not placement_sees("userspace", "ingress", "tc")
    assert placement_sees("netem", "egress", "tc") and not placement_sees("netem", "ingress", "tc")
    assert placement_sees("edt", "ingress", "socket") and placement_sees("ebpf", "egress", "tc")
    with pytest.raises(ValueError, match="placement"):
        placement_sees("netem", "egress", "wire")


def _plan(direction, engine="userspace", flow="client->server/udp"):
    inv = Inventory.from_mapping({"hosts": {
        "client": {"addresses": ["10.9.0.1"], "netns": "ns-c", "interface": "vc"},
        "server": {"addresses": ["10.9.0.2"], "ports": [9000], "netns": "ns-s", "interface": "vs"}}})
    spec = parse_flow(flow, inv)
    return build_plan([(spec, Interface("vc", "ns-c"))], FaultSpec(delay_ns=20_000_000), direction=direction,
                      duration_ns=10**9, engine=engine)


def test_recorders_from_a_plan_follow_the_rule_direction_and_say_what_they_cannot_see(tmp_path):
    (rec,), notes = recorders_for_plan(_plan("egress"))
    assert rec.sender == Interface("vc", "ns-c") and rec.receiver == Interface("vs", "ns-s")
    assert rec.flows[0].src == "10.9.0.1" and rec.flows[0].dport == 9000
    assert any("OUTPUT hook" in n for n in notes)  # the userspace egress hold is invisible: said, not hidden
    (cg := tmp_path / "cg").mkdir()
    (cg / "cgroup.procs").write_text("")
    recs, notes = recorders_for_plan(_plan("ingress"), cgroup=cg)
    oneway = [r for r in recs if r.source == "oneway"]
    assert len(oneway) == 1 and oneway[0].sender == Interface("vs", "ns-s") and oneway[0].placement == "socket"
    assert oneway[0].flows[0].src == "10.9.0.2" and oneway[0].flows[0].sport == 9000
    assert not notes  # the socket placement sees the ingress hold
    recs, _ = recorders_for_plan(_plan("both", flow="client->server/tcp"), cgroup=cg)
    assert sorted(r.source for r in recs) == ["oneway", "oneway", "rtt"]


class FakeRecorder:
    """A recorder with fixed samples: baseline ~1 ms, fault ~21 ms."""

    source = "oneway"

    def __init__(self):
        self.phases_seen = []
        self.started = self.stopped = False

    def start(self):
        self.started = True

    def set_phase(self, name):
        self.phases_seen.append(name)

    def stop(self):
        self.stopped = True

    def write(self, run_dir, phases):
        w = phases.windows()
        rng = np.random.default_rng(1)
        t = np.concatenate([np.linspace(w["baseline"]["start_ns"], w["baseline"]["end_ns"] - 1, 400),
                            np.linspace(w["fault"]["start_ns"], w["fault"]["end_ns"] - 1, 400)]).astype(np.int64)
        lat = np.concatenate([rng.normal(1e6, 1e4, 400), rng.normal(21e6, 1e4, 400)]).astype(np.int64)
        n = write_samples(run_dir, "oneway-000001", phases, t_ns=t, flow="a->b", source="oneway", latency_ns=lat)
        return {"source": "oneway", "placement": "socket", "part": "oneway-000001", "samples": n, "lost": 0}


def test_a_recording_writes_a_directory_analysis_loads(tmp_path):
    fake = FakeRecorder()
    rec = Recording(tmp_path / "r", [fake], flow="a->b", fault={"delay_ns": 20_000_000}, engine="fake", seed=3)
    with rec:
        rec.mark("fault")
        rec.set_counters({0: {"matched_packets": 400, "matched_bytes": 4000, "delayed_packets": 400,
                              "delay_p50_ns": 2e7}})
        rec.mark("recovery")
    assert fake.started and fake.stopped and fake.phases_seen == ["baseline", "fault", "recovery"]
    run = load_run(tmp_path / "r")
    assert len(run.samples) == 800 and run.meta["seed"] == 3 and run.meta["kernel"]
    (shift,) = rec.shifts
    assert shift.placement == "socket" and 19.9e6 < shift.shift_ns < 20.1e6
    assert shift.ci_low_ns <= shift.shift_ns <= shift.ci_high_ns
    counters = json.loads((tmp_path / "r" / "counters.json").read_text())
    assert counters["0"] == {"matched": 400, "bytes": 4000, "delayed": 400, "dropped": 0, "corrupted": 0,
                             "duplicated": 0}  # non-integer statistics are not counters
    with pytest.raises(ValueError, match="not empty"):
        Recording(tmp_path / "r", [], flow="a->b", fault={}, engine="fake")
    with pytest.raises(TypeError, match="not a Recorder"):
        Recording(tmp_path / "s", [object()], flow="a->b", fault={}, engine="fake")


def test_a_recording_without_samples_still_loads(tmp_path):
    with Recording(tmp_path / "e", [], flow="a->b", fault={}, engine="fake"):
        pass
    assert len(load_run(tmp_path / "e").samples) == 0


def test_latency_shift_needs_both_phases_and_engine_counters_rename():
    assert latency_shift("f", "oneway", [], [1, 2]) is None
    s = latency_shift("f", "oneway", [1.0, 2.0, 3.0], [11.0, 12.0, 13.0])
    assert s.shift_ns == 10.0 and s.ci_low_ns is None and "too few samples" in s.describe()
    assert engine_counters({1: {"dropped_packets": 3, "weird": -1}})["1"]["dropped"] == 3


def test_record_run_phases_and_ctrl_c_in_the_baseline(tmp_path, monkeypatch):
    import chaosinject.record.runrecord as rr
    from chaosinject.errors import Interrupted

    monkeypatch.setattr(rr, "recorders_for_plan", lambda plan, cgroup=None: ([FakeRecorder()], ["a note"]))
    plan = _plan("egress")
    slept = []

    class Result:
        counters = {0: {"matched_packets": 7}}
        stop_reason = "completed"

    result, rec, notes = rr.record_run(plan, lambda update: Result(), tmp_path / "ok", baseline_ns=2 * 10**9,
                                       recovery_ns=10**9, sleep=slept.append)
    assert slept == [2.0, 1.0] and notes == ["a note"] and rec.counters["0"]["matched"] == 7
    assert set(load_run(tmp_path / "ok").meta["phases"]) == {"baseline", "fault", "recovery"}

    def interrupted(seconds):
        raise KeyboardInterrupt
    with pytest.raises(Interrupted):
        rr.record_run(plan, lambda update: pytest.fail("no fault after Ctrl-C"), tmp_path / "int",
                      baseline_ns=10**9, recovery_ns=0, sleep=interrupted)
    assert json.loads((tmp_path / "int" / "meta.json").read_text())["phases"].keys() == {"baseline"}


def test_requested_shift_per_source():
    from chaosinject.record.runrecord import requested_shifts

    assert requested_shifts(_plan("egress")) == {("client->server/udp", "oneway"): 20_000_000,
                                                 ("client->server/udp", "rtt"): 20_000_000}
    assert requested_shifts(_plan("both"))[("client->server/udp", "rtt")] == 40_000_000


def test_the_record_facade_exports_every_name_it_lists_and_loads_them_on_use():
    import chaosinject.record as facade

    assert set(facade.__all__) == set(facade._EXPORTS)
    for name in facade.__all__:
        assert getattr(facade, name) is not None, name
    with pytest.raises(AttributeError):
        facade.no_such_name


def test_a_chaos_toolkit_action_module_loads_without_numpy():
    """`chaos run` imports our action module before the fault: numpy, pandas and bcc stay out of that path
    (they cost ~85 ms of the action's time to first packet affected, bench/fault_onset.py)."""
    import subprocess
    import sys

    code = ("import sys\nimport chaosinject.experiment.actions, chaosinject.experiment.probes\n"
            "print(sorted(m for m in ('numpy', 'pandas', 'bcc', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_summary_states_the_achieved_hold_beside_the_requested_delay():
    from chaosinject.engines.userspace_holds import median_ci
    from chaosinject.summary import format_summary, summarize

    plan = _plan("egress")
    holds = sorted(20_000_000 + 1_000 * i for i in range(101))  # 20.000 .. 20.100 ms
    ci = median_ci(holds)
    assert ci["delay_samples"] == 101 and ci["delay_p50_ci_low_ns"] < 20_050_000 < ci["delay_p50_ci_high_ns"]
    counters = {plan.rules[0].rule_id: {"matched_packets": 101, "delayed_packets": 101, "delay_p50_ns": 20_050_000,
                                        "delay_p99_ns": 20_099_000, **ci}}
    (summary,) = summarize(plan, counters)
    assert summary.requested_delay_ns == 20_000_000
    text = format_summary([summary])
    assert ("delay     requested 20.000 ms: achieved median 20.050 ms, p99 20.099 ms, 95% CI of the median "
            f"[{ci['delay_p50_ci_low_ns'] / 1e6:.3f}, {ci['delay_p50_ci_high_ns'] / 1e6:.3f}] ms "
            "(hold per packet over 101 packets") in text
    assert "CI" not in format_summary(summarize(plan, {plan.rules[0].rule_id: {
        "matched_packets": 3, **median_ci([1, 2, 3]), "delay_p50_ns": 2, "delay_p99_ns": 3}}))  # too few for one


def test_a_one_way_shift_its_placement_cannot_see_is_marked_beside_the_request():
    from types import SimpleNamespace

    from chaosinject.record.runrecord import format_recording

    plan = _plan("egress")  # userspace engine, egress: held before any tc hook
    flow = plan.rules[0].flow
    shifts = [latency_shift(flow, "oneway", [5_000] * 50, [6_000] * 50, placement="tc"),
              latency_shift(flow, "rtt", [30_000] * 50, [20_030_000] * 50, placement="sock_ops")]
    text = format_recording(SimpleNamespace(run_dir="d", summaries=[], shifts=shifts), plan, [])
    oneway, rtt = [line for line in text.splitlines() if line.startswith("  latency")]
    assert "(oneway at tc" in oneway and "requested +20.000 ms (not visible at the tc placement: see the note)" in oneway
    assert "(rtt at sock_ops" in rtt and rtt.endswith("requested +20.000 ms")


def test_an_optional_recorder_that_cannot_start_leaves_a_note_and_the_run_goes_on(tmp_path):
    class Failing(FakeRecorder):
        source = "rtt"

        def start(self):
            raise OSError("EPERM attaching sock_ops")

    fake, failing = FakeRecorder(), Failing()
    failing.optional = True
    notes: list[str] = []
    with Recording(tmp_path / "r", [failing, fake], flow="a->b", fault={}, engine="fake",
                   meta={"notes": notes}) as rec:
        rec.mark("fault")
        rec.mark("recovery")
    assert fake.started and fake.stopped and not failing.stopped
    assert notes == ["no rtt samples: it did not start: EPERM attaching sock_ops"]  # the list the summary prints
    assert [s["source"] for s in rec.summaries] == ["oneway"]
    required = Failing()
    with pytest.raises(OSError, match="EPERM"):
        Recording(tmp_path / "s", [required], flow="a->b", fault={}, engine="fake").start()
