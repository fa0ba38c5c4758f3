"""Chaos Mesh manifests and AWS FIS experiment templates as inputs to ``chaos-inject run``.

Both are translated into our experiment model (a Chaos Toolkit document with our actions) before anything
runs; ``--dry-run`` prints the translation. Selectors (Chaos Mesh ``labelSelectors``, FIS ``resourceTags``)
resolve against the inventory's ``labels``/``tags``; the hosts a mode picks (``one``, ``fixed-percent``,
FIS ``COUNT(n)``/``PERCENT(n)``) are chosen here with a seed that is printed, so a run can be repeated.

Chaos Mesh: ``NetworkChaos`` (partition, delay, loss, duplicate, corrupt, bandwidth; direction to/from/both;
target selector or externalTargets) -> ``actions.network_fault``; ``PodChaos`` (pod-kill, pod-failure) ->
``hostactions.kill_hosts``; ``StressChaos`` (cpu workers/load) -> ``hostactions.stress_cpu``. Each manifest
is one background method action: ``kubectl apply`` of a multi-document file starts them together.
``scheduler.cron`` / ``@every``: this run is one round, the note gives the ``chaos-inject schedule`` line.

FIS: targets of ``aws:ec2:instance`` by ``resourceTags`` with ``selectionMode`` ALL / COUNT(n) / PERCENT(n);
actions ``aws:ec2:terminate-instances`` / ``reboot-instances`` (kill, restart at once) and
``aws:ec2:stop-instances`` (kill, restart after ``startInstancesAfterDuration``) -> ``kill_hosts``,
``aws:fis:wait`` -> a pause; ``startAfter`` orders them. ``stopConditions`` with a CloudWatch alarm ->
the halt guard's Prometheus check that the alert of the alarm's name is not firing.

What has no meaning here is refused naming its field (Kubernetes field/annotation/node selectors,
container names, IAM-only resources, ...); what is merely informational (Kubernetes namespaces, roleArn)
is ignored with a note.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import InvalidSpec
from .spec import ExperimentInvalid

__all__ = ["detect_kind", "translate_document", "load_any"]

CHAOS_MESH_API = "chaos-mesh.org/"
ACTIONS = "chaosinject.experiment.actions"
HOSTACTIONS = "chaosinject.experiment.hostactions"
DEFAULT_PROMETHEUS = "http://prometheus:9090"   # the seed's Prometheus
DEFAULT_HOLD = "60s"                            # pod-failure / a NetworkChaos without duration


class _Problems:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def refuse(self, path: str, msg: str) -> None:
        self.errors.append((path, msg))


def detect_kind(docs: list[Any]) -> str | None:
    """'chaos-mesh', 'fis' or None (a Chaos Toolkit experiment, or something else)."""
    maps = [d for d in docs if isinstance(d, Mapping)]
    if maps and all(str(d.get("apiVersion", "")).startswith(CHAOS_MESH_API) for d in maps):
        return "chaos-mesh"
    if len(maps) == 1 and "actions" in maps[0] and "targets" in maps[0] and "method" not in maps[0]:
        return "fis"
    return None


# -- host selection ------------------------------------------------------------------------------------------
def _pick(hosts: list, mode: str, value: Any, rng: random.Random, path: str, p: _Problems) -> list:
    """Chaos Mesh modes (one, all, fixed, fixed-percent, random-max-percent) and FIS selectionModes."""
    n = len(hosts)
    if mode in ("all", "ALL"):
        return hosts
    if mode == "one":
        return rng.sample(hosts, 1) if hosts else []
    if mode not in ("fixed", "COUNT", "fixed-percent", "PERCENT", "random-max-percent"):
        p.refuse(f"{path}.mode", f"unknown mode {mode!r} (one, all, fixed, fixed-percent, random-max-percent)")
        return []
    if not hosts:
        return []
    try:
        k = float(str(value))
    except ValueError:
        p.refuse(f"{path}.value", f"mode {mode} needs a number, got {value!r}")
        return []
    if mode in ("fixed", "COUNT"):
        count = int(k)
    elif mode in ("fixed-percent", "PERCENT"):
        if not 0 <= k <= 100:
            p.refuse(f"{path}.value", f"a percentage 0-100, got {value!r}")
            return []
        count = math.floor(n * k / 100)        # Chaos Mesh and FIS round down
    else:   # random-max-percent
        count = rng.randint(0, math.floor(n * k / 100))
    if count > n:
        p.refuse(f"{path}.value", f"{count} hosts asked for, {n} selected")
        return []
    if count == 0:
        p.refuse(f"{path}.value", f"selects no host out of {n} ({mode} {value}); nothing would be injected")
        return []
    return sorted(rng.sample(hosts, count), key=lambda h: h.name)


K8S_ONLY_SELECTORS = ("fieldSelectors", "annotationSelectors", "nodes", "nodeSelectors", "pods",
                      "podPhaseSelectors", "expressionSelectors")


def _select(sel: Any, inventory, path: str, p: _Problems) -> list:
    if not isinstance(sel, Mapping):
        p.refuse(path, "a selector mapping is required")
        return []
    for key in sel:
        if key in K8S_ONLY_SELECTORS:
            p.refuse(f"{path}.{key}", "a Kubernetes-only selector with no meaning here: select hosts by "
                                      "labelSelectors (the inventory's labels)")
        elif key not in ("namespaces", "labelSelectors"):
            p.refuse(f"{path}.{key}", "unknown selector field")
    if sel.get("namespaces"):
        p.notes.append(f"{path}.namespaces {list(sel['namespaces'])}: Kubernetes namespaces are ignored; hosts "
                       "are chosen by their inventory labels")
    labels = sel.get("labelSelectors") or {}
    if not isinstance(labels, Mapping) or not labels:
        p.refuse(f"{path}.labelSelectors", "required (e.g. {app: api}): hosts are chosen by inventory labels")
        return []
    hosts = inventory.select({str(k): str(v) for k, v in labels.items()})
    if not hosts:
        known = ", ".join(f"{h.name} {dict(h.labels)}" for h in inventory.hosts.values()) or "no hosts"
        p.refuse(f"{path}.labelSelectors", f"no inventory host has labels {dict(labels)} (inventory: {known})")
    return hosts


# -- Chaos Mesh ----------------------------------------------------------------------------------------------
NETWORK_ACTIONS = ("partition", "delay", "loss", "duplicate", "corrupt", "bandwidth")


def _cm_duration(spec: Mapping, path: str, p: _Problems, *, default: str | None) -> str | None:
    from ..spec.units import format_duration_ns, parse_duration_ns

    d = spec.get("duration")
    if d is None:
        if default is not None:
            p.notes.append(f"{path}.duration not given: held for {default} (every fault here ends by itself)")
        return default
    text = str(d)
    # Go durations: 30s, 1m30s, 1h -> our units (sum of parts)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        p.refuse(f"{path}.duration", f"not a duration: {text!r}")
        return None
    total = sum(parse_duration_ns(a + b, allow_zero=True) for a, b in parts)
    if total <= 0:
        p.refuse(f"{path}.duration", "must be positive")
        return None
    return format_duration_ns(total)


def _pct(v: Any) -> str:
    return str(v) if str(v).endswith("%") else f"{v}%"


def _network(m: Mapping, spec: Mapping, path: str, inventory, rng, p: _Problems) -> dict | None:
    action = spec.get("action")
    if action not in NETWORK_ACTIONS:
        p.refuse(f"{path}.action", f"NetworkChaos action {action!r} is not supported here (ours: "
                                   f"{', '.join(NETWORK_ACTIONS)})")
        return None
    srcs = _pick(_select(spec.get("selector"), inventory, f"{path}.selector", p), str(spec.get("mode", "")),
                 spec.get("value"), rng, path, p)
    direction = spec.get("direction", "to")
    dirmap = {"to": "egress", "from": "ingress", "both": "both"}
    if direction not in dirmap:
        p.refuse(f"{path}.direction", f"to, from or both, got {direction!r}")
        return None
    dsts: list[str] = []
    target = spec.get("target")
    if target is not None:
        if not isinstance(target, Mapping):
            p.refuse(f"{path}.target", "must be a mapping with selector and mode")
        else:
            dsts = [h.name for h in _pick(_select(target.get("selector"), inventory, f"{path}.target.selector", p),
                                          str(target.get("mode", "all")), target.get("value"), rng,
                                          f"{path}.target", p)]
    for ext in spec.get("externalTargets") or []:
        dsts.append(str(ext))
    if not dsts:
        if target is None and not spec.get("externalTargets"):
            dsts = ["*"]
            p.notes.append(f"{path}: no target: every destination of the selected hosts is affected")
    for key in ("device", "targetDevice", "containerNames"):
        if key in spec:
            p.refuse(f"{path}.{key}", "has no meaning here: the interface comes from the inventory")
    args: dict[str, Any] = {}
    if action == "partition":
        args["partition"] = True
    elif action == "delay":
        d = spec.get("delay") or {}
        args["delay"] = d.get("latency")
        if d.get("jitter") and str(d.get("jitter")) not in ("0", "0ms"):
            args["jitter"] = d["jitter"]
            if d.get("correlation") and float(d["correlation"]) > 0:
                args["correlation"] = _pct(d["correlation"])
        elif d.get("correlation") and float(d["correlation"]) > 0:
            p.notes.append(f"{path}.delay.correlation ignored: it correlates the jitter, and there is none")
        if d.get("reorder"):
            p.refuse(f"{path}.delay.reorder", "not supported in a translated NetworkChaos")
    elif action in ("loss", "duplicate", "corrupt"):
        d = spec.get(action) or {}
        args[action] = _pct(d.get(action))
        if d.get("correlation") and float(d["correlation"]) > 0:
            p.refuse(f"{path}.{action}.correlation", f"a {action} correlation cannot be honoured (independent draws)")
    elif action == "bandwidth":
        d = spec.get("bandwidth") or {}
        args["rate"] = d.get("rate")
        p.notes.append(f"{path}.bandwidth: only rate is applied (limit/buffer/peakrate are tbf's queue shape)")
    if not srcs:
        return None
    duration = _cm_duration(spec, path, p, default=DEFAULT_HOLD)
    flows = [f"{s.name}->{d}" for s in srcs for d in dsts if d != s.name]
    return {"func": "network_fault", "module": ACTIONS,
            "arguments": {"flow": flows, "duration": duration, "direction": dirmap[direction], **args}}


def _pod(m: Mapping, spec: Mapping, path: str, inventory, rng, p: _Problems) -> dict | None:
    action = spec.get("action")
    if action not in ("pod-kill", "pod-failure"):
        p.refuse(f"{path}.action", f"PodChaos action {action!r} is not supported (ours: pod-kill, pod-failure; "
                                   "container-kill has no containers here)")
        return None
    hosts = _pick(_select(spec.get("selector"), inventory, f"{path}.selector", p), str(spec.get("mode", "")),
                  spec.get("value"), rng, path, p)
    if "containerNames" in spec:
        p.refuse(f"{path}.containerNames", "has no meaning here (a host's pod is its netns's processes)")
    for h in hosts:
        if not h.netns:
            p.refuse(f"{path}.selector", f"host {h.name} has no netns in the inventory: no pod to kill")
        elif not h.restart:
            p.notes.append(f"{path}: {h.name} has no restart command in the inventory: after {action} it stays "
                           "down (Kubernetes would recreate the pod)")
    if not hosts:
        return None
    args: dict[str, Any] = {"hosts": [h.name for h in hosts], "action": action}
    if action == "pod-failure":
        args["duration"] = _cm_duration(spec, path, p, default=DEFAULT_HOLD)
    if spec.get("gracePeriod") is not None:
        args["grace"] = f"{int(spec['gracePeriod'])}s"
    return {"func": "kill_hosts", "module": HOSTACTIONS, "arguments": args}


def _stress(m: Mapping, spec: Mapping, path: str, inventory, rng, p: _Problems) -> dict | None:
    stressors = spec.get("stressors") or {}
    for key in stressors:
        if key != "cpu":
            p.refuse(f"{path}.stressors.{key}", "only cpu stressors are supported")
    cpu = stressors.get("cpu")
    if not isinstance(cpu, Mapping) or "workers" not in cpu:
        p.refuse(f"{path}.stressors.cpu", "needs workers (and load)")
        return None
    if "stressngStressors" in spec or "containerNames" in spec:
        p.refuse(f"{path}.stressngStressors", "not supported")
    hosts = _pick(_select(spec.get("selector"), inventory, f"{path}.selector", p), str(spec.get("mode", "")),
                  spec.get("value"), rng, path, p)
    if not hosts:
        return None
    p.notes.append(f"{path}: {cpu['workers']} CPU worker(s) per selected host ({', '.join(h.name for h in hosts)}) "
                   "on this machine's CPUs (Chaos Mesh stresses inside each pod's cgroup)")
    return {"func": "stress_cpu", "module": HOSTACTIONS,
            "arguments": {"workers": int(cpu["workers"]), "load": float(cpu.get("load", 100)),
                          "duration": _cm_duration(spec, path, p, default=DEFAULT_HOLD),
                          "hosts": [h.name for h in hosts]}}


KINDS = {"NetworkChaos": _network, "PodChaos": _pod, "StressChaos": _stress}


def translate_chaos_mesh(docs: list[Any], inventory, *, seed: int, source: str = "") -> tuple[dict, list[str]]:
    p = _Problems()
    rng = random.Random(seed)
    method = []
    names = []
    for i, m in enumerate(d for d in docs if d is not None):
        path = f"document[{i}]"
        if not isinstance(m, Mapping):
            p.refuse(path, "must be a mapping")
            continue
        kind = m.get("kind")
        name = (m.get("metadata") or {}).get("name") or f"{str(kind).lower()}-{i}"
        names.append(name)
        path = f"{path} ({kind} {name})"
        spec = m.get("spec") or {}
        if kind not in KINDS:
            p.refuse(f"{path}.kind", f"{kind!r} is not supported here (ours: {', '.join(KINDS)})")
            continue
        if (m.get("metadata") or {}).get("namespace"):
            p.notes.append(f"{path}: metadata.namespace ignored (Kubernetes)")
        for key in ("remoteCluster",):
            if key in spec:
                p.refuse(f"{path}.spec.{key}", "has no meaning here")
        sched = spec.get("scheduler")
        if sched is not None:
            cron = sched.get("cron") if isinstance(sched, Mapping) else None
            try:
                from ..cron import parse_schedule

                parse_schedule(str(cron))
                p.notes.append(f"{path}: scheduler.cron {cron!r}: this run is one round; to repeat it: "
                               f"chaos-inject schedule '{cron}' -- run {source or 'FILE'}")
            except InvalidSpec as exc:
                p.refuse(f"{path}.spec.scheduler.cron", str(exc))
        call = KINDS[kind](m, spec, f"{path}.spec", inventory, rng, p)
        if call is not None:
            method.append({"type": "action", "name": name, "background": True,
                           "provider": {"type": "python", "module": call["module"], "func": call["func"],
                                        "arguments": call["arguments"]}})
    if p.errors:
        raise ExperimentInvalid(p.errors, source or None)
    doc = {"title": f"Chaos Mesh: {', '.join(names)}",
           "description": f"translated from Chaos Mesh manifests{f' ({source})' if source else ''}",
           "tags": ["chaos-mesh"], "method": method, "rollbacks": []}
    p.notes.insert(0, f"hosts picked with seed {seed} (repeat with --seed {seed})")
    return doc, p.notes


# -- AWS FIS -------------------------------------------------------------------------------------------------
FIS_KILLS = {"aws:ec2:terminate-instances": "terminate", "aws:ec2:reboot-instances": "reboot",
             "aws:ec2:stop-instances": "stop"}


def _iso_duration(text: Any, path: str, p: _Problems) -> str | None:
    """ISO 8601 durations of FIS parameters (PT5M, PT1H30M, PT90S) -> '300s'."""
    m = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", str(text or ""))
    if not m or not any(m.groups()):
        p.refuse(path, f"an ISO 8601 duration such as PT5M, got {text!r}")
        return None
    h, mi, s = (int(x or 0) for x in m.groups())
    return f"{h * 3600 + mi * 60 + s}s"


def _fis_target(name: str, t: Any, inventory, rng, p: _Problems) -> list:
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
    return _pick(hosts, m.group(1), m.group(2), rng, path, p)


def translate_fis(tpl: Mapping, inventory, *, seed: int, prometheus_url: str | None = None, source: str = ""
                  ) -> tuple[dict, list[str]]:
    p = _Problems()
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


def translate_document(docs: list[Any], inventory, *, seed: int, prometheus_url: str | None = None,
                       source: str = "") -> tuple[str, dict, list[str]] | None:
    kind = detect_kind(docs)
    if kind == "chaos-mesh":
        return (kind, *translate_chaos_mesh(docs, inventory, seed=seed, source=source))
    if kind == "fis":
        return (kind, *translate_fis(docs[0], inventory, seed=seed, prometheus_url=prometheus_url, source=source))
    return None


def read_documents(path: str | Path) -> list[Any]:
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        from .loader import read_document

        try:
            return list(yaml.safe_load_all(p.read_text(encoding="utf-8")))
        except (yaml.YAMLError, OSError):
            return [read_document(p)]          # its own clear error
    from .loader import read_document

    return [read_document(p)]


def load_any(path: str | Path, *, inventory=None, seed: int | None = None, prometheus_url: str | None = None):
    """A Chaos Toolkit experiment, Chaos Mesh manifests or a FIS template -> (Experiment, kind, notes)."""
    from ..spec import Inventory
    from .spec import parse_experiment

    docs = read_documents(path)
    if detect_kind(docs) is None:
        from .loader import load_experiment

        return load_experiment(path), "chaos-toolkit", []
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1_000_000)
    inv = inventory if isinstance(inventory, Inventory) else Inventory.discover(inventory)
    kind, doc, notes = translate_document(docs, inv, seed=seed, prometheus_url=prometheus_url, source=str(path))
    exp = parse_experiment(doc, source=str(path))
    return exp, kind, notes
