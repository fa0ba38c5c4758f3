"""Choosing hosts for a foreign experiment (Chaos Mesh, AWS FIS): the selector against the inventory's labels,
the mode's pick with a printed seed, and the refusals and notes a translation collects.

``experiment/chaos_mesh.py`` and ``experiment/fis.py`` translate their formats with it; ``experiment/foreign.py``
tells the formats apart and loads either.
"""

from __future__ import annotations

import math
import random
from typing import Any, Mapping

ACTIONS = "chaosinject.experiment.actions"
HOSTACTIONS = "chaosinject.experiment.hostactions"
DEFAULT_HOLD = "60s"                            # pod-failure / a NetworkChaos without duration / a FIS stop


class Problems:
    """What a translation refused (field path, reason) and what it noted; refused fields fail it as one error."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def refuse(self, path: str, msg: str) -> None:
        self.errors.append((path, msg))


# -- host selection ------------------------------------------------------------------------------------------
def pick_hosts(hosts: list, mode: str, value: Any, rng: random.Random, path: str, p: Problems) -> list:
    """Chaos Mesh modes (one, all, fixed, fixed-percent, random-max-percent) and FIS selectionModes."""
    n = len(hosts)
    if mode in ("all", "ALL"):
        return hosts
    if mode == "one":
        return rng.sample(hosts, 1) if hosts else []
    if mode not in ("fixed", "COUNT", "fixed-percent", "PERCENT", "random-max-percent"):
        p.refuse(f"{path}.mode", f"unknown mode {mode!r} (one, all, fixed, fixed-percent, random-max-percent)")
        return []
    if not hosts:
        return []
    try:
        k = float(str(value))
    except ValueError:
        p.refuse(f"{path}.value", f"mode {mode} needs a number, got {value!r}")
        return []
    if mode in ("fixed", "COUNT"):
        count = int(k)
    elif mode in ("fixed-percent", "PERCENT"):
        if not 0 <= k <= 100:
            p.refuse(f"{path}.value", f"a percentage 0-100, got {value!r}")
            return []
        count = math.floor(n * k / 100)        # Chaos Mesh and FIS round down
    else:   # random-max-percent
        count = rng.randint(0, math.floor(n * k / 100))
    if count > n:
        p.refuse(f"{path}.value", f"{count} hosts asked for, {n} selected")
        return []
    if count == 0:
        p.refuse(f"{path}.value", f"selects no host out of {n} ({mode} {value}); nothing would be injected")
        return []
    return sorted(rng.sample(hosts, count), key=lambda h: h.name)


K8S_ONLY_SELECTORS = ("fieldSelectors", "annotationSelectors", "nodes", "nodeSelectors", "pods",
                      "podPhaseSelectors", "expressionSelectors")


def select_hosts(sel: Any, inventory, path: str, p: Problems) -> list:
    """The inventory hosts a Chaos Mesh selector names by ``labelSelectors``; Kubernetes-only fields refused."""
    if not isinstance(sel, Mapping):
        p.refuse(path, "a selector mapping is required")
        return []
    for key in sel:
        if key in K8S_ONLY_SELECTORS:
            p.refuse(f"{path}.{key}", "a Kubernetes-only selector with no meaning here: select hosts by "
                                      "labelSelectors (the inventory's labels)")
        elif key not in ("namespaces", "labelSelectors"):
            p.refuse(f"{path}.{key}", "unknown selector field")
    if sel.get("namespaces"):
        p.notes.append(f"{path}.namespaces {list(sel['namespaces'])}: Kubernetes namespaces are ignored; hosts "
                       "are chosen by their inventory labels")
    labels = sel.get("labelSelectors") or {}
    if not isinstance(labels, Mapping) or not labels:
        p.refuse(f"{path}.labelSelectors", "required (e.g. {app: api}): hosts are chosen by inventory labels")
        return []
    hosts = inventory.select({str(k): str(v) for k, v in labels.items()})
    if not hosts:
        known = ", ".join(f"{h.name} {dict(h.labels)}" for h in inventory.hosts.values()) or "no hosts"
        p.refuse(f"{path}.labelSelectors", f"no inventory host has labels {dict(labels)} (inventory: {known})")
    return hosts
