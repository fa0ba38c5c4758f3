"""Inventory labels/tags (selectors of Chaos Mesh manifests and FIS templates) and restart commands."""

from __future__ import annotations

import pytest

from chaosinject.errors import InvalidSpec
from chaosinject.spec import Inventory


def _inv(extra_api: str = "", extra_db: str = "", extra_plain: str = "") -> Inventory:
    import tomllib

    text = f"""
[hosts.api]
addresses = ["10.0.0.2"]
labels = {{app = "api", tier = "web"}}
{extra_api}
[hosts.api2]
addresses = ["10.0.0.3"]
tags = {{app = "api", Environment = "staging"}}
[hosts.db]
addresses = ["10.0.0.4"]
labels = {{app = "postgres"}}
{extra_db}
[hosts.plain]
addresses = ["10.0.0.5"]
{extra_plain}
"""
    return Inventory.from_mapping(tomllib.loads(text), source="inv.toml")


def test_select_by_labels_and_tags():
    inv = _inv()
    assert [h.name for h in inv.select({"app": "api"})] == ["api", "api2"]
    assert [h.name for h in inv.select({"app": "api", "Environment": "staging"})] == ["api2"]
    assert [h.name for h in inv.select({"app": "postgres"})] == ["db"]
    assert inv.select({"app": "nothing"}) == [] and inv.select({}) == []
    assert dict(inv.get("plain").labels) == {} and inv.get("plain").restart is None


def test_labels_and_tags_merge_and_restart():
    inv = _inv(extra_api='tags = {Environment = "staging"}\nrestart = "python3 -m http.server"')
    api = inv.get("api")
    assert dict(api.labels) == {"app": "api", "tier": "web", "Environment": "staging"}
    assert api.restart == "python3 -m http.server"


@pytest.mark.parametrize("extra,problem", [
    ('tags = {app = "web"}', "two values"),
    ("labels = {app = 3}", "table of strings"),
    ('labels = "app=api"', "table of strings"),
    ('restart = ""', "restart"),
])
def test_bad_labels_are_refused(extra, problem):
    with pytest.raises(InvalidSpec, match=problem):
        _inv(extra_db=extra) if extra.startswith("tags") else _inv(extra_plain=extra)
