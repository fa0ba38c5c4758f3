import dataclasses

import pytest

from chaosinject.engines import select
from chaosinject.errors import InvalidSpec, Unsupported
from chaosinject.kernel.probe import Capabilities
from chaosinject.spec import FaultSpec
from chaosinject.spec.units import parse_rate_bps

THIS_HOST = Capabilities(kernel="6.18", root=True, bcc=True, bcc_headers="/h", btf=True, clsact=True, netem=False,
                         fq=False, prio=False, ifb=True, nfqueue=True, nft=True)
NETEM_HOST = dataclasses.replace(THIS_HOST, netem=True, fq=True, prio=True)


@pytest.fixture
def all_built(monkeypatch):
    """Pretend every engine is implemented, to test the choice alone."""
    real = select.engine_info
    monkeypatch.setattr(select, "engine_info", lambda name: dataclasses.replace(real(name), built=True))


def test_stateless_faults_go_to_ebpf_even_when_netem_exists(all_built):
    for fault in (FaultSpec(loss_ratio=0.1), FaultSpec(partition=True), FaultSpec(corrupt_ratio=0.1)):
        assert select.choose_engine(fault, NETEM_HOST)[0] == "ebpf"


def test_delay_prefers_netem_then_userspace(all_built):
    delay = FaultSpec(delay_ns=10**8, jitter_ns=10**6)
    assert select.choose_engine(delay, NETEM_HOST)[0] == "netem"
    assert select.choose_engine(delay, THIS_HOST)[0] == "userspace"
    fq_only = dataclasses.replace(THIS_HOST, fq=True)
    assert select.choose_engine(delay, fq_only)[0] == "edt"
    assert select.choose_engine(FaultSpec(delay_ns=10**8, loss_ratio=0.1), fq_only)[0] == "edt"
    assert select.choose_engine(FaultSpec(delay_ns=10**8, rate_bps=10**6), NETEM_HOST)[0] == "netem"
    with pytest.raises(Unsupported, match="netem needs sch_netem, sch_prio"):
        select.choose_engine(FaultSpec(delay_ns=10**8, loss_ratio=0.1), THIS_HOST)


def test_explicit_engine_is_checked_before_any_change(all_built):
    with pytest.raises(Unsupported, match="does not serve delay"):
        select.choose_engine(FaultSpec(delay_ns=1), NETEM_HOST, "ebpf")
    with pytest.raises(Unsupported, match="needs sch_netem"):
        select.choose_engine(FaultSpec(loss_ratio=0.1), THIS_HOST, "netem")
    with pytest.raises(Unsupported, match="needs root"):
        select.choose_engine(FaultSpec(loss_ratio=0.1), dataclasses.replace(THIS_HOST, root=False), "ebpf")
    with pytest.raises(InvalidSpec, match="engine"):
        select.choose_engine(FaultSpec(loss_ratio=0.1), THIS_HOST, "warp")


def test_doctor_lists_every_engine_and_choice():
    text = select.doctor_report(THIS_HOST)
    assert "sch_netem NO" in text and "ebpf       available" in text
    assert "loss          ebpf" in text


def test_doctor_cites_measured_precision_with_its_source():
    """Every delay engine's precision in `doctor` is a measured figure with the bench script and document that
    printed it, not a constant; the userspace one is the README's own."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = select.doctor_report(THIS_HOST)
    for name in ("netem", "edt", "userspace"):
        precision = select.ENGINES[name].precision
        assert precision in text
        assert re.search(r"median \+[0-9.]+ to \+[0-9.]+ ms, p99 \+[0-9.]+ to \+[0-9.]+ ms", precision), precision
        scripts = re.findall(r"(?:bench/)?(\w+\.py)", precision)
        assert scripts and all((root / "bench" / s).is_file() for s in scripts), precision
        (date,) = re.findall(r"\d{4}-\d\d-\d\d", precision)       # when it was measured, as bench/README.md says
        assert f"Last measured ({date}" in (root / "bench" / "README.md").read_text(), precision
    figure = re.search(r"median \+.*? ms, p99 \+.*? ms", select.ENGINES["userspace"].precision).group(0)
    assert figure in (root / "README.md").read_text()


def test_delay_specs_validate():
    assert FaultSpec(delay_ns=5, jitter_ns=1, distribution="pareto").features() == ("delay", "jitter",
                                                                                    "distribution")
    for kwargs, fragment in (({"jitter_ns": 1}, "needs --delay"),
                             ({"delay_ns": 5, "distribution": "normal"}, "give --jitter"),
                             ({"delay_ns": 5, "jitter_ns": 1, "distribution": "cauchy"}, "distribution must"),
                             ({"reorder_ratio": 0.1}, "give --delay"),
                             ({"partition": True, "delay_ns": 5}, "does not combine"),
                             ({"delay_ns": -1}, "non-negative")):
        with pytest.raises(InvalidSpec, match=fragment):
            FaultSpec(**kwargs)
    assert parse_rate_bps("1mbit") == 10**6 and parse_rate_bps("1mbps") == 8 * 10**6
    with pytest.raises(InvalidSpec, match="rate"):
        parse_rate_bps("fast")


def test_doctor_precision_line_measures_or_says_why_it_cites(monkeypatch):
    """doctor measures the delay engine it would choose; when it cannot, it says why and cites the figure with
    the bench script and date (the measuring itself is tests/host/test_doctor.py's)."""
    import re

    from chaosinject.cli import doctor

    calls = []
    monkeypatch.setattr(doctor, "delay_self_test", lambda name: calls.append(name) or doctor.SelfTest(
        name, 300, 299, 110_000.0, 900_000.0, 20_000.0, 0.8))
    import os

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    line = doctor.precision_line(THIS_HOST)
    assert calls == ["userspace"]
    assert "measured now on this host: userspace, 10 ms asked, added-delay error median +0.11 ms, p99 +0.90 ms" \
           in line and "299/300" in line
    assert re.search(r"bench/delay_engines\.py --engines userspace, \d{4}-\d\d-\d\d",
                     doctor.precision_line(THIS_HOST, self_test=False))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "not measured (the self-test needs root); cited:" in doctor.precision_line(THIS_HOST)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(doctor, "delay_self_test", lambda name: (_ for _ in ()).throw(OSError("EPERM")))
    failed = doctor.precision_line(THIS_HOST)
    assert "self-test failed (OSError: EPERM); cited:" in failed
    none = dataclasses.replace(THIS_HOST, nfqueue=False, nft=False)
    assert "no delay engine here" in doctor.precision_line(none)
    assert calls == ["userspace"]
