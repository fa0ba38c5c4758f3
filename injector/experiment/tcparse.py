"""Reading a ``tc`` command line: which tc commands are netem on a root qdisc (``parse_tc``) and what netem's
options ask for, as a FaultSpec (``parse_netem_args``). Pure text to data; what is done with it, and why, is
tcnetem.py's."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidSpec
from ..spec import FaultSpec
from ..spec.fault import DISTRIBUTIONS, parse_loss_burst, parse_loss_state
from ..spec.units import parse_duration_ns, parse_percent_ratio, parse_rate_bps

__all__ = ["TcNetem", "is_tc", "parse_tc", "parse_netem_args"]

_TC_TIME_UNITS = {"s": "s", "sec": "s", "secs": "s", "ms": "ms", "msec": "ms", "msecs": "ms", "us": "us",
                  "usec": "us", "usecs": "us", "ns": "ns", "nsec": "ns", "nsecs": "ns"}
_SHELL_OPERATORS = (";", "&", "|", ">", "<", "`", "$(", "\n")


@dataclass(frozen=True)
class TcNetem:
    """A tc command we act on instead of running it."""
    verb: str                    # add | replace | change | del
    interface: str
    netns: str | None            # from `tc -n NS` (the configuration's default applies later)
    fault: FaultSpec | None      # None for del
    seed: int | None = None
    notes: tuple[str, ...] = ()
    text: str = ""

    def describe(self) -> str:
        return f"tc qdisc {self.verb} dev {self.interface} root" + (
            f" netem {self.fault.describe()}" if self.fault is not None else "")


def is_tc(path: str) -> bool:
    return path == "tc" or path.endswith("/tc")


def _time(text: str, field: str) -> int:
    """tc's time syntax (100ms, 1s, 250usec, 1.5sec). A bare number is refused: tc reads it in its own
    internal unit, which is easy to get wrong."""
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)", text.strip().lower())
    if not m or m.group(2) not in _TC_TIME_UNITS:
        raise InvalidSpec("not a tc time; give a unit (s, ms, us, e.g. '100ms')", text=text, field=field)
    return parse_duration_ns(m.group(1) + _TC_TIME_UNITS[m.group(2)], field=field, allow_zero=True)


def _is_percent(tok: str | None) -> bool:
    if tok is None:
        return False
    try:
        parse_percent_ratio(tok, field="x")
        return True
    except InvalidSpec:
        return False


def parse_netem_args(args: list[str]) -> tuple[FaultSpec, int | None, tuple[str, ...]]:
    """netem's options -> (FaultSpec, seed, notes). Raises InvalidSpec naming what cannot be honoured."""
    kw: dict[str, Any] = {}
    seed: int | None = None
    notes: list[str] = []
    i = 0

    def take(field: str) -> str:
        nonlocal i
        if i >= len(args):
            raise InvalidSpec(f"'{field}' needs a value", field=f"netem {field}")
        i += 1
        return args[i - 1]

    def model_percents(field: str, most: int, usage: str) -> str:
        """Up to ``most`` percentages after a loss model's name, as spec.faults' parsers take them: "p,r,..."."""
        nonlocal i
        i += 1                             # the model's name
        vals: list[str] = []
        while i < len(args) and len(vals) < most and _is_percent(args[i]):
            vals.append(take(field))
        if not vals:
            raise InvalidSpec(f"'{field}' needs {usage}", field=f"netem {field}")
        return ",".join(vals)

    def no_correlation(field: str) -> None:
        if i < len(args) and _is_percent(args[i]):
            raise InvalidSpec(f"a {field} correlation cannot be honoured (our {field} draws are independent); "
                              "drop it, or use --literal-tc on a kernel with netem", text=args[i],
                              field=f"netem {field}")

    while i < len(args):
        word = args[i]
        i += 1
        if word in ("delay", "latency"):
            kw["delay_ns"] = _time(take("delay"), "netem delay")
            if i < len(args) and args[i] not in _KEYWORDS:
                kw["jitter_ns"] = _time(take("jitter"), "netem jitter")
                if i < len(args) and _is_percent(args[i]):
                    kw["delay_correlation_ratio"] = parse_percent_ratio(take("correlation"),
                                                                        field="netem delay correlation")
        elif word == "distribution":
            dist = take("distribution")
            if dist not in DISTRIBUTIONS:
                raise InvalidSpec(f"unknown distribution (ours: {', '.join(DISTRIBUTIONS)})", text=dist,
                                  field="netem distribution")
            kw["distribution"] = dist
        elif word in ("loss", "drop"):
            model = args[i] if i < len(args) else None
            if model == "random":
                i += 1
                model = None
            if model in ("gemodel", "gmodel"):
                kw["loss_burst"] = parse_loss_burst(model_percents("loss gemodel", 4, "p [r [1-h [1-k]]]"))
            elif model == "state":
                kw["loss_state"] = parse_loss_state(model_percents("loss state", 5, "p13 [p31 [p32 [p23 [p14]]]]"))
            else:
                kw["loss_ratio"] = parse_percent_ratio(take("loss"), field="netem loss")
                no_correlation("loss")
        elif word in ("corrupt", "duplicate", "reorder"):   # a share, no correlation: FaultSpec.<word>_ratio
            kw[f"{word}_ratio"] = parse_percent_ratio(take(word), field=f"netem {word}")
            no_correlation(word)
        elif word == "rate":
            kw["rate_bps"] = parse_rate_bps(take("rate"), field="netem rate")
            if i < len(args) and args[i] not in _KEYWORDS:
                raise InvalidSpec("rate's packet/cell overheads cannot be honoured", text=args[i],
                                  field="netem rate")
        elif word == "limit":
            limit = take("limit")
            if not limit.isdigit():
                raise InvalidSpec("expected a packet count", text=limit, field="netem limit")
            notes.append(f"netem limit {limit} not applied: our queue holds packets by time, not by count")
        elif word == "seed":
            value = take("seed")
            if not value.isdigit():
                raise InvalidSpec("expected an integer", text=value, field="netem seed")
            seed = int(value)
        elif word in ("gap", "slot", "ecn", "ecn_ce", "jitter"):
            raise InvalidSpec(f"netem '{word}' cannot be honoured by chaos-inject; use --literal-tc on a kernel "
                              "with netem", text=word, field=f"netem {word}")
        else:
            raise InvalidSpec("unknown netem option", text=word, field="netem")
    if "reorder_ratio" in kw and not kw.get("delay_ns"):
        raise InvalidSpec("reorder needs a delay (as in netem)", field="netem reorder")
    if not kw:
        raise InvalidSpec("netem with no fault (give delay, loss, corrupt, duplicate, reorder or rate)",
                          field="netem")
    return FaultSpec(**kw), seed, tuple(notes)


