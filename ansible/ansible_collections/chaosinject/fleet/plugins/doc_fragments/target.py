# -*- coding: utf-8 -*-
# Apache-2.0 (see the chaos-inject repository)
"""The options every chaosinject.fleet module that calls the target's chaos-inject takes (module_utils/chaos.py
TARGET_ARGS is their argument spec)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  executable:
    description: "The target's chaos-inject."
    type: str
    default: chaos-inject
  state_dir:
    description: "The target's state directory (CHAOS_INJECT_RUN_DIR)."
    type: path
"""
