#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see the chaos-inject repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: fault
short_description: A network fault of chaos-inject on this host, kept alive by the controller's heartbeat
description:
  - "Runs the target's C(chaos-inject) with C(--detach --json --heartbeat FILE): the fault is active when the task
    returns, and ends by itself (state halted) when its heartbeat file is not renewed within I(heartbeat_timeout),
    at I(duration), or with I(state=absent). The rules' in-kernel lease (I(lease)) ends the fault if the
    supervisor itself dies."
  - "Idempotent by I(name): with I(state=present) a live run of that name is not applied again; its heartbeat is
    renewed and its counters returned (this is how the controller renews). A finished run of that name is
    reported, not restarted."
  - "Check mode runs C(chaos-inject --dry-run) and returns the plan."
options:
  name:
    description: "The fleet run's name (one per run; the controller makes it)."
    required: true
    type: str
  state:
    description: "present or absent."
    choices: [present, absent]
    default: present
    type: str
  flows:
    description: "Flows as chaos-inject takes them: addresses, this host being their source."
    type: list
    elements: str
  fault:
    description: "Fault options named as the CLI's, e.g. C({delay: 200ms}), C({loss: 10%}), C({partition: true})."
    type: dict
  direction:
    description: "egress, ingress or both."
    type: str
    default: egress
    choices: [egress, ingress, both]
  engine:
    description: "auto, ebpf, netem, edt or userspace."
    type: str
    default: auto
    choices: [auto, ebpf, netem, edt, userspace]
  duration:
    description: "Hard limit, e.g. 60s."
    type: str
  lease:
    description: "In-kernel rule lease (default chaos-inject's)."
    type: str
  heartbeat_timeout:
    description: "How stale the heartbeat may get before the fault ends."
    type: str
    default: 15s
  seed:
    description: "Seed of the in-kernel PRNG."
    type: int
extends_documentation_fragment:
  - chaosinject.fleet.target
author: chaos-inject developers
"""

EXAMPLES = r"""
- name: 200 ms on the way to the database, for a minute at most
  chaosinject.fleet.fault:
    name: exp-42
    flows: ["10.0.0.5->10.0.0.9:5432/tcp"]
    fault: {delay: 200ms}
    duration: 60s
    heartbeat_timeout: 15s
"""

RETURN = r"""
run_id:
  description: "The local run id (chaos-inject status / stop)."
  type: str
  returned: when a run exists
run_state:
  description: "planned, running, completed, stopped, halted, failed or absent."
  type: str
  returned: always
counters:
  description: "Per rule, what the kernel counted (matched, dropped, delayed, ...)."
  type: dict
  returned: when a run exists
plan:
  description: "The dry-run plan (check mode)."
  type: str
  returned: check mode
took_s:
  description: "Seconds the target's chaos-inject took (its dry run in check mode, its start otherwise)."
  type: float
  returned: when chaos-inject was run
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.chaosinject.fleet.plugins.module_utils import chaos

FAULT_OPTIONS = ("delay", "jitter", "distribution", "correlation", "loss", "loss_burst", "loss_state", "corrupt",
                 "duplicate", "reorder", "rate")


def inject_args(module):
    p = module.params
    args = []
    for flow in p["flows"] or []:
        args += ["--flow", flow]
    fault = dict(p["fault"] or {})
    unknown = sorted(set(fault) - set(FAULT_OPTIONS) - {"partition"})
    if unknown:
        module.fail_json(msg="unknown fault options %s (known: %s, partition)" % (unknown, ", ".join(FAULT_OPTIONS)))
    for key in FAULT_OPTIONS:
        if fault.get(key) not in (None, ""):
            args += ["--" + key.replace("_", "-"), str(fault[key])]
    if module.boolean(fault.get("partition", False)):
        args.append("--partition")
    args += ["--direction", p["direction"], "--engine", p["engine"], "--duration", p["duration"]]
    if p["lease"]:
        args += ["--lease", p["lease"]]
    if p["seed"] is not None:
        args += ["--seed", str(p["seed"])]
    return args


