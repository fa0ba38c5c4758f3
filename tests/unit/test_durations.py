"""One duration parser (spec/units.py) for the CLI, the library (strings or timedelta), host faults and schedules."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest

from chaosinject.errors import InvalidSpec
from chaosinject.spec.units import parse_duration_ns, parse_duration_s

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value,ns", [("200ms", 200_000_000), (" 1.5s ", 1_500_000_000), ("2m", 120 * 10**9),
                                      (datetime.timedelta(milliseconds=250), 250_000_000)])
def test_strings_and_timedeltas(value, ns):
    assert parse_duration_ns(value) == ns
    assert parse_duration_s(value) == ns / 1e9


@pytest.mark.parametrize("value,message", [(5, "give a duration with its unit"), (True, "with its unit"),
                                           ("5", "not a duration"), ("0s", "greater than zero"),
                                           (datetime.timedelta(0), "greater than zero"),
                                           (datetime.timedelta(seconds=-1), "greater than zero")])
def test_refusals_name_the_field(value, message):
    with pytest.raises(InvalidSpec, match=f"hold: .*{message}"):
        parse_duration_ns(value, field="hold")


def test_zero_where_allowed():
    assert parse_duration_ns("0ms", allow_zero=True) == 0
    assert parse_duration_ns(datetime.timedelta(0), allow_zero=True) == 0


def test_no_other_module_wraps_it():
    wrapper = re.compile(r"^def _(duration|seconds)\((text|value)\b", re.M)     # the wrappers this replaced
    assert [str(p.relative_to(ROOT)) for p in (ROOT / "injector").rglob("*.py") if wrapper.search(p.read_text())] == []
