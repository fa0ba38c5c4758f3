"""tc netem process actions: which commands are translated, netem's arguments, and what is refused."""

from __future__ import annotations

import json

import pytest

from chaosinject.errors import InvalidSpec
from chaosinject.experiment import load_experiment
from chaosinject.experiment.spec import ExperimentInvalid
from chaosinject.experiment.tcnetem import (TcSettings, check_experiment, describe_translation, parse_netem_args,
                                         parse_tc, tc_settings)


def test_the_seeds_commands():
    add = parse_tc("tc", "qdisc add dev eth0 root netem delay 5000ms")
    assert (add.verb, add.interface, add.netns) == ("add", "eth0", None)
    assert add.fault.delay_ns == 5_000_000_000 and add.fault.describe() == "delay 5s"
    rb = parse_tc("tc", "qdisc del dev eth0 root")
    assert (rb.verb, rb.interface, rb.fault) == ("del", "eth0", None)


@pytest.mark.parametrize("path", ["tc", "/sbin/tc", "/usr/sbin/tc"])
def test_tc_by_path(path):
    assert parse_tc(path, ["qdisc", "replace", "dev", "v0", "root", "netem", "loss", "5%"]).verb == "replace"


@pytest.mark.parametrize("path,args", [
    ("tcx", "qdisc add dev eth0 root netem delay 1s"),          # not tc
    ("tc", "qdisc show dev eth0"),
    ("tc", "qdisc add dev eth0 root handle 1: prio"),          # not netem: literal
    ("tc", "filter add dev eth0 ingress bpf da obj x.o"),
    ("tc", "qdisc del dev eth0 parent 1:1"),                    # not the root: literal
    ("tc", "qdisc show dev eth0 | grep netem"),                 # a pipeline that changes nothing
    ("tc", "-batch cmds.txt"),
    ("tc", ""),
])
def test_literal_commands(path, args):
    assert parse_tc(path, args) is None


def test_netns_and_abbreviations():
    cmd = parse_tc("tc", "-n lab qd change dev eth1 root handle 1: netem delay 10ms")
    assert (cmd.verb, cmd.netns, cmd.interface) == ("change", "lab", "eth1")
    assert parse_tc("tc", "-netns x qdisc delete dev e root netem").verb == "del"


def test_all_netem_arguments():
    f, seed, notes = parse_netem_args(
        "limit 1000 delay 100ms 10ms 25% distribution normal loss random 1% corrupt 0.1% duplicate 2 "
        "reorder 5% rate 10mbit seed 7".split())
    assert (f.delay_ns, f.jitter_ns, f.delay_correlation_ratio, f.distribution) == (100e6, 10e6, 0.25, "normal")
    assert (f.loss_ratio, f.corrupt_ratio, f.duplicate_ratio, f.reorder_ratio) == (0.01, 0.001, 0.02, 0.05)
    assert f.rate_bps == 10_000_000 and seed == 7
    assert notes and "limit 1000" in notes[0]


def test_tc_time_units():
    for text, ns in (("1.5sec", 1_500_000_000), ("250usec", 250_000), ("20msecs", 20_000_000), ("2s", 2e9)):
        assert parse_netem_args(["delay", text])[0].delay_ns == ns


def test_loss_models():
    ge = parse_netem_args("loss gemodel 1% 10% 70% 0.1%".split())[0].loss_burst
    assert (ge.p, ge.r, ge.bad_loss_ratio, ge.good_loss_ratio) == (0.01, 0.1, 0.7, 0.001)
    st = parse_netem_args("loss state 5% 50%".split())[0].loss_state
    assert (st.p13, st.p31) == (0.05, 0.5)
    assert parse_netem_args("drop 3".split())[0].loss_ratio == 0.03      # bare numbers are percent, as in tc


