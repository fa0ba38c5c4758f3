"""Chaos Mesh manifests translated into an experiment: ``NetworkChaos`` (partition, delay, loss, duplicate,
corrupt, bandwidth; direction to/from/both; target selector or externalTargets) -> ``actions.network_fault``;
``PodChaos`` (pod-kill, pod-failure) -> ``hostactions.kill_hosts``; ``StressChaos`` (cpu workers/load) ->
``hostactions.stress_cpu``. Each manifest is one background method action: ``kubectl apply`` of a
multi-document file starts them together. ``scheduler.cron`` / ``@every``: this run is one round, the note gives
the ``chaos-inject schedule`` line.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping

from ..errors import ExperimentInvalid, InvalidSpec
from .foreign_hosts import ACTIONS, DEFAULT_HOLD, HOSTACTIONS, Problems, pick_hosts, select_hosts

CHAOS_MESH_API = "chaos-mesh.org/"


NETWORK_ACTIONS = ("partition", "delay", "loss", "duplicate", "corrupt", "bandwidth")


def _cm_duration(spec: Mapping, path: str, p: Problems, *, default: str | None) -> str | None:
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


def _network(m: Mapping, spec: Mapping, path: str, inventory, rng, p: Problems) -> dict | None:
    action = spec.get("action")
    if action not in NETWORK_ACTIONS:
        p.refuse(f"{path}.action", f"NetworkChaos action {action!r} is not supported here (ours: "
                                   f"{', '.join(NETWORK_ACTIONS)})")
        return None
    srcs = pick_hosts(select_hosts(spec.get("selector"), inventory, f"{path}.selector", p), str(spec.get("mode", "")),
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
            dsts = [h.name for h in pick_hosts(select_hosts(target.get("selector"), inventory, f"{path}.target.selector", p),
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


def _pod(m: Mapping, spec: Mapping, path: str, inventory, rng, p: Problems) -> dict | None:
    action = spec.get("action")
    if action not in ("pod-kill", "pod-failure"):
        p.refuse(f"{path}.action", f"PodChaos action {action!r} is not supported (ours: pod-kill, pod-failure; "
                                   "container-kill has no containers here)")
        return None
    hosts = pick_hosts(select_hosts(spec.get("selector"), inventory, f"{path}.selector", p), str(spec.get("mode", "")),
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


def _stress(m: Mapping, spec: Mapping, path: str, inventory, rng, p: Problems) -> dict | None:
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
    hosts = pick_hosts(select_hosts(spec.get("selector"), inventory, f"{path}.selector", p), str(spec.get("mode", "")),
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
    p = Problems()
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