_KEYWORDS = {"delay", "latency", "distribution", "loss", "drop", "corrupt", "duplicate", "reorder", "rate",
             "limit", "seed", "gap", "slot", "ecn"}


def _tokens(arguments: str | list | tuple) -> list[str]:
    if isinstance(arguments, str):
        return shlex.split(arguments)
    return [str(a) for a in arguments]


def parse_tc(path: str, arguments: str | list | tuple) -> TcNetem | None:
    """The tc command ``path arguments`` as a TcNetem we act on, or None when it runs literally.
    Raises InvalidSpec for a netem command we cannot honour."""
    if not is_tc(str(path)):
        return None
    if isinstance(arguments, str) and any(op in arguments for op in _SHELL_OPERATORS):
        first = re.split(r"[;&|<>`\n]|\$\(", arguments, maxsplit=1)[0]
        if parse_tc(path, first) is None:
            return None          # e.g. `tc qdisc show dev eth0 | grep netem`: runs literally
        raise InvalidSpec("a tc netem/del command followed by shell operators cannot be translated; split it, "
                          "or run it with --literal-tc", text=arguments, field="arguments")
    toks = _tokens(arguments)
    if not toks:
        return None
    netns = None
    i = 0
    while i < len(toks) and toks[i].startswith("-"):   # tc's global options
        opt = toks[i]
        if opt in ("-n", "-netns", "--netns"):
            if i + 1 >= len(toks):
                return None
            netns = toks[i + 1]
            i += 2
            continue
        if opt in ("-b", "-batch", "-force", "-f", "-c", "-cf", "-conf"):
            return None        # batch files and the like: nothing to read here, runs literally
        i += 1
    if i + 1 >= len(toks) or not "qdisc".startswith(toks[i]) or not toks[i]:
        return None
    verb = {"add": "add", "replace": "replace", "change": "change", "del": "del", "delete": "del"}.get(toks[i + 1])
    if verb is None:
        return None
    rest = toks[i + 2:]
    dev = root = None
    parent = None
    j = 0
    kind_at = None
    while j < len(rest):
        t = rest[j]
        if t == "dev" and j + 1 < len(rest):
            dev, j = rest[j + 1], j + 2
        elif t == "root":
            root, j = True, j + 1
        elif t in ("handle", "parent", "estimator", "stab") and j + 1 < len(rest):
            if t == "parent":
                parent = rest[j + 1]
            j += 2
        else:
            kind_at = j
            break
    kind = rest[kind_at] if kind_at is not None else None
    text = " ".join(shlex.quote(t) for t in [str(path), *toks])
    if verb == "del":
        # del of the root: only ever ours. Other deletes (a parent class, ingress) run literally.
        if root and dev and kind in (None, "netem"):
            return TcNetem("del", dev, netns, None, text=text)
        return None
    if kind != "netem":
        return None
    if not dev:
        raise InvalidSpec("netem without 'dev IF'", text=text, field="arguments")
    if not root:
        raise InvalidSpec(f"netem under parent {parent or '?'}: only 'root' is translated (our fault covers the "
                          "whole interface); use --literal-tc on a kernel with netem", text=text, field="arguments")
    fault, seed, notes = parse_netem_args(rest[kind_at + 1:])
    return TcNetem(verb, dev, netns, fault, seed, notes, text)
