"""chaos-inject analysis: steady-state statistics (numpy/scipy only; importable without root, bcc or pyroute2).

Plots live in :mod:`analysis.plots` (the only matplotlib user) and are not imported here.
"""
from __future__ import annotations

from ._types import AnalysisError, ConfidenceInterval, InvalidInput, Outcome
from .proportions import proportion_ci

__all__ = [
    "AnalysisError",
    "ConfidenceInterval",
    "InvalidInput",
    "Outcome",
    "proportion_ci",
]
