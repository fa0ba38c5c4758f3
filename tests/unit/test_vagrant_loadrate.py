"""vagrant/provision/loadrate.py: the VM lab load's rate (load.sh at provisioning, experiment.py before the run)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from chaosinject.lab.state import LabError

SCRIPT = Path(__file__).resolve().parents[2] / "vagrant" / "provision" / "loadrate.py"


@pytest.fixture
def loadrate(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("loadrate", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    conf = tmp_path / "load.json"
    conf.write_text(json.dumps({"url": "http://192.0.2.1:8080/items", "rate_per_s": 50}))
    monkeypatch.setattr(mod, "LOAD_CONF", conf)
    monkeypatch.setattr(mod, "RATE_NOTE", tmp_path / "rate-note")
    return mod


def test_a_rate_by_hand_is_written_and_kept_before_the_run(loadrate, monkeypatch):
    assert loadrate.main(["7"]) == 0
    assert json.loads(loadrate.LOAD_CONF.read_text())["rate_per_s"] == 7
    assert loadrate.current() == (7.0, loadrate.SET_BY_HAND)

    def no_systemctl(*a, **k):
        raise AssertionError("a rate set by hand is not measured again")
    monkeypatch.setattr(loadrate.subprocess, "run", no_systemctl)
    assert loadrate.remeasure() == (7.0, loadrate.SET_BY_HAND)


@pytest.mark.parametrize("bad", ["fast", "0", "-3"])
def test_bad_rate_is_refused_and_writes_nothing(loadrate, bad, capsys):
    assert loadrate.main([bad]) == 2
    assert "CHAOS_LAB_LOAD_RATE" in capsys.readouterr().err
    assert not loadrate.RATE_NOTE.exists()
    assert json.loads(loadrate.LOAD_CONF.read_text())["rate_per_s"] == 50


def test_auto_is_measured_again_with_the_load_stopped_and_started_again(loadrate, monkeypatch):
    calls = []
    monkeypatch.setattr(loadrate.subprocess, "run", lambda argv, check: calls.append(argv[1]))
    monkeypatch.setattr(loadrate, "measure_capacity", lambda url, conc, **k: 10.0)
    assert loadrate.main(["auto"]) == 0
    assert loadrate.current()[0] == 4.0                      # 40 % of 10/s
    monkeypatch.setattr(loadrate, "measure_capacity", lambda url, conc, **k: 20.0)
    rate, why = loadrate.remeasure()
    assert rate == 8.0 and "before the run" in why
    assert calls == ["stop", "start"]


def test_the_load_starts_again_when_the_measurement_fails(loadrate, monkeypatch):
    calls = []
    monkeypatch.setattr(loadrate.subprocess, "run", lambda argv, check: calls.append(argv[1]))
    monkeypatch.setattr(loadrate.time, "sleep", lambda s: None)

    def refused(*a, **k):
        raise OSError("connection refused")
    monkeypatch.setattr(loadrate, "measure_capacity", refused)
    with pytest.raises(SystemExit, match="never answered"):
        loadrate.remeasure()
    assert calls == ["stop", "start"]


def test_only_an_api_not_answering_is_retried(loadrate, monkeypatch):
    """measured_rate waits for an api that does not answer 200 yet (LabError) or whose connection fails; a bug in
    the measurement is raised at once, not retried for two minutes."""
    monkeypatch.setattr(loadrate.time, "sleep", lambda s: None)
    answers = iter([LabError("api does not answer with 200"), OSError("connection refused"), 30.0])

    def measure(*a, **k):
        got = next(answers)
        if isinstance(got, Exception):
            raise got
        return got
    monkeypatch.setattr(loadrate, "measure_capacity", measure)
    rate, _ = loadrate.measured_rate("http://api")
    assert rate > 0

    def broken(*a, **k):
        raise KeyError("max_in_flight")
    monkeypatch.setattr(loadrate, "measure_capacity", broken)
    with pytest.raises(KeyError):
        loadrate.measured_rate("http://api")
