"""Targets to inject into: throwaway namespaces with traffic (demo, host tests) and the netns lab.

The lab's Python API (imported lazily: ``chaosinject.lab.api`` and ``chaosinject.lab.load_generator`` run on the
Vagrant VMs with Debian's python3 alone, without the injector's dependencies)::

    from chaosinject.lab import lab_up, lab_down, lab_status, LabSpec
    info = lab_up()            # LabInfo: addresses, api_url, prometheus_url, inventory_path, request_log
    ...
    lab_down()
"""

from __future__ import annotations

__all__ = ["LabError", "LabInfo", "LabSpec", "LabStatus", "RequestLogRecorder", "RequestRows", "lab_down",
           "lab_restart", "lab_status", "lab_up", "prometheus_query", "read_log", "running_lab"]

# where each name lives, relative to this package (the rest: netlab, the lab's up/down)
_WHERE = {"RequestLogRecorder": ".requests", "RequestRows": ".requests", "read_log": ".requests",
          "LabError": ".state", "LabInfo": ".state", "LabSpec": ".state", "LabStatus": ".state",
          "prometheus_query": "..httpclient"}


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'chaosinject.lab' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_WHERE.get(name, ".netlab"), __name__)
    return getattr(module, name)
