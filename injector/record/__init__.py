"""Recording: latency samples with phase labels, written into a run directory (docs/run-directory.md).

``Recording`` runs recorders around a fault: ``OneWayRecorder`` (per-packet one-way latency between two ends
on this host), ``RttRecorder`` (TCP RTT via sock_ops); both keep in-kernel log-linear histograms
(``Histogram``) and count lost ring-buffer events. The BPF side lives in chaosinject.kernel.record_program.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; loaded on first use, so importing one light submodule (e.g. record.experiment, which the
# experiment loader needs) does not pull in numpy and the BPF recorders
_EXPORTS = {"PacketFlow": "bpf_recorder", "Histogram": "histogram", "histogram_of": "histogram",
            "read_histograms": "histogram", "OneWayRecorder": "oneway", "placement_sees": "oneway",
            "LatencyShift": "recording", "Recording": "recording", "latency_shift": "recording",
            "RttRecorder": "rtt", "PHASES": "store", "SOURCES": "store", "Phases": "store", "Recorder": "store",
            "write_samples": "store"}

__all__ = ["PHASES", "SOURCES", "Histogram", "LatencyShift", "OneWayRecorder", "PacketFlow", "Phases", "Recorder",
           "Recording", "RttRecorder", "histogram_of", "latency_shift", "placement_sees", "read_histograms",
           "write_samples"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
