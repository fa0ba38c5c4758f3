# -*- coding: utf-8 -*-
# Apache-2.0 (see the chaos-inject repository)
"""What the chaosinject.fleet modules share: where a host keeps its state, and how its chaos-inject is called.

A host's state directory is ``state_dir``, else $CHAOS_INJECT_RUN_DIR, else /run/chaos-inject (the target's
ledger.run_root()). Fleet runs are remembered in ``<state dir>/fleet/<name>.json`` (the local run id of the fleet
run ``name``) beside the heartbeat file ``<name>.heartbeat`` that the controller renews.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import time

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")
# the target's chaos-inject and its state directory: documented once in doc_fragments/target.py
TARGET_ARGS = dict(executable=dict(type="str", default="chaos-inject"), state_dir=dict(type="path"))


def run_root(module):
    return module.params.get("state_dir") or os.environ.get("CHAOS_INJECT_RUN_DIR") or "/run/chaos-inject"


def fleet_paths(module, name):
    if not NAME_RE.match(name or ""):
        module.fail_json(msg="name must be letters, digits, _ . - (a fleet run's name): %r" % (name,))
    folder = os.path.join(run_root(module), "fleet")
    return folder, os.path.join(folder, name + ".json"), os.path.join(folder, name + ".heartbeat")


def command(module):
    exe = module.params.get("executable") or "chaos-inject"
    if os.path.isabs(exe):
        if not os.access(exe, os.X_OK):
            module.fail_json(msg="chaos-inject not found at %s (the install role puts it there)" % exe)
        return [exe]
    return [module.get_bin_path(exe, required=True)]


def environment(module):
    env = {}
    if module.params.get("state_dir"):
        env["CHAOS_INJECT_RUN_DIR"] = module.params["state_dir"]
    return env


def run_json(module, args, check_rc=True):
    """Run the target's chaos-inject with ``args``; its stdout parsed as JSON (rc, data, stderr)."""
    rc, out, err = module.run_command(command(module) + args, environ_update=environment(module))
    if rc != 0 and check_rc:
        module.fail_json(msg="chaos-inject %s failed (exit %d): %s" % (" ".join(args[:1]), rc, err.strip()),
                         rc=rc, stderr=err, stdout=out)
    try:
        data = json.loads(out) if out.strip() else None
    except ValueError:
        data = None
    return rc, data, err


def live_runs(module):
    """run id -> status entry of every run with a live owner on this host."""
    _, data, _ = run_json(module, ["status", "--json"])
    return dict((r.get("run_id"), r) for r in (data or []) if r.get("alive") and r.get("run_id"))


def live_status(module, run_id):
    """The status of a live run, read from its files (cheap: no chaos-inject process, which matters on every
    renewal): ``<state dir>/runs/<run id>.status.json`` while its owner process lives; else None."""
    if not run_id or "/" in run_id:
        return None
    runs = os.path.join(run_root(module), "runs")
    if not os.path.exists(os.path.join(runs, run_id + ".json")):
        return None                                     # no ledger: the run has ended
    status = read_record(os.path.join(runs, run_id + ".status.json"))
    if not status:
        return {"state": "pending"}
    try:
        os.kill(int(status.get("pid", 0)), 0)
    except (OSError, ValueError, TypeError):
        return None                                     # its owner is dead (sweep's business)
    return status


def request_stop(module, run_id):
    """Ask a run's owner to end it, as `chaos-inject stop RUN_ID` does (kernel/ledger.py Ledger.request_stop: the
    file ``<run id>.stop`` beside its ledger, read every 0.1 s) without a chaos-inject process on the target."""
    runs = os.path.join(run_root(module), "runs")
    ledger, stop = os.path.join(runs, run_id + ".json"), os.path.join(runs, run_id + ".stop")
    with open(stop, "w") as handle:
        handle.write("stopped")
    if not os.path.exists(ledger):      # it ended meanwhile, perhaps before our request came: nobody removes it
        remove(stop)


def wait_final(module, run_id, timeout_s=15.0):
    """After request_stop: wait until its owner has rolled back (ledger gone, or owner dead) and return its final
    record ({} if none came: an owner records it just after removing its ledger, so a short grace)."""
    runs = os.path.join(run_root(module), "runs")
    deadline = time.time() + timeout_s
    while time.time() < deadline and live_status(module, run_id):
        time.sleep(0.05)
    grace = time.time() + 2.0
    while True:
        final = final_record(module, run_id)
        if final or time.time() >= grace or os.path.exists(os.path.join(runs, run_id + ".json")):
            return final or {}
        time.sleep(0.02)


def final_record(module, run_id):
    path = os.path.join(run_root(module), "history", run_id + ".json")
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def read_record(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def write_record(path, data):
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o700)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, path)


def touch(path):
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o700)
    with open(path, "a"):
        pass
    os.utime(path, None)


def remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
