"""A small JSONPath for the ``jsonpath`` tolerance (chaoslib needs the optional jsonpath2 package for it).

Supported: ``$``, ``.name``, ``['name']``, ``[n]`` (negative too), ``[*]`` / ``.*``, ``..name`` (recursive
descent) and filters ``[?(@.key OP literal)]`` with OP one of ``== != < <= > >=`` (or ``[?(@.key)]``:
the key exists). Enough for status fields and lists of series; anything else is a clear parse error.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any, Callable

__all__ = ["JsonPathError", "parse_jsonpath", "jsonpath_values"]


class JsonPathError(ValueError):
    pass


_OPS: dict[str, Callable[[Any, Any], bool]] = {"==": operator.eq, "!=": operator.ne, "<=": operator.le,
                                               ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_FILTER = re.compile(r"^\?\(\s*@\.([A-Za-z_][\w-]*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)$")
_NAME = re.compile(r"[A-Za-z_][\w-]*")
Step = tuple[str, Any]


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise JsonPathError(f"bad literal {text!r} in a JSONPath filter") from None


def parse_jsonpath(path: str) -> list[Step]:
    s = path.strip()
    if not s.startswith("$"):
        raise JsonPathError(f"a JSONPath starts with '$', got {path!r}")
    i, steps = 1, []
    while i < len(s):
        if s.startswith("..", i):
            m = _NAME.match(s, i + 2)
            if not m:
                raise JsonPathError(f"expected a name after '..' at {i} in {path!r}")
            steps.append(("descend", m.group()))
            i = m.end()
        elif s[i] == ".":
            if s.startswith(".*", i):
                steps.append(("wild", None))
                i += 2
                continue
            m = _NAME.match(s, i + 1)
            if not m:
                raise JsonPathError(f"expected a name after '.' at {i} in {path!r}")
            steps.append(("key", m.group()))
            i = m.end()
        elif s[i] == "[":
            depth, j = 0, i
            while j < len(s):
                depth += {"[": 1, "]": -1}.get(s[j], 0)
                if depth == 0:
                    break
                j += 1
            if j >= len(s):
                raise JsonPathError(f"unclosed '[' at {i} in {path!r}")
            inner = s[i + 1:j].strip()
            i = j + 1
            if inner == "*":
                steps.append(("wild", None))
            elif re.fullmatch(r"-?\d+", inner):
                steps.append(("index", int(inner)))
            elif len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                steps.append(("key", inner[1:-1]))
            else:
                m = _FILTER.match(inner)
                if not m:
                    raise JsonPathError(f"unsupported selector [{inner}] in {path!r}")
                key, op, lit = m.groups()
                steps.append(("filter", (key, _OPS[op] if op else None, _literal(lit) if op else None)))
        else:
            raise JsonPathError(f"unexpected {s[i]!r} at {i} in {path!r}")
    return steps


def _children(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return list(v.values())
    if isinstance(v, list):
        return list(v)
    return []


def _descend(v: Any, name: str, out: list[Any]) -> None:
    if isinstance(v, dict):
        if name in v:
            out.append(v[name])
        for c in v.values():
            _descend(c, name, out)
    elif isinstance(v, list):
        for c in v:
            _descend(c, name, out)


def jsonpath_values(path: str, document: Any) -> list[Any]:
    """Every value ``path`` selects in ``document``, in document order."""
    current = [document]
    for kind, arg in parse_jsonpath(path):
        nxt: list[Any] = []
        for v in current:
            if kind == "key" and isinstance(v, dict) and arg in v:
                nxt.append(v[arg])
            elif kind == "index" and isinstance(v, list) and -len(v) <= arg < len(v):
                nxt.append(v[arg])
            elif kind == "wild":
                nxt.extend(_children(v))
            elif kind == "descend":
                _descend(v, arg, nxt)
            elif kind == "filter":
                key, op, lit = arg
                for c in _children(v):
                    if isinstance(c, dict) and key in c:
                        try:
                            if op is None or op(c[key], lit):
                                nxt.append(c)
                        except TypeError:
                            continue
        current = nxt
    return current
