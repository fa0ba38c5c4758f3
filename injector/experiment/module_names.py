"""Module paths in experiment files and journals under their current names: ``injector.X`` / ``analysis.X``
(written before the import name chaosinject) and Chaos Toolkit's layout names (``chaosinject.network.actions``,
...) are read as the modules the runner knows.
"""

from __future__ import annotations

import importlib.util

# Module paths written before the import name chaosinject (experiment files, journals): `injector.X` and
# `analysis.X` are read as chaosinject.X / chaosinject.analysis.X when that module of ours exists. An alias at
# load time, not packages: the top-level names injector and analysis belong to whoever installed them (PyPI).
LEGACY_MODULES = {"injector": "chaosinject", "analysis": "chaosinject.analysis"}
# Chaos Toolkit's layout names the same functions: read as the modules our runner knows them by
LAYOUT_MODULES = {"chaosinject.network.actions": "chaosinject.experiment.actions",
                  "chaosinject.network.probes": "chaosinject.experiment.probes",
                  "chaosinject.host.actions": "chaosinject.experiment.hostactions"}


def current_module(module: str) -> str:
    """``module`` under its current name: a path of ours written under the old top-level names (``injector``,
    ``analysis``) becomes the chaosinject one; anything else is returned unchanged."""
    if module in LAYOUT_MODULES:
        return LAYOUT_MODULES[module]
    head, dot, rest = module.partition(".")
    if head not in LEGACY_MODULES or not rest:
        return module
    new = f"{LEGACY_MODULES[head]}.{rest}"
    try:
        found = importlib.util.find_spec(new) is not None
    except (ImportError, ValueError):
        found = False
    return LAYOUT_MODULES.get(new, new) if found else module
