"""One writer for JSON state and run files (injector/files.py): atomic (rename over), fsync'd, nothing left
behind when encoding fails, and used by every module that writes a JSON file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chaosinject.files import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]


def test_writes_whole_files_in_the_order_asked(tmp_path):
    path = tmp_path / "new" / "meta.json"
    write_json_atomic(path, {"b": 1, "a": [1.5, None]}, dir_mode=0o755, sort_keys=False)
    assert json.loads(path.read_text()) == {"b": 1, "a": [1.5, None]}
    assert list(json.loads(path.read_text())) == ["b", "a"]
    assert (path.parent.stat().st_mode & 0o777) == 0o755
    write_json_atomic(path, {"b": 2, "a": 0})
    assert path.read_text().index('"a"') < path.read_text().index('"b"')     # sorted by default (state files)
    assert sorted(p.name for p in path.parent.iterdir()) == ["meta.json"]


def test_a_failed_encoding_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "status.json"
    write_json_atomic(path, {"state": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"state": object()})
    assert json.loads(path.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    write_json_atomic(path, {"when": object()}, default=lambda o: "an object")
    assert json.loads(path.read_text()) == {"when": "an object"}


def test_no_module_writes_json_another_way():
    pattern = re.compile(r"write_text\(\s*json\.dumps|json\.dump\(")
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "injector").rglob("*.py"))
                 if p.name != "files.py" and pattern.search(p.read_text())]
    assert offenders == []
