"""Which fault features each engine serves: the one source for select.py (the choice, doctor) and the engines.

A feature is a name from ``FaultSpec.features()``. Constants only, no imports: every engine module and the
selector import this, never each other for it.
"""

from __future__ import annotations

STATELESS = frozenset({"partition", "loss", "loss-burst", "corrupt", "duplicate"})   # decided per packet
ALL_FEATURES = STATELESS | {"loss-state", "delay", "jitter", "distribution", "correlation", "reorder", "rate"}

EBPF_FEATURES = STATELESS
NETEM_FEATURES = ALL_FEATURES
EDT_FEATURES = STATELESS | {"delay", "jitter", "distribution"}
USERSPACE_FEATURES = frozenset({"delay", "jitter", "distribution", "correlation"})

__all__ = ["ALL_FEATURES", "EBPF_FEATURES", "EDT_FEATURES", "NETEM_FEATURES", "STATELESS", "USERSPACE_FEATURES"]
