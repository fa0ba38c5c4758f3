"""Chaos Mesh manifests and AWS FIS experiment templates as inputs to ``chaos-inject run``.

Both are translated into our experiment model (a Chaos Toolkit document with our actions) before anything
runs; ``--dry-run`` prints the translation. Selectors (Chaos Mesh ``labelSelectors``, FIS ``resourceTags``)
resolve against the inventory's ``labels``/``tags``; the hosts a mode picks (``one``, ``fixed-percent``,
FIS ``COUNT(n)``/``PERCENT(n)``) are chosen here with a seed that is printed, so a run can be repeated.

The formats are rooms of their own (``experiment/chaos_mesh.py``, ``experiment/fis.py``, sharing
``experiment/foreign_hosts.py``'s host choice); this one tells them apart and loads any.

What has no meaning here is refused naming its field (Kubernetes field/annotation/node selectors,
container names, IAM-only resources, ...); what is merely informational (Kubernetes namespaces, roleArn)
is ignored with a note.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

from .chaos_mesh import CHAOS_MESH_API, translate_chaos_mesh
from .fis import translate_fis

__all__ = ["detect_kind", "translate_document", "load_any", "translate_chaos_mesh", "translate_fis"]


def detect_kind(docs: list[Any]) -> str | None:
    """'chaos-mesh', 'fis' or None (a Chaos Toolkit experiment, or something else)."""
    maps = [d for d in docs if isinstance(d, Mapping)]
    if maps and all(str(d.get("apiVersion", "")).startswith(CHAOS_MESH_API) for d in maps):
        return "chaos-mesh"
    if len(maps) == 1 and "actions" in maps[0] and "targets" in maps[0] and "method" not in maps[0]:
        return "fis"
    return None


def translate_document(docs: list[Any], inventory, *, seed: int, prometheus_url: str | None = None,
                       source: str = "") -> tuple[str, dict, list[str]] | None:
    kind = detect_kind(docs)
    if kind == "chaos-mesh":
        return (kind, *translate_chaos_mesh(docs, inventory, seed=seed, source=source))
    if kind == "fis":
        return (kind, *translate_fis(docs[0], inventory, seed=seed, prometheus_url=prometheus_url, source=source))
    return None


def read_documents(path: str | Path) -> list[Any]:
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        from .loader import read_document

        try:
            return list(yaml.safe_load_all(p.read_text(encoding="utf-8")))
        except (yaml.YAMLError, OSError):
            return [read_document(p)]          # its own clear error
    from .loader import read_document

    return [read_document(p)]


def load_any(path: str | Path, *, inventory=None, seed: int | None = None, prometheus_url: str | None = None):
    """A Chaos Toolkit experiment, Chaos Mesh manifests or a FIS template -> (Experiment, kind, notes)."""
    from ..spec import Inventory
    from .spec import parse_experiment

    docs = read_documents(path)
    if detect_kind(docs) is None:
        from .loader import load_experiment

        return load_experiment(path), "chaos-toolkit", []
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1_000_000)
    inv = inventory if isinstance(inventory, Inventory) else Inventory.discover(inventory)
    kind, doc, notes = translate_document(docs, inv, seed=seed, prometheus_url=prometheus_url, source=str(path))
    exp = parse_experiment(doc, source=str(path))
    return exp, kind, notes
