"""Reading experiment files (JSON or YAML), resolving configuration and secrets, ``${name}`` substitution,
and the checks that need the environment (python modules import and their arguments bind, process paths
exist), all before anything runs."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
from collections import ChainMap
from pathlib import Path
from string import Template
from typing import Any, Mapping

from .spec import (Experiment, ExperimentInvalid, ProcessProvider, PythonProvider, Tolerance, parse_experiment,
                   thaw)

__all__ = ["load_experiment", "read_document", "resolve_configuration", "resolve_secrets", "substitute",
           "check_environment", "parse_vars", "read_var_file", "CHAOSPROMETHEUS_MODULE"]

# chaostoolkit-prometheus's python-provider form is served by our own client (see providers.py)
CHAOSPROMETHEUS_MODULE = "chaosprometheus.probes"


def read_document(path: str | os.PathLike) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentInvalid([("", f"no such file: {p}")]) from None
    except OSError as exc:
        raise ExperimentInvalid([("", f"cannot read {p}: {exc.strerror}")]) from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ExperimentInvalid([("", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")],
                                    str(p)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExperimentInvalid([("", f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")],
                                str(p)) from None


def parse_vars(pairs: list[str] | None) -> dict[str, Any]:
    """``--var k=v`` (as chaos run): the value is JSON when it parses as JSON, else the string."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ExperimentInvalid([("--var", f"expected key=value, got {pair!r}")])
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def read_var_file(path: str | os.PathLike) -> dict[str, Any]:
    """chaos run's --var-file: a JSON or YAML mapping (its ``configuration`` key if it has one), or an .env
    file of KEY=VALUE lines."""
    p = Path(path)
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        doc = read_document(p)
        if isinstance(doc, Mapping) and isinstance(doc.get("configuration"), Mapping):
            doc = doc["configuration"]
        if not isinstance(doc, Mapping):
            raise ExperimentInvalid([("--var-file", f"{p} must hold a mapping of names to values")])
        return dict(doc)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ExperimentInvalid([("--var-file", f"cannot read {p}: {exc.strerror}")]) from None
    return parse_vars([ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")])


def _convert(kind: str | None, value: Any, where: str) -> Any:
    if kind in (None, "str") or value is None:
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bytes":
            return str(value).encode()
        if kind == "json":
            return json.loads(value)
    except (ValueError, TypeError) as exc:
        raise ExperimentInvalid([(where, f"cannot convert {value!r} to {kind}: {exc}")]) from None
    return value


def resolve_configuration(exp: Experiment, extra: Mapping[str, Any] | None = None,
                          env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """chaoslib's load_configuration: env entries read (with default / env_var_type), ``extra`` (--var) wins."""
    env = os.environ if env is None else env
    extra = dict(extra or {})
    conf: dict[str, Any] = {}
    errors = []
    for key, value in thaw(exp.configuration).items():
        if key in extra:
            conf[key] = extra.pop(key)
            continue
        if isinstance(value, dict) and value.get("type") == "env":
            name = value["key"]
            if name not in env and "default" not in value:
                errors.append((f"configuration.{key}", f"environment variable {name} is not set and has no default"))
                continue
            conf[key] = _convert(value.get("env_var_type"), env.get(name, value.get("default")),
                                 f"configuration.{key}")
        else:
            conf[key] = value
    conf.update(extra)   # --var may add keys the file does not declare
    if errors:
        raise ExperimentInvalid(errors)
    return conf


def resolve_secrets(exp: Experiment, env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    env = os.environ if env is None else env
    out: dict[str, dict[str, Any]] = {}
    errors = []
    for scope, values in thaw(exp.secrets).items():
        out[scope] = {}
        for k, v in values.items():
            if isinstance(v, dict) and v.get("type") == "env":
                if v["key"] not in env:
                    errors.append((f"secrets.{scope}.{k}", f"environment variable {v['key']} is not set"))
                    continue
                out[scope][k] = env[v["key"]]
            else:
                out[scope][k] = v
    if errors:
        raise ExperimentInvalid(errors)
    return out


class _Typed(Template):
    idpattern = r"[_a-zA-Z][_a-zA-Z0-9]*"


def substitute(data: Any, configuration: Mapping[str, Any], secrets: Mapping[str, Mapping] | None = None) -> Any:
    """``${name}`` from the configuration, then from any secret scope (chaoslib's order). A string that is
    exactly one ``${name}`` takes the value's own type; unknown names are left as written."""
    mapping = ChainMap(dict(configuration or {}), *[dict(v) for v in (secrets or {}).values()])
    if isinstance(data, str):
        m = _Typed.pattern.fullmatch(data)
        if m and (m.group("braced") or m.group("named")) in mapping:
            return mapping[m.group("braced") or m.group("named")]
        return _Typed(data).safe_substitute(mapping)
    if isinstance(data, Mapping):
        return {k: substitute(v, configuration, secrets) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [substitute(v, configuration, secrets) for v in data]
    return data


def load_experiment(path: str | os.PathLike) -> Experiment:
    """An experiment file, or a journal (ours or chaostoolkit's): the experiment it recorded."""
    doc = read_document(path)
    if (isinstance(doc, dict) and isinstance(doc.get("experiment"), dict) and "title" not in doc
            and "steady_states" in doc and "status" in doc):
        doc = doc["experiment"]
    return parse_experiment(doc, source=str(path))


def check_environment(exp: Experiment) -> list[str]:
    """The checks chaoslib does at validation that need the machine: python modules import, functions exist
    and the declared arguments bind (``configuration``/``secrets`` are injected); process executables are
    found. Raises ExperimentInvalid; returns warnings."""
    errors: list[tuple[str, str]] = []
    warnings: list[str] = []
    acts = list(exp.activities())
    acts += [a.tolerance.probe for a in acts if a.tolerance and a.tolerance.probe is not None]
    for a in acts:
        p = a.provider
        path = f"{a.path}.provider"
        if isinstance(p, PythonProvider):
            if p.module == CHAOSPROMETHEUS_MODULE:
                from . import prometheus

                if p.func not in prometheus.CHAOSPROMETHEUS_FUNCS:
                    errors.append((f"{path}.func", f"{p.module} has no probe {p.func!r} (ours serves "
                                                   f"{', '.join(prometheus.CHAOSPROMETHEUS_FUNCS)})"))
                continue
            try:
                mod = importlib.import_module(p.module)
            except ImportError as exc:
                errors.append((f"{path}.module", f"cannot import {p.module!r}: {exc}"))
                continue
            func = getattr(mod, p.func, None)
            if not callable(func):
                errors.append((f"{path}.func", f"module {p.module!r} has no function {p.func!r}"))
                continue
            args = dict(thaw(p.arguments))
            try:
                sig = inspect.signature(func)
                for injected in ("configuration", "secrets"):
                    if injected in sig.parameters:
                        args.setdefault(injected, None)
                if a.path.endswith(".tolerance"):   # a tolerance probe gets the output as `value`
                    args.setdefault("value", None)
                sig.bind(**args)
            except TypeError as exc:
                errors.append((f"{path}.arguments", f"do not fit {p.module}.{p.func}: {exc}"))
            except ValueError:
                pass
        elif isinstance(p, ProcessProvider):
            if "${" not in p.path and shutil.which(p.path) is None:
                errors.append((f"{path}.path", f"executable {p.path!r} not found"))
            if isinstance(p.arguments, str):
                from ..spec.shellsafe import process_arguments_problem

                problem = process_arguments_problem(p.arguments)
                if problem:
                    errors.append((f"{path}.arguments", problem))
    for a in acts:
        t: Tolerance | None = a.tolerance
        if t is not None and t.note:
            warnings.append(t.note)
    if errors:
        raise ExperimentInvalid(errors, None)
    return warnings
