#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see the chaos-inject repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: run_archive
short_description: Pack a chaos-inject run directory into one tar.gz, for ansible.builtin.fetch
options:
  path:
    description: "The run directory on the target."
    required: true
    type: path
  dest:
    description: "Where the archive goes (default PATH.tar.gz)."
    type: path
author: chaos-inject developers
"""

EXAMPLES = r"""
- chaosinject.fleet.run_archive: {path: /var/lib/chaos-runs/exp-42}
  register: packed
- ansible.builtin.fetch: {src: "{{ packed.archive }}", dest: "runs/{{ inventory_hostname }}/", flat: true}
"""

RETURN = r"""
archive:
  description: "The tar.gz on the target."
  type: str
  returned: always
files:
  description: "How many files it holds."
  type: int
  returned: always
"""

import os
import tarfile

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True), dest=dict(type="path")),
                           supports_check_mode=True)
    path = module.params["path"].rstrip("/")
    if not os.path.isdir(path):
        module.fail_json(msg="not a directory: %s" % path)
    dest = module.params["dest"] or path + ".tar.gz"
    files = sum(len(names) for _, _, names in os.walk(path))
    if module.check_mode:
        module.exit_json(changed=True, archive=dest, files=files)
    with tarfile.open(dest + ".tmp", "w:gz") as tar:
        tar.add(path, arcname=os.path.basename(path))
    os.rename(dest + ".tmp", dest)
    module.exit_json(changed=True, archive=dest, files=files)


if __name__ == "__main__":
    main()
