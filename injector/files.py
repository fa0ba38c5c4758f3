"""Atomic JSON files: a reader (another process, a crash-time sweep) sees the old file or the new one, whole."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any, *, dir_mode: int = 0o700) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A missing directory is made with ``dir_mode`` (private by default: run state is root's).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    tmp = path.with_suffix(f".tmp{os.getpid()}")  # per process: two writers never share a temporary file
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
