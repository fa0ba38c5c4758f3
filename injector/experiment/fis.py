"""AWS FIS experiment templates translated into an experiment: targets of ``aws:ec2:instance`` by
``resourceTags`` with ``selectionMode`` ALL / COUNT(n) / PERCENT(n); actions ``aws:ec2:terminate-instances`` /
``reboot-instances`` (kill, restart at once) and ``aws:ec2:stop-instances`` (kill, restart after
``startInstancesAfterDuration``) -> ``kill_hosts``, ``aws:fis:wait`` -> a pause; ``startAfter`` orders them.
``stopConditions`` with a CloudWatch alarm -> the halt guard's Prometheus check that the alert of the alarm's
name is not firing.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping

from ..errors import ExperimentInvalid
from .foreign_hosts import DEFAULT_HOLD, HOSTACTIONS, Problems, pick_hosts

DEFAULT_PROMETHEUS = "http://prometheus:9090"   # the seed's Prometheus


FIS_KILLS = {"aws:ec2:terminate-instances": "terminate", "aws:ec2:reboot-instances": "reboot",
             "aws:ec2:stop-instances": "stop"}


def _iso_duration(text: Any, path: str, p: Problems) -> str | None:
    """ISO 8601 durations of FIS parameters (PT5M, PT1H30M, PT90S) -> '300s'."""
    m = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", str(text or ""))
    if not m or not any(m.groups()):
        p.refuse(path, f"an ISO 8601 duration such as PT5M, got {text!r}")
        return None
    h, mi, s = (int(x or 0) for x in m.groups())
    return f"{h * 3600 + mi * 60 + s}s"


def _fis_target(name: str, t: Any, inventory, rng, p: Problems) -> list:
    path = f"targets.{name}"
    if not isinstance(t, Mapping):
        p.refuse(path, "must be a mapping")
        return []
    if t.get("resourceType") != "aws:ec2:instance":
        p.refuse(f"{path}.resourceType", f"{t.get('resourceType')!r}: only aws:ec2:instance (an inventory host) "
                                         "has a meaning here")
        return []
    for key in ("resourceArns", "filters", "parameters"):
        if t.get(key):
            p.refuse(f"{path}.{key}", "AWS-only: select hosts by resourceTags (the inventory's tags/labels)")
    tags = t.get("resourceTags") or {}
    if not tags:
        p.refuse(f"{path}.resourceTags", "required: hosts are chosen by their inventory tags")
        return []
    hosts = inventory.select({str(k): str(v) for k, v in tags.items()})
    if not hosts:
        p.refuse(f"{path}.resourceTags", f"no inventory host has tags {dict(tags)}")
        return []
    mode = str(t.get("selectionMode", "ALL"))
    m = re.fullmatch(r"(ALL|COUNT|PERCENT)(?:\((\d+)\))?", mode)
    if not m or (m.group(1) != "ALL") != bool(m.group(2)):
        p.refuse(f"{path}.selectionMode", f"ALL, COUNT(n) or PERCENT(n), got {mode!r}")
        return []
    return pick_hosts(hosts, m.group(1), m.group(2), rng, path, p)


def translate_fis(tpl: Mapping, inventory, *, seed: int, prometheus_url: str | None = None, source: str = ""
                  ) -> tuple[dict, list[str]]:
    p = Problems()
    rng = random.Random(seed)
    targets = {name: _fis_target(name, t, inventory, rng, p) for name, t in (tpl.get("targets") or {}).items()}
    for key in ("roleArn", "logConfiguration", "experimentOptions", "clientToken"):
        if key in tpl:
            p.notes.append(f"{key} ignored (AWS account settings; we run locally as root)")
    actions = tpl.get("actions") or {}
    if not isinstance(actions, Mapping) or not actions:
        p.refuse("actions", "at least one action")
        actions = {}
    # startAfter: a topological order; actions free of it start together (background)
    order: list[str] = []
    pending = dict(actions)
    while pending:
        ready = [n for n, a in pending.items() if all(d in order for d in (a or {}).get("startAfter") or [])]
        if not ready:
            p.refuse("actions", f"startAfter refers to unknown actions or forms a cycle: {sorted(pending)}")
            break
        for n in sorted(ready):
            order.append(n)
            pending.pop(n)
    sequential = any((a or {}).get("startAfter") for a in actions.values())
    method = []
    for name in order:
        a = actions[name] or {}
        path = f"actions.{name}"
        aid = a.get("actionId")
        params = a.get("parameters") or {}
        if aid == "aws:fis:wait":
            dur = _iso_duration(params.get("duration"), f"{path}.parameters.duration", p)
            if dur:
                method.append({"type": "action", "name": name, "provider": {
                    "type": "python", "module": "time", "func": "sleep", "arguments": {"secs": float(dur[:-1])}}})
            continue
        if aid not in FIS_KILLS:
            p.refuse(f"{path}.actionId", f"{aid!r} is not supported here (ours: {', '.join(FIS_KILLS)}, "
                                         "aws:fis:wait)")
            continue
        tref = (a.get("targets") or {}).get("Instances")
        if tref not in targets:
            p.refuse(f"{path}.targets.Instances", f"unknown target {tref!r}")
            continue
        hosts = targets[tref]
        for h in hosts:
            if not h.netns:
                p.refuse(f"targets.{tref}", f"host {h.name} has no netns in the inventory: nothing to terminate")
            elif not h.restart and FIS_KILLS[aid] != "terminate":
                p.notes.append(f"{path}: {h.name} has no restart command in the inventory: it stays down")
        args: dict[str, Any] = {"hosts": [h.name for h in hosts], "action": FIS_KILLS[aid]}
        if FIS_KILLS[aid] == "stop":
            after = params.get("startInstancesAfterDuration")
            if after is None:
                p.notes.append(f"{path}: no startInstancesAfterDuration: restarted after {DEFAULT_HOLD}")
                args["duration"] = DEFAULT_HOLD
            else:
                args["duration"] = _iso_duration(after, f"{path}.parameters.startInstancesAfterDuration", p)
        if FIS_KILLS[aid] == "terminate":
            p.notes.append(f"{path}: terminate = kill every process in {', '.join(args['hosts'])}'s netns; the "
                           "inventory's restart command (if any) plays the auto scaling group's replacement")
        if hosts:
            method.append({"type": "action", "name": name, "background": not sequential,
                           "provider": {"type": "python", "module": HOSTACTIONS, "func": "kill_hosts",
                                        "arguments": args}})
    ext: dict[str, Any] = {"name": "chaos-inject"}
    for i, sc in enumerate(tpl.get("stopConditions") or []):
        src = (sc or {}).get("source")
        if src == "none":
            continue
        if src != "aws:cloudwatch:alarm":
            p.refuse(f"stopConditions[{i}].source", f"{src!r}: only aws:cloudwatch:alarm (or none)")
            continue
        alarm = str(sc.get("value", "")).rsplit(":", 1)[-1]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_:-]*", alarm):
            p.refuse(f"stopConditions[{i}].value", f"no alarm name in {sc.get('value')!r}")
            continue
        if "halt" in ext:
            p.refuse(f"stopConditions[{i}]", "one stop condition is supported")
            continue
        url = prometheus_url or DEFAULT_PROMETHEUS
        ext["halt"] = {"prometheus": {"url": url, "query": f'sum(ALERTS{{alertname="{alarm}",alertstate="firing"}}) '
                                                           "or vector(0)", "max": 0}}
        p.notes.append(f"stopConditions[{i}]: CloudWatch alarm {alarm} -> halt when Prometheus ({url}) has the "
                       f"alert {alarm} firing (checked every second; --prometheus-url to change)")
    if p.errors:
        raise ExperimentInvalid(p.errors, source or None)
    doc = {"title": f"FIS: {tpl.get('description') or 'experiment template'}",
           "description": f"translated from an AWS FIS experiment template{f' ({source})' if source else ''}",
           "tags": ["fis"], "method": method, "rollbacks": []}
    if len(ext) > 1:
        doc["extensions"] = [ext]
    p.notes.insert(0, f"hosts picked with seed {seed} (repeat with --seed {seed}); states as FIS: "
                      "`chaos-inject status` shows pending/running/completed/failed/stopped")
    return doc, p.notes
