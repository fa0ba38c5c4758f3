"""Parsing of quantities with units. All results carry their unit in the name of what receives them."""

from __future__ import annotations

import datetime
import math
import re

from ..errors import InvalidSpec

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION_RE = re.compile(rf"^{_NUMBER}\s*(ns|us|µs|ms|s|min|m|h)$")
_PERCENT_RE = re.compile(rf"^{_NUMBER}\s*%?$")


def parse_duration_ns(text, *, field: str = "duration", allow_zero: bool = False) -> int:
    """'200ms' -> 200_000_000; a datetime.timedelta too (the library API). The one duration parser: the CLI,
    the library, host faults, schedules and experiment files all come here. A unit is mandatory: a bare number
    is ambiguous."""
    if isinstance(text, datetime.timedelta):
        ns = round(text.total_seconds() * 1e9)
        if ns < 0 or (ns == 0 and not allow_zero):
            raise InvalidSpec("duration must be greater than zero", text=str(text), field=field)
        return ns
    if not isinstance(text, str):
        raise InvalidSpec("give a duration with its unit, e.g. '200ms' or '30s' (or a timedelta)",
                          text=repr(text), field=field)
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise InvalidSpec("not a duration; use a number with a unit: ns, us, ms, s, m, h (e.g. '200ms')",
                          text=text, field=field)
    value = float(match.group(1)) * _DURATION_UNITS_NS[match.group(2)]
    if not math.isfinite(value) or value > 10 * 365 * 86400 * 1e9:
        raise InvalidSpec("duration is too long", text=text, field=field)
    ns = round(value)
    if ns == 0 and not allow_zero:
        raise InvalidSpec("duration must be greater than zero", text=text, field=field)
    return ns


def parse_duration_s(text, *, field: str = "duration", allow_zero: bool = False) -> float:
    """parse_duration_ns in seconds (host faults, timers)."""
    return parse_duration_ns(text, field=field, allow_zero=allow_zero) / 1e9


def parse_percent_ratio(text: str, *, field: str) -> float:
    """'10%' or '10' -> 0.10. Percent is the unit on the command line, as in tc netem."""
    if not isinstance(text, str):
        raise InvalidSpec("expected a percentage such as '10%'", text=repr(text), field=field)
    match = _PERCENT_RE.match(text.strip())
    if not match:
        raise InvalidSpec("not a percentage; use e.g. '10%' or '0.5%'", text=text, field=field)
    ratio = float(match.group(1)) / 100.0
    if not 0.0 <= ratio <= 1.0:
        raise InvalidSpec("percentage must lie between 0% and 100%", text=text, field=field)
    return ratio


_RATE_RE = re.compile(rf"^{_NUMBER}\s*(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)$", re.IGNORECASE)
_RATE_BITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
              "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12}


def parse_rate_bps(text: str, *, field: str = "rate") -> int:
    """tc's rate units: '1mbit' -> 1_000_000 bits/s; 'bps' units are bytes per second ('1mbps' = 8 Mbit/s)."""
    if not isinstance(text, str):
        raise InvalidSpec("expected a rate such as '10mbit'", text=repr(text), field=field)
    match = _RATE_RE.match(text.strip())
    if not match:
        raise InvalidSpec("not a rate; use a number with bit, kbit, mbit, gbit (or bps, kbps, mbps for bytes/s)",
                          text=text, field=field)
    bps = round(float(match.group(1)) * _RATE_BITS[match.group(2).lower()])
    if not 8 <= bps <= 10**13:
        raise InvalidSpec("rate must lie between 8bit and 10tbit", text=text, field=field)
    return bps


def format_duration_ns(ns: int) -> str:
    """Shortest exact-ish rendering: 200000000 -> '200ms'."""
    for unit, scale in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
                        ("ms", 1_000_000), ("us", 1_000)):
        if ns >= scale and ns % scale == 0:
            return f"{ns // scale}{unit}"
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:g}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:g}ms"
    if ns >= 1_000:
        return f"{ns / 1e3:g}us"
    return f"{ns}ns"


def format_ratio_percent(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"
