"""Input validation, kept apart from the computations (scipy.stats style)."""
from __future__ import annotations

import numbers

import numpy as np

from ._types import InvalidInput

__all__ = ["check_alternative", "check_confidence", "check_count", "check_counts", "check_samples",
           "check_quantile"]


def _open_unit(value: object, name: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not (0.0 < v < 1.0):
        raise InvalidInput(f"{name} must be in (0, 1), got {value!r}")
    return v


def check_confidence(confidence: float) -> float:
    return _open_unit(confidence, "confidence")


def check_quantile(q: float) -> float:
    return _open_unit(q, "quantile")


ALTERNATIVES = ("two-sided", "greater", "less")


def check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise InvalidInput(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    return alternative


def check_count(value: object, name: str) -> int:
    """A non-negative integer count; numpy integers and integral floats are accepted, bools are not."""
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInput(f"{name} must be an integer count, got a bool")
    if isinstance(value, numbers.Integral):
        v = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        v = int(value)
    else:
        raise InvalidInput(f"{name} must be a non-negative integer, got {value!r}")
    if v < 0:
        raise InvalidInput(f"{name} must be non-negative, got {v}")
    return v


def check_counts(successes: object, trials: object) -> tuple[int, int]:
    x = check_count(successes, "successes")
    n = check_count(trials, "trials")
    if x > n:
        raise InvalidInput(f"successes ({x}) cannot exceed trials ({n})")
    return x, n


def check_samples(x: object, name: str = "samples", *, allow_empty: bool = True) -> np.ndarray:
    """A 1-D finite float64 array. NaN or inf raise :class:`InvalidInput` (never silently dropped)."""
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InvalidInput(f"{name}: cannot convert to an array ({exc})") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InvalidInput(f"{name} must be numeric, got dtype {a.dtype}")
    if a.ndim != 1:
        a = a.reshape(-1) if a.ndim == 0 else a
        if a.ndim != 1:
            raise InvalidInput(f"{name} must be one-dimensional, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            bad = int(np.count_nonzero(~np.isfinite(a)))
            raise InvalidInput(f"{name} contains {bad} NaN/inf value(s); clean or drop them explicitly")
    a = a.astype(np.float64, copy=False)
    if not allow_empty and a.size == 0:
        raise InvalidInput(f"{name} is empty")
    return a
