"""The field checks an experiment's validation shares: problems collected with their field paths, strings,
numbers, seconds (or ``${name}`` references), ratios and percentages, a provider's secret scopes.

``experiment/spec.py`` (the document, its activities and providers) and ``experiment/spec_extension.py`` (our
extension block) check their fields with these.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Mapping

from ..errors import InvalidSpec

VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")   # a ``${name}`` reference, resolved at run time


class FieldErrors:
    """Every problem found, each with the path of its field; the caller raises them together."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, msg: str) -> None:
        self.items.append((path, msg))


def is_number(v: Any) -> bool:
    """A finite real number, not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def string_field(d: Mapping, key: str, path: str, err: FieldErrors, *, required: bool = False, default: str | None = None
         ) -> str | None:
    """``d[key]`` as a string (``default`` when absent or empty; ``required`` makes absence an error)."""
    v = d.get(key)
    if v is None or v == "":
        if required:
            err.add(f"{path}.{key}" if path else key, "required")
        return default
    if not isinstance(v, str):
        err.add(f"{path}.{key}" if path else key, f"must be a string, got {type(v).__name__}")
        return default
    return v


def seconds_field(v: Any, path: str, err: FieldErrors, *, allow_var: bool = False) -> float | str | None:
    """A non-negative number of seconds (or a ``${name}`` reference when ``allow_var``)."""
    if v is None:
        return None
    if allow_var and isinstance(v, str) and VARIABLE.match(v):
        return v
    if not is_number(v) or float(v) < 0:
        err.add(path, "must be a non-negative number of seconds" + (" or \"${name}\"" if allow_var else ""))
        return None
    return float(v)


def secret_scopes(p: Mapping, path: str, err: FieldErrors) -> tuple[str, ...]:
    """A provider's ``secrets``: the scope names it reads."""
    s = p.get("secrets")
    if s is None:
        return ()
    if isinstance(s, str):
        return (s,)
    if isinstance(s, list) and all(isinstance(x, str) for x in s):
        return tuple(s)
    err.add(f"{path}.secrets", "must be a list of secret scope names")
    return ()


def ratio_field(v: Any, path: str, err: FieldErrors, default: float | None, *, percent_ok: bool = True) -> float | None:
    """A ratio in (0, 1), or a percentage such as '5%' when ``percent_ok``."""
    if v is None:
        return None if default is None else default
    if isinstance(v, str) and percent_ok:
        from ..spec.units import parse_percent_ratio

        try:
            return parse_percent_ratio(v, field=path)
        except InvalidSpec as exc:
            err.add(path, str(exc).split(": ", 1)[-1])
            return default
    if not (is_number(v) and 0 < float(v) < 1):
        err.add(path, "must be a ratio in (0, 1) or a percentage such as '5%'")
        return default
    return float(v)
