#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see the chaos-inject repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: sweep
short_description: "Clean this host of chaos-inject faults: fleet runs stopped, what dead runs left removed"
description:
  - "Stops every fleet run remembered on this host (its heartbeat removed, so it cannot outlive the stop), then
    runs C(chaos-inject sweep --json), which removes what dead runs left and leaves other live runs alone."
  - "With I(stop_all), every live run of this host is stopped too."
options:
  stop_all:
    description: "Also stop live runs that are not the fleet's."
    type: bool
    default: false
extends_documentation_fragment:
  - chaosinject.fleet.target
author: chaos-inject developers
"""

EXAMPLES = r"""
- chaosinject.fleet.sweep:
"""

RETURN = r"""
stopped:
  description: "Local run ids stopped."
  type: list
  returned: always
swept:
  description: "The report of chaos-inject sweep --json."
  type: dict
  returned: always
"""

import glob
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.chaosinject.fleet.plugins.module_utils import chaos


def main():
    module = AnsibleModule(argument_spec=dict(stop_all=dict(type="bool", default=False), **chaos.TARGET_ARGS),
                           supports_check_mode=True)
    live = chaos.live_runs(module)
    records = sorted(glob.glob(os.path.join(chaos.run_root(module), "fleet", "*.json")))
    fleet_ids = []
    for path in records:
        run_id = (chaos.read_record(path) or {}).get("run_id")
        if run_id:
            fleet_ids.append(run_id)
    targets = sorted(live) if module.params["stop_all"] else [r for r in fleet_ids if r in live]
    if module.check_mode:
        _, report, _ = chaos.run_json(module, ["sweep", "--dry-run", "--json"])
        module.exit_json(changed=bool(targets or (report or {}).get("dead_runs") or records), stopped=targets,
                         swept=report or {})
    stopped = []
    for path in records:
        chaos.remove(path[:-len(".json")] + ".heartbeat")
    if targets:
        _, outcomes, _ = chaos.run_json(module, ["stop", "--json"] + targets, check_rc=False)
        stopped = [o.get("run_id") for o in (outcomes or [])]
    _, report, err = chaos.run_json(module, ["sweep", "--json"], check_rc=False)
    for path in records:
        chaos.remove(path)
    left = [r for r in chaos.live_runs(module) if r in targets]
    if left:
        module.fail_json(msg="runs still live after stop: %s" % ", ".join(left), stopped=stopped, swept=report)
    report = report or {}
    changed = bool(stopped or records or report.get("swept_runs") or report.get("removed"))
    if report.get("failures"):
        module.fail_json(msg="sweep could not remove everything", swept=report, stopped=stopped)
    module.exit_json(changed=changed, stopped=stopped, swept=report)


if __name__ == "__main__":
    main()
