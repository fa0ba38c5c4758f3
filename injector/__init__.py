"""chaos-inject: per-flow network fault injection that proves what it did."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# the library API (see docs/library.md), loaded when first asked for: `chaos-inject --help`/`status` and the
# inject path import only what they use (importing the package loads neither pyroute2, bcc nor numpy)
_LAZY = {"cpu_stress": "library", "kill_process": "library", "network_latency": "library",
         "packet_loss": "library", "partition": "library",
         "FaultSession": "session", "RunResult": "session", "start_fault": "session"}

__all__ = ["FaultSession", "RunResult", "__version__", "cpu_stress", "kill_process", "network_latency",
           "packet_loss", "partition", "start_fault"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
