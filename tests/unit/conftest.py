"""Fixtures shared by unit test modules: a private run root, and the fleet tests' three-host inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosinject import crashpoints

THREE_HOSTS_YAML = """
all:
  children:
    web:
      hosts:
        w1: {ansible_host: 10.9.0.11}
        w2: {ansible_host: 10.9.0.12}
    db:
      hosts:
        d1: {ansible_host: 10.9.0.21}
"""


@pytest.fixture
def run_root(tmp_path, monkeypatch) -> Path:
    """CHAOS_INJECT_RUN_DIR in the test's tmp_path (state, ledgers, journals stay there), with no crash point
    or crash trace inherited from the environment. Modules take it with
    ``pytestmark = pytest.mark.usefixtures("run_root")``."""
    root = tmp_path / "run-root"
    monkeypatch.setenv("CHAOS_INJECT_RUN_DIR", str(root))
    monkeypatch.delenv(crashpoints.CRASH_AT_ENV, raising=False)
    monkeypatch.delenv(crashpoints.TRACE_ENV, raising=False)
    return root


@pytest.fixture
def inv_path(tmp_path) -> Path:
    """An Ansible YAML inventory: web = w1, w2; db = d1."""
    path = tmp_path / "hosts.yml"
    path.write_text(THREE_HOSTS_YAML)
    return path
