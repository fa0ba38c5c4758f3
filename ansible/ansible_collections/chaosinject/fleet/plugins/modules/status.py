#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see the chaos-inject repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: status
short_description: "The runs of chaos-inject on this host (chaos-inject status --json), and its fleet runs"
options:
  name:
    description: "Only this fleet run."
    type: str
extends_documentation_fragment:
  - chaosinject.fleet.target
author: chaos-inject developers
"""

EXAMPLES = r"""
- chaosinject.fleet.status:
  register: st
"""

RETURN = r"""
runs:
  description: "Every live run (chaos-inject status --json)."
  type: list
  returned: always
fleet_runs:
  description: "Fleet run name: its local run id, whether it is alive, its state."
  type: dict
  returned: always
active:
  description: "Number of live runs."
  type: int
  returned: always
"""

import glob
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.chaosinject.fleet.plugins.module_utils import chaos


def main():
    module = AnsibleModule(argument_spec=dict(name=dict(type="str"), **chaos.TARGET_ARGS), supports_check_mode=True)
    _, data, _ = chaos.run_json(module, ["status", "--json"])
    runs = [r for r in (data or []) if r.get("alive")]
    live = dict((r["run_id"], r) for r in runs)
    fleet = {}
    for path in sorted(glob.glob(os.path.join(chaos.run_root(module), "fleet", "*.json"))):
        name = os.path.basename(path)[:-len(".json")]
        if module.params["name"] and name != module.params["name"]:
            continue
        record = chaos.read_record(path) or {}
        run_id = record.get("run_id")
        final = chaos.final_record(module, run_id) if run_id and run_id not in live else None
        fleet[name] = {"run_id": run_id, "alive": run_id in live,
                       "state": (live[run_id].get("state") if run_id in live else (final or {}).get("state"))}
    module.exit_json(changed=False, runs=runs, fleet_runs=fleet, active=len(runs))


if __name__ == "__main__":
    main()
