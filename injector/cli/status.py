"""`chaos-inject status`: the live runs (faults, experiments, host faults) and the recently finished ones."""

from __future__ import annotations

import argparse
import json
import time

from .exits import EXIT_OK


def add_status_parser(sub) -> None:
    status = sub.add_parser("status", help="list active faults (state, counters) and recently finished runs")
    status.add_argument("--json", action="store_true")
    status.add_argument("--recent", type=int, metavar="N", help="also list the last N finished runs with their "
                        "final state (default: 5 in text, 0 with --json)")


def cmd_status(args: argparse.Namespace) -> int:
    from ..kernel.ledger import Ledger, describe

    runs = []
    for ledger in Ledger.all():
        status = ledger.read_status() or {}
        alive = ledger.owner_alive
        runs.append({"run_id": ledger.run_id, "pid": ledger.pid, "alive": alive,
                     "flows": ledger.meta.get("flows"), "engine": ledger.meta.get("engine"),
                     "kind": ledger.meta.get("kind", "cli"),
                     # the status file is written once the fault is active: before that, pending
                     "state": (status.get("state", "running") if status else "pending") if alive else "dead",
                     "objects": len(ledger.entries), "status": status,
                     **({} if alive else {"sweep_would": [describe(e) for e in reversed(ledger.entries)]})})
    from ..kernel.ledger import recent_finished

    recent = args.recent if args.recent is not None else (0 if args.json else 5)
    finished = recent_finished(recent) if recent > 0 else []
    from ..livestatus import live_experiments

    experiments = live_experiments()
    from ..kernel.ledger import stray_files

    strays = stray_files()  # files of no live run: sweep removes them
    if args.json:
        print(json.dumps(runs + [{"run_id": None, "alive": False, "stray_file": True, **s} for s in strays]
                         + [{"run_id": e["run_id"], "pid": e["pid"], "alive": True, "kind": "experiment",
                                  "state": e.get("state"), "status": e} for e in experiments]
                         + [{"run_id": f.get("run_id"), "alive": False, "finished": True,
                                  "kind": f.get("kind"), "state": f.get("state"), "status": f}
                                 for f in finished], indent=1))
        return EXIT_OK
    if not runs:
        print("no active faults")
    for e in experiments:
        print(f"{e['run_id']}  pid {e['pid']}  experiment  {e.get('state')} ({e.get('step')})  {e.get('title', '')}"
              + (f"  halt: {e['halt']}" if e.get("halt") else ""))
    for run in runs:
        st = run["status"]
        state = run["state"] if run["alive"] else "DEAD (its rules have expired; run `chaos-inject sweep`)"
        if run["kind"] == "fleet":  # a fleet controller's ledger: its faults are on the hosts it names
            state = ("controller running" if run["alive"] else
                     "DEAD controller (each host ends its fault on its heartbeat; `sweep --inventory` cleans)")
        if run["kind"] == "vm-lab":  # the VM lab's ledger (vagrant/lib/nslibvirt.sh): objects, no flows
            print(f"{run['run_id']}  pid {run['pid']}  vm-lab  {'up' if run['alive'] else state}  "
                  f"{run['objects']} objects (namespace, processes, work directory)")
        else:
            print(f"{run['run_id']}  pid {run['pid']}  {run['kind']}  {state}  flows {', '.join(run['flows'] or [])}  "
                  f"{st.get('fault', '')}")
        if not run["alive"]:
            for action in run.get("sweep_would", []):
                print(f"  sweep would: {action}")
        if st:
            print(f"  elapsed {st.get('elapsed_s', 0):.1f}s, remaining {st.get('remaining_s', 0):.1f}s")
            for rule in st.get("rules", []):
                c = st.get("counters", {}).get(str(rule["id"]), {})
                print(f"  #{rule['id']} {rule['match']} on {rule['interface']}: matched "
                      f"{c.get('matched_packets', 0)} dropped {c.get('dropped_packets', 0)} corrupted "
                      f"{c.get('corrupted_packets', 0)} duplicated {c.get('duplicated_packets', 0)}")
            for r in (st.get("recording") or {}).get("recorders", []):
                p50 = r.get("recent_p50_ms")
                print(f"  recording {r['source']}: {r['samples']} samples, lost {r['lost']}"
                      + (f", latest median {p50:.3f} ms" if p50 is not None else ""))
    for stray in strays:
        print(f"stray file {stray['path']} ({stray['why']}): `chaos-inject sweep` removes it")
    if finished:
        print("recently finished:")
        for f in finished:
            ended = time.strftime("%H:%M:%S", time.localtime(f.get("updated", 0)))
            what = f.get("fault") or f.get("title") or ""
            print(f"  {f.get('run_id')}  {f.get('kind', '')}  {f.get('state')}  at {ended}  {what}"
                  + (f"  ({f['error']})" if f.get("error") else ""))
    return EXIT_OK