def present(module, record_path, heartbeat_path):
    record = chaos.read_record(record_path)
    if record:
        run_id = record["run_id"]
        if not module.check_mode and os.path.exists(heartbeat_path):
            chaos.touch(heartbeat_path)                 # first: a renewal must land even on a slow host
        status = chaos.live_status(module, run_id)
        if status:
            return dict(changed=False, run_id=run_id, run_state=status.get("state", "running"),
                        counters=status.get("counters", {}), remaining_s=status.get("remaining_s"))
        final = chaos.final_record(module, run_id) or {}
        return dict(changed=False, run_id=run_id, run_state=final.get("state", "gone"),
                    counters=final.get("counters", {}), stop_reason=final.get("stop_reason"),
                    halt=final.get("halt"))
    if not module.params["flows"] or not module.params["duration"]:
        module.fail_json(msg="state=present needs flows and duration")
    if module.check_mode:
        cmd = chaos.command(module) + ["inject"] + inject_args(module) + ["--dry-run"]
        began = time.time()
        rc, out, err = module.run_command(cmd, environ_update=chaos.environment(module))
        if rc != 0:
            module.fail_json(msg="the plan was refused (exit %d): %s" % (rc, err.strip()), rc=rc, stderr=err)
        return dict(changed=True, run_state="planned", plan=out, took_s=round(time.time() - began, 3))
    chaos.touch(heartbeat_path)
    args = ["inject"] + inject_args(module) + ["--detach", "--json", "--heartbeat", heartbeat_path,
                                               "--heartbeat-timeout", module.params["heartbeat_timeout"]]
    began = time.time()
    rc, data, err = chaos.run_json(module, args, check_rc=False)
    took_s = round(time.time() - began, 3)
    if rc != 0 or not data or not data.get("run_id"):
        chaos.remove(heartbeat_path)
        module.fail_json(msg="chaos-inject refused or failed (exit %d): %s" % (rc, err.strip()), rc=rc, stderr=err)
    chaos.touch(heartbeat_path)      # the fault is active only now: its heartbeat counts from here
    chaos.write_record(record_path, {"run_id": data["run_id"], "pid": data.get("pid"), "args": args})
    return dict(changed=True, run_id=data["run_id"], run_state="running", counters={}, pid=data.get("pid"),
                took_s=took_s)


def absent(module, record_path, heartbeat_path):
    record = chaos.read_record(record_path)
    if not record:
        return dict(changed=False, run_state="absent")
    run_id = record["run_id"]
    live = chaos.live_status(module, run_id)
    if module.check_mode:
        return dict(changed=True, run_id=run_id, run_state="running" if live else "gone")
    if live:
        chaos.request_stop(module, run_id)
    final = chaos.wait_final(module, run_id) if live else (chaos.final_record(module, run_id) or {})
    still = chaos.live_status(module, run_id)
    if still:
        module.fail_json(msg="run %s did not stop; see chaos-inject status on this host" % run_id, run_id=run_id)
    chaos.remove(heartbeat_path)
    chaos.remove(record_path)
    return dict(changed=True, run_id=run_id, run_state=final.get("state", "gone"),
                counters=final.get("counters", {}), stop_reason=final.get("stop_reason"),
                elapsed_s=final.get("elapsed_s"), halt=final.get("halt"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            flows=dict(type="list", elements="str"),
            fault=dict(type="dict"),
            direction=dict(type="str", default="egress", choices=["egress", "ingress", "both"]),
            engine=dict(type="str", default="auto", choices=["auto", "ebpf", "netem", "edt", "userspace"]),
            duration=dict(type="str"),
            lease=dict(type="str"),
            heartbeat_timeout=dict(type="str", default="15s"),
            seed=dict(type="int"),
            **chaos.TARGET_ARGS
        ),
        supports_check_mode=True,
    )
    _, record_path, heartbeat_path = chaos.fleet_paths(module, module.params["name"])
    if module.params["state"] == "present":
        result = present(module, record_path, heartbeat_path)
    else:
        result = absent(module, record_path, heartbeat_path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