@pytest.mark.parametrize("args,field", [
    ("loss 1% 25%", "netem loss"),                    # loss correlation
    ("corrupt 1% 5%", "netem corrupt"),
    ("duplicate 1% 5%", "netem duplicate"),
    ("delay 10ms reorder 5% 50%", "netem reorder"),
    ("delay 10ms reorder 5% gap 5", "netem gap"),
    ("slot 1ms 2ms", "netem slot"),
    ("loss 1% ecn", "netem ecn"),
    ("rate 1mbit 20", "netem rate"),                  # packet overhead
    ("delay 100", "netem delay"),                     # no unit
    ("delay 10ms distribution bogus", "netem distribution"),
    ("reorder 5%", "netem reorder"),                  # needs a delay
    ("", "netem"),                                    # no fault
    ("wobble 3", "netem"),
    ("loss 150%", "netem loss"),
    ("delay", "netem delay"),
    ("loss gemodel", "netem loss gemodel"),           # a model without its percentages
    ("loss state delay 1ms", "netem loss state"),
    ("loss gemodel 1% 2% 3% 4% 5%", "netem"),          # at most p r 1-h 1-k: the fifth is not an option
])
def test_refusals_name_the_option(args, field):
    with pytest.raises(InvalidSpec) as err:
        parse_netem_args(args.split())
    assert err.value.field == field


def test_refused_commands():
    with pytest.raises(InvalidSpec, match="parent 1:1"):
        parse_tc("tc", "qdisc add dev eth0 parent 1:1 handle 10: netem delay 1ms")
    with pytest.raises(InvalidSpec, match="shell operators"):
        parse_tc("tc", "qdisc add dev eth0 root netem delay 1ms && echo done")
    with pytest.raises(InvalidSpec, match="dev IF"):
        parse_tc("tc", "qdisc add root netem delay 1ms")


def test_settings_from_configuration():
    assert tc_settings({}) == TcSettings()
    s = tc_settings({"chaos-inject": {"netns": "lab", "tc_duration": "90s"}})
    assert (s.literal, s.netns, s.duration) == (False, "lab", "90s")
    assert tc_settings({"chaos-inject": {"tc": "literal"}}).literal
    assert tc_settings({}, literal=True, netns="x") == TcSettings(True, "x")
    with pytest.raises(InvalidSpec, match="tc"):
        tc_settings({"chaos-inject": {"tc": "sometimes"}})
    with pytest.raises(InvalidSpec, match="tc_duration"):
        tc_settings({"chaos-inject": {"tc_duration": "forever"}})


def _exp(tmp_path, method_args: str):
    doc = {"title": "t", "description": "d",
           "method": [{"type": "action", "name": "add", "provider": {"type": "process", "path": "tc",
                                                                       "arguments": method_args}}],
           "rollbacks": [{"type": "action", "name": "del", "provider": {"type": "process", "path": "tc",
                                                                         "arguments": "qdisc del dev ${iface} root"}}],
           "configuration": {"iface": "eth0"}}
    p = tmp_path / "e.json"
    p.write_text(json.dumps(doc))
    return load_experiment(p)


def test_check_experiment_lists_translations_and_refusals(tmp_path):
    exp = _exp(tmp_path, "qdisc add dev ${iface} root netem delay 50ms loss 1%")
    found = check_experiment(exp, {"iface": "eth0"}, {}, TcSettings(netns="lab"))
    assert [p for p, _ in found] == ["method[0]", "rollbacks[0]"]
    text = describe_translation(found[0][1], TcSettings(netns="lab"))
    assert text.startswith("tc netem -> chaos-inject fault on eth0 in netns lab (") and "at most 5m" in text
    assert "removes only the chaos-inject fault" in describe_translation(found[1][1], TcSettings())
    assert check_experiment(exp, {"iface": "eth0"}, {}, TcSettings(literal=True)) == []
    bad = _exp(tmp_path, "qdisc add dev eth0 root netem loss 1% 25%")
    with pytest.raises(ExperimentInvalid, match=r"method\[0\]\.provider\.arguments: .*correlation.*--literal-tc"):
        check_experiment(bad, {}, {}, TcSettings())


def test_dry_run_shows_the_seed_translation(capsys):
    from chaosinject.cli import main

    assert main(["run", "injector/experiment/examples/seed-experiment.json", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "<- tc netem -> chaos-inject fault on eth0 (delay 5s, egress" in out
    assert "<- tc qdisc del -> removes only the chaos-inject fault this run started on eth0" in out
    assert main(["run", "injector/experiment/examples/seed-experiment.json", "--dry-run", "--literal-tc"]) == 0
    assert "chaos-inject fault" not in capsys.readouterr().out
