"""Fleet tier: root, bcc, OpenSSH and Ansible; 4 sshd hosts in namespaces of the test (fleetkit.py)."""

from __future__ import annotations

import pytest

from chaosinject.kernel.netns import existing_namespaces

from .fleetkit import make_fleet, skip_reason

SKIP_REASON = skip_reason()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/fleet/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Four hosts h1..h4 for the module's tests (each test leaves them clean; checked by ``clean``)."""
    made = make_fleet(tmp_path_factory.mktemp("fleet"), count=4)
    try:
        yield made
    finally:
        names = list(made.namespaces)
        problems = made.close()
        assert not set(names) & set(existing_namespaces()), "namespaces left behind"
        assert not problems, f"left behind on the hosts: {problems}"


@pytest.fixture
def clean(fleet):
    """After the test: no live run, no ledger on any host (its faults all ended)."""
    yield fleet
    left = {h: fleet.live_runs(h) for h in fleet.hosts}
    left = {h: [r["run_id"] for r in runs] for h, runs in left.items() if runs}
    for host in left:
        fleet.chaos(host, "stop", "--all", timeout=30)
    assert not left, f"live runs left on hosts: {left}"
