"""Schedule expressions, parsed purely: ``@every 10m`` (Chaos Mesh / robfig cron), ``@hourly`` and friends, and
5-field cron -> a frozen spec with ``next_after``. No I/O, no CLI: the scheduler (schedule.py) and the Chaos Mesh
translator (experiment/foreign.py) both import this.

Cron fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 (or jan-dec), day of week 0-7 (0 and 7 are
Sunday, or sun-sat). Each field: ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S``, ``N/S`` (from N to the end), and lists
joined by commas. As in Vixie cron, when both day of month and day of week are restricted, a day matching
either one is a match. Times are the host's local time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .errors import InvalidSpec
from .spec.units import format_duration_ns, parse_duration_ns

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
MIN_EVERY_NS = 1_000_000_000
_TERM_RE = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(\d+))?$")


@dataclass(frozen=True)
class Every:
    """A fixed interval; ticks at anchor + k x interval."""

    interval_ns: int
    text: str

    def next_after(self, now_ns: int, anchor_ns: int) -> int:
        """The first tick strictly after ``now_ns`` (monotonic ns) for a schedule started at ``anchor_ns``."""
        k = (now_ns - anchor_ns) // self.interval_ns + 1
        return anchor_ns + k * self.interval_ns

    def describe(self) -> str:
        return f"every {format_duration_ns(self.interval_ns)}"


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]        # 0 = Sunday (7 folded onto 0)
    day_restricted: bool
    weekday_restricted: bool
    text: str

    def matches(self, t: dt.datetime) -> bool:
        return (t.minute in self.minutes and t.hour in self.hours and t.month in self.months
                and self._day_matches(t))

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``t``."""
        candidate = t.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = candidate + dt.timedelta(days=366 * 5)  # covers Feb 29; what never matches fails below
        while candidate < limit:
            if candidate.month not in self.months:
                # jump to the first day of the next month
                candidate = (candidate.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if candidate.minute not in self.minutes:
                candidate += dt.timedelta(minutes=1)
                continue
            return candidate
        raise InvalidSpec("this cron expression never matches within 5 years (e.g. 30 February)", text=self.text,
                          field="schedule")

    def _day_matches(self, t: dt.datetime) -> bool:
        day_ok = t.day in self.days
        weekday_ok = (t.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def describe(self) -> str:
        return f"cron '{self.text}'"


Schedule = Every | Cron


def parse_schedule(text: str) -> Schedule:
    """``@every DURATION``, a macro (@hourly, @daily, ...) or 5 cron fields. Raises InvalidSpec naming the part."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSpec("empty schedule; e.g. '@every 10m', '@hourly' or '*/15 * * * *'", field="schedule")
    raw = " ".join(text.split())
    lowered = raw.lower()
    if lowered.startswith("@every"):
        rest = raw[len("@every"):].strip()
        if not rest:
            raise InvalidSpec("@every needs an interval, e.g. '@every 10m'", text=text, field="schedule")
        interval = _parse_every(rest, text)
        if interval < MIN_EVERY_NS:
            raise InvalidSpec("the interval must be at least 1s", text=text, field="schedule")
        return Every(interval, raw)
    if lowered.startswith("@"):
        if lowered not in MACROS:
            raise InvalidSpec(f"unknown macro; known: @every DURATION, {', '.join(MACROS)}", text=raw,
                              field="schedule")
        return _parse_cron(MACROS[lowered], raw)
    return _parse_cron(raw, raw)


def _parse_every(rest: str, whole: str) -> int:
    # '1h30m' as Go's time.ParseDuration writes it: a sum of unit terms
    parts = re.findall(r"\d+(?:\.\d+)?[a-zµ]+", rest.lower())
    if not parts or "".join(parts) != rest.lower().replace(" ", ""):
        raise InvalidSpec("@every takes a duration such as 30s, 10m, 1h30m", text=whole, field="schedule")
    return sum(parse_duration_ns(p, field="schedule") for p in parts)


def _parse_cron(expr: str, whole: str) -> Cron:
    fields = expr.split()
    if len(fields) != 5:
        raise InvalidSpec(f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                          f"got {len(fields)}", text=whole, field="schedule")
    sets = []
    for value, (name, low, high) in zip(fields, FIELDS):
        names = MONTHS if name == "month" else DAYS if name == "day of week" else {}
        sets.append(_parse_field(value, name, low, high, names, whole))
    minutes, hours, days, months, weekdays = sets
    weekdays = frozenset(d % 7 for d in weekdays)
    cron = Cron(frozenset(minutes), frozenset(hours), frozenset(days), frozenset(months), weekdays,
                # Vixie cron: a field starting with '*' (also '*/2') does not restrict the day
                day_restricted=not fields[2].startswith("*"), weekday_restricted=not fields[4].startswith("*"),
                text=whole)
    cron.next_after(dt.datetime(2000, 1, 1))  # pure check: '0 0 30 2 *' (30 February) is refused now
    return cron


def _parse_field(value: str, name: str, low: int, high: int, names: dict[str, int], whole: str) -> set[int]:
    out: set[int] = set()
    for term in value.lower().split(","):
        match = _TERM_RE.match(term)
        if not match:
            raise InvalidSpec(f"{name}: cannot read {term!r} (use *, N, A-B, */S, A-B/S, lists with ',')",
                              text=whole, field="schedule")
        base, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise InvalidSpec(f"{name}: a step must be at least 1", text=whole, field="schedule")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-")
            start, end = _value(a, name, low, high, names, whole), _value(b, name, low, high, names, whole)
            if start > end:
                raise InvalidSpec(f"{name}: range {base} runs backwards", text=whole, field="schedule")
        else:
            start = _value(base, name, low, high, names, whole)
            end = high if step_text else start  # 'N/S' means from N to the end, as in Vixie cron
        out.update(range(start, end + 1, step))
    return out


def _value(text: str, name: str, low: int, high: int, names: dict[str, int], whole: str) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise InvalidSpec(f"{name}: {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""),
                          text=whole, field="schedule")
    number = int(text)
    if not low <= number <= high:
        raise InvalidSpec(f"{name}: {number} is out of range {low}-{high}", text=whole, field="schedule")
    return number
