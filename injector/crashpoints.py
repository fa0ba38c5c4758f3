"""Enumerated crash points (test-only): every state-changing step of a command, kernel or filesystem, goes
through ``step(label)``, so a test can walk each step instead of sampling kill -9 at random times.

- ``CHAOS_INJECT_CRASH_AT=N[:before|after]`` makes the process SIGKILL itself right before (default) or right
  after its Nth step (counted from 1, per process).
- ``CHAOS_INJECT_CRASH_TRACE=FILE`` appends one line per step, ``N<TAB>label``, to FILE (the step count of a
  command, and what each step is).

Steps that repeat while a run is active (a status rewrite per lease tick) are counted once (``once=True``):
a crash at the tenth rewrite leaves the same state as at the first, and the count stays independent of timing.
Without either variable ``step`` only increments a counter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

CRASH_AT_ENV = "CHAOS_INJECT_CRASH_AT"
TRACE_ENV = "CHAOS_INJECT_CRASH_TRACE"

_lock = threading.Lock()
_count = 0
_seen_once: set[str] = set()


def parse_crash_at(text: str | None) -> tuple[int, str] | None:
    """'7' -> (7, 'before'); '7:after' -> (7, 'after'); unset/empty -> None; anything else: ValueError."""
    if not text:
        return None
    number, _, when = text.partition(":")
    when = when or "before"
    if not number.isdigit() or int(number) < 1 or when not in ("before", "after"):
        raise ValueError(f"{CRASH_AT_ENV}={text!r}: expected N or N:before or N:after with N >= 1")
    return int(number), when


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _enter(label: str, once: bool) -> int | None:
    """Count the step; None if it is a repeat of a once-step (not counted)."""
    global _count
    with _lock:
        if once:
            if label in _seen_once:
                return None
            _seen_once.add(label)
        _count += 1
        n = _count
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a") as fh:
            fh.write(f"{n}\t{label}\n")
    return n


@contextlib.contextmanager
def step(label: str, *, once: bool = False) -> Iterator[None]:
    """Wrap one state-changing step; with CHAOS_INJECT_CRASH_AT the process dies right before or after it."""
    n = _enter(label, once)
    target = parse_crash_at(os.environ.get(CRASH_AT_ENV)) if n is not None else None
    if target and target == (n, "before"):
        _die()
    yield
    if target and target == (n, "after"):
        _die()


def count() -> int:
    return _count


def _reset_for_tests() -> None:
    global _count
    with _lock:
        _count = 0
        _seen_once.clear()
