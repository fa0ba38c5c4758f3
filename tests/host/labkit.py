"""What the lab's host tests share: the skip when the lab's packages are missing, and a free lab subnet."""

from __future__ import annotations

import ipaddress
import random
import subprocess
from pathlib import Path

import pytest

needs_lab = pytest.mark.skipif(
    not (Path("/usr/bin/prometheus").exists() and list(Path("/usr/lib/postgresql").glob("*/bin/postgres"))),
    reason="the lab needs Debian's postgresql and prometheus packages (run `sudo make setup`)")


def free_subnet(first_two: str) -> str:
    """A /24 under ``first_two`` (e.g. "10.213") that no route on this machine overlaps."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(w.split()[0], strict=False) for w in routes.splitlines()
            if w and w.split()[0][0].isdigit()]
    for _ in range(100):
        net = ipaddress.ip_network(f"{first_two}.{random.randint(100, 250)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise AssertionError(f"no free {first_two}.x.0/24 for a test lab")
