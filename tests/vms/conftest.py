"""The VM tier (`make test-vms`, not in `make test`): Vagrant VMs under QEMU TCG, minutes per test."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CHAOS_INJECT_VM_TIER") == "1":
        return
    skip = pytest.mark.skip(reason="VM tier: runs only under `make test-vms` (CHAOS_INJECT_VM_TIER=1); "
                                   "a Vagrant VM under TCG takes minutes")
    for item in items:
        if str(item.fspath).startswith(os.path.dirname(__file__)):
            item.add_marker(skip)
