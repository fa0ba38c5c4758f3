"""Enumerated crash points (injector/crashpoints.py) and what `sweep --dry-run`/`status` say a dead run left."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from chaosinject import crashpoints
from chaosinject.kernel.ledger import Ledger
from chaosinject.kernel.sweep import describe, leftovers


@pytest.mark.parametrize("text, expected", [(None, None), ("", None), ("3", (3, "before")),
                                            ("3:before", (3, "before")), ("12:after", (12, "after"))])
def test_crash_at_parses(text, expected):
    assert crashpoints.parse_crash_at(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "x", "3:during", ":after"])
def test_crash_at_refuses_bad_values_naming_them(text):
    with pytest.raises(ValueError, match="CHAOS_INJECT_CRASH_AT"):
        crashpoints.parse_crash_at(text)


def test_trace_numbers_every_step_and_once_steps_once(tmp_path, monkeypatch):
    trace = tmp_path / "trace"
    monkeypatch.setenv(crashpoints.TRACE_ENV, str(trace))
    monkeypatch.delenv(crashpoints.CRASH_AT_ENV, raising=False)
    crashpoints._reset_for_tests()
    for label in ("a", "b"):
        with crashpoints.step(label):
            pass
    for _ in range(3):
        with crashpoints.step("tick", once=True):
            pass
    assert trace.read_text().splitlines() == ["1\ta", "2\tb", "3\ttick"]
    assert crashpoints.count() == 3
    crashpoints._reset_for_tests()


SCRIPT = textwrap.dedent("""
    import pathlib, sys
    from chaosinject import crashpoints
    out = pathlib.Path(sys.argv[1])
    for n in (1, 2, 3):
        with crashpoints.step(f"s{n}"):
            out.write_text(out.read_text() + f"in{n} " if out.exists() else f"in{n} ")
""")


@pytest.mark.parametrize("crash_at, done", [("1:before", ""), ("1:after", "in1 "), ("2", "in1 "),
                                            ("3:after", "in1 in2 in3 ")])
def test_the_process_kills_itself_before_or_after_the_nth_step(tmp_path, crash_at, done):
    out = tmp_path / "out"
    env = {**os.environ, crashpoints.CRASH_AT_ENV: crash_at}
    env.pop(crashpoints.TRACE_ENV, None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, cwd=os.getcwd())
    assert proc.returncode == -9
    assert (out.read_text() if out.exists() else "") == done


def test_leftovers_describe_what_sweep_would_do_last_first(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(tmp_path))
    dead = Ledger(run_id="dead1", meta={"kind": "probe"}, pid=2**22 + 7, pid_start_ticks=1)
    dead.entries = [{"kind": "netns", "name": "ci-probe-1-ab"},
                    {"kind": "clsact", "netns": "n1", "ifname": "veth0", "ifindex": 3, "marker": True},
                    {"kind": "bpf-filter", "netns": "n1", "ifname": "veth0", "ifindex": 3, "hook": "egress",
                     "prio": 1, "name": "chaos-inject:x"}]
    dead.save()
    Ledger(run_id="live1").save()  # this process: alive, not a leftover
    found = leftovers()
    assert [run["run_id"] for run in found] == ["dead1"]
    assert [a["action"] for a in found[0]["actions"]] == [
        "remove egress filter chaos-inject:x on veth0 (netns n1)",
        "release clsact on veth0 (netns n1) (deleted only if chaos-inject made it and nothing is attached)",
        "remove network namespace ci-probe-1-ab"]
    assert json.loads((tmp_path / "runs" / "dead1.json").read_text())["entries"] == dead.entries  # unchanged


def test_every_undo_kind_has_words():
    from chaosinject.kernel.undo import UNDO

    for kind in UNDO:
        assert not describe({"kind": kind, "name": "n", "ifname": "i"}).startswith("undo ")
