"""Shared result types and the exception tree of the analysis package."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "AnalysisError",
    "InvalidInput",
    "ConfidenceInterval",
    "Outcome",
]


class AnalysisError(Exception):
    """Base class of every error raised by :mod:`analysis`."""


class InvalidInput(AnalysisError, ValueError):
    """Input data or parameters are unusable (NaN, inf, negative counts, bad confidence, ...)."""


@dataclass(frozen=True, slots=True)
class ConfidenceInterval:
    """A confidence interval ``[low, high]`` (same shape as ``scipy.stats._result_classes.ConfidenceInterval``)."""

    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


class Outcome(str, Enum):
    """Verdict outcome of a single check."""

    HELD = "held"
    VIOLATED = "violated"
    INCONCLUSIVE = "inconclusive"
    # a phase where the fault is expected to move the metric (``expect="deviation"``):
    DEVIATED = "deviated"        # significantly different from the baseline: the fault took effect
    NO_CHANGE = "no change"      # no significant difference: the fault did not measurably take effect

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value
