"""Chaos Toolkit-format experiments on chaos-inject: loader, providers, halt guard, runner, journal, report.

Our actions and probes (:mod:`.actions`, :mod:`.probes`) are plain typed functions usable from the real
``chaos run`` as ``"type": "python"`` providers; :func:`discover` describes them the way chaoslib's
discovery does.
"""

from __future__ import annotations

import inspect
import platform
import uuid
from datetime import datetime, timezone
from typing import Any

# name -> submodule, loaded on first use: an action module imported by `chaos run` (actions, probes) does not
# pay for the loader, the spec and what they import (numpy through the recording's options)
_EXPORTS = {"check_environment": "loader", "load_experiment": "loader", "parse_vars": "loader",
            "read_document": "loader", "Experiment": "spec", "ExperimentInvalid": "spec", "GuardSpec": "spec",
            "parse_experiment": "spec", "run_experiment": "runner", "RunOptions": "runner", "RunOutcome": "runner"}

__all__ = ["Experiment", "ExperimentInvalid", "GuardSpec", "parse_experiment", "load_experiment", "read_document",
           "check_environment", "parse_vars", "run_experiment", "RunOptions", "RunOutcome", "discover"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _type_name(t: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "mapping", list: "list",
             type(None): "null"}
    if t in names:
        return names[t]
    return str(t).replace("typing.", "") if t is not inspect.Parameter.empty else "object"


def _activities(module: Any, kind: str) -> list[dict[str, Any]]:
    import typing

    out = []
    for name in module.__all__:
        func = getattr(module, name)
        hints = typing.get_type_hints(func)
        sig = inspect.signature(func)
        act: dict[str, Any] = {"type": kind, "name": name, "mod": module.__name__, "doc": inspect.getdoc(func),
                               "arguments": []}
        if "return" in hints:
            act["return_type"] = _type_name(hints["return"])
        for p in sig.parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD):
                continue
            arg: dict[str, Any] = {"name": p.name}
            if p.default is not p.empty:
                arg["default"] = p.default
            if p.name in hints:
                arg["type"] = _type_name(hints[p.name])
            act["arguments"].append(arg)
        out.append(act)
    return out


def discover(discover_system: bool = True) -> dict[str, Any]:
    """chaoslib-style discovery (``initialize_discovery_result`` + activities) of our actions and probes."""
    from .. import __version__
    from . import actions, probes

    u = platform.uname()
    return {
        "chaoslib_version": None, "id": str(uuid.uuid4()), "target": "network",
        "date": datetime.now(timezone.utc).isoformat(),
        "platform": {"system": u.system, "node": u.node, "release": u.release, "version": u.version,
                     "machine": u.machine, "proc": u.processor, "python": platform.python_version()},
        "extension": {"name": "chaos-inject", "version": __version__},
        "activities": _activities(actions, "action") + _activities(probes, "probe"),
        "system": None,
    }
