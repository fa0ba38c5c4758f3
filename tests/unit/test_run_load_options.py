"""`chaos-inject run FILE --load-url URL --load-rate N --load-timeout D`: the built-in load the CLI adds to an
experiment (its halt guard and recorded request samples)."""

from __future__ import annotations

import pytest

from chaosinject.cli.experiment import _guard_from_args
from chaosinject.cli.main import build_parser
from chaosinject.errors import InvalidSpec
from chaosinject.experiment import load_experiment
from chaosinject.lab import db_timeout_demo


def guard_for(*argv: str):
    args = build_parser("run").parse_args(["run", str(db_timeout_demo.experiment_path()), *argv])
    return _guard_from_args(load_experiment(db_timeout_demo.experiment_path()), args)


def test_the_load_takes_its_url_rate_and_timeout_from_the_command_line():
    load = guard_for("--load-url", "http://10.0.0.1:8080/items", "--load-rate", "16",
                     "--load-timeout", "3s").load
    assert (load.url, load.rate_per_s, load.timeout_s) == ("http://10.0.0.1:8080/items", 16.0, 3.0)


def test_the_load_timeout_defaults_to_one_second():
    assert guard_for("--load-url", "http://10.0.0.1:8080/items").load.timeout_s == 1.0


@pytest.mark.parametrize("bad", ["3", "-1s", "soon"])
def test_a_bad_load_timeout_is_named(bad):
    with pytest.raises(InvalidSpec) as err:
        guard_for("--load-url", "http://10.0.0.1:8080/items", f"--load-timeout={bad}")
    assert "--load-timeout" in str(err.value)
