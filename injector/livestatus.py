"""Where running experiments publish their status, and reading it back for `chaos-inject status`.

Apart from the experiment runner so that `status` does not import it (numpy and the experiment machinery).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .files import experiments_dir


def live_experiments() -> list[dict[str, Any]]:
    """Status of the experiments running now (for `chaos-inject status`); files of dead runners are skipped."""
    from .kernel.ledger import process_alive

    out = []
    d = experiments_dir()
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            st = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(st.get("pid"), int) and process_alive(st["pid"], None):
            out.append(st)
    return out
