"""Input validation, kept apart from the computations (scipy.stats style)."""
from __future__ import annotations

import numbers

import numpy as np

from ._types import InvalidInput

__all__ = ["check_confidence", "check_count", "check_counts", "check_samples", "check_quantile"]


def check_confidence(confidence: float) -> float:
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise InvalidInput(f"confidence must be a number in (0, 1), got {confidence!r}") from None
    if not (0.0 < c < 1.0):
        raise InvalidInput(f"confidence must be in (0, 1), got {confidence!r}")
    return c


def check_quantile(q: float) -> float:
    try:
        qq = float(q)
    except (TypeError, ValueError):
        raise InvalidInput(f"quantile must be a number in (0, 1), got {q!r}") from None
    if not (0.0 < qq < 1.0):
        raise InvalidInput(f"quantile must be in (0, 1), got {q!r}")
    return qq


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
