"""chaos-inject: per-flow network fault injection that proves what it did."""

from __future__ import annotations

from pathlib import Path as _Path
from typing import Any

__version__ = "0.1.0"

# Installed (wheel or editable), chaosinject.analysis is found by the install's package mapping. Imported through
# a link named chaosinject to a checkout's injector/ folder (the Vagrant VMs, vagrant/provision/common.sh), the
# checkout's root joins __path__ so that its analysis/ and bpf/ folders are chaosinject.analysis, chaosinject.bpf.
if _Path(__file__).parent.name != "injector" and _Path(__file__).resolve().parent.name == "injector":
    __path__.append(str(_Path(__file__).resolve().parent.parent))


# the library API (see docs/library.md), loaded when first asked for: `chaos-inject --help`/`status` and the
# inject path import only what they use (importing the package loads neither pyroute2, bcc nor numpy)
_LAZY = {"cpu_stress": "library", "kill_process": "library", "network_latency": "library",
         "packet_loss": "library", "partition": "library",
         "FaultSession": "session", "RunResult": "session", "start_fault": "prepare",
         # Chaos Toolkit discovery: `chaos discover chaos-inject` imports the top-level package and calls this
         "discover": "experiment"}

__all__ = ["FaultSession", "discover", "RunResult", "__version__", "cpu_stress", "kill_process", "network_latency",
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
