"""What the lab's host tests share: the skip when the lab's packages are missing, and a free lab subnet."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosinject.lab.preflight import free_subnet  # noqa: F401 - the tests' import point

needs_lab = pytest.mark.skipif(
    not (Path("/usr/bin/prometheus").exists() and list(Path("/usr/lib/postgresql").glob("*/bin/postgres"))),
    reason="the lab needs Debian's postgresql and prometheus packages (run `sudo make setup`)")
