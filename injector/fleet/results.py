"""A fleet run's results (pure but for writing files): per-host verdicts, the merged record, the run directory.

One fault on a fleet gives one record (``result_json``): the flows, the blast-radius choices (which hosts, why),
one row per host (state, counters, totals, verdict) and the overall verdict. The CLI's fleet inject writes one;
a fleet experiment writes the records of each of its faults (``write_experiment_fleet_files``).
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_json_atomic
from .plan import FleetPlan

__all__ = ["counters_csv", "format_fleet_result", "host_verdict", "overall_verdict", "result_json", "totals",
           "write_experiment_fleet_files", "write_fleet_run_dir"]


def totals(counters: dict) -> dict[str, int]:
    """Sum of every rule's numeric counters."""
    out: dict[str, int] = {}
    for rule in (counters or {}).values():
        if isinstance(rule, dict):
            for key, value in rule.items():
                if isinstance(value, (int, float)):
                    out[key] = out.get(key, 0) + int(value)
    return out


def host_verdict(outcome_status: str, res: dict) -> str:
    """ok: the run ran and its rules matched packets; no-effect: it ran but matched none; failed otherwise."""
    if outcome_status != "ok":
        return "failed"
    state = res.get("run_state")
    if state in ("failed", "gone", None):
        return "failed"
    if state == "planned":
        return "planned"
    return "ok" if totals(res.get("counters") or {}).get("matched_packets", 0) > 0 else "no-effect"


def overall_verdict(verdicts: list[str], *, dry_run: bool = False) -> str:
    """planned (a dry run), failed (any host failed), no-effect (every host), partial (some), else ok."""
    verdicts = [v for v in verdicts if v != "not-run"]
    return ("planned" if dry_run else "failed" if "failed" in verdicts else
            "no-effect" if verdicts and all(v == "no-effect" for v in verdicts) else
            "partial" if "no-effect" in verdicts else "ok")


def result_json(name, plan: FleetPlan, outcomes, *, dry_run: bool = False, left_out=(), stopped_by=None) -> dict:
    """The record of one fleet fault; ``outcomes``: host -> HostOutcome of its last round (the final one)."""
    hosts = []
    for host in plan.hosts:
        out = outcomes.get(host)
        if out is None:
            hosts.append({"host": host, "status": "left-out", "verdict": "not-run"})
            continue
        res = out.result
        hosts.append({"host": host, "address": plan.addresses.get(host), "status": out.status,
                      "run_id": res.get("run_id"), "state": res.get("run_state"),
                      "stop_reason": res.get("stop_reason"), "flows": list(plan.assignments[host]),
                      "counters": res.get("counters") or {}, "totals": totals(res.get("counters") or {}),
                      "plan": res.get("plan"), "message": None if out.status == "ok" else out.message,
                      "verdict": host_verdict(out.status, res)})
    return {"fleet_run": name, "flows": list(plan.flows), "stopped_by": stopped_by, "left_out": list(left_out),
            "choices": [{"group": c.group, "members": list(c.members), "chosen": list(c.chosen), "why": c.why}
                        for c in plan.choices],
            "why": [c.describe() for c in plan.choices] or [
                "every host of the flows' source group(s) (no blast radius over hosts: --percent / --count)"],
            "hosts": hosts, "verdict": overall_verdict([h["verdict"] for h in hosts], dry_run=dry_run)}


def format_fleet_result(result: dict) -> str:
    lines = [f"fleet run {result['fleet_run']}: verdict {result['verdict']}"
             + (f" (stopped by {result['stopped_by']}; every host rolled back)" if result["stopped_by"] else "")]
    for h in result["hosts"]:
        t = h.get("totals", {})
        lines.append(f"  {h['host']:<12} {h['verdict']:<9} {h.get('state') or h['status']:<10} run "
                     f"{h.get('run_id') or '-'}  matched {t.get('matched_packets', 0)} dropped "
                     f"{t.get('dropped_packets', 0)} delayed {t.get('delayed_packets', 0)}"
                     + (f"  ({h['message']})" if h.get("message") else ""))
    if result["left_out"]:
        lines.append(f"  left out (unreachable at the start): {', '.join(result['left_out'])}")
    return "\n".join(lines)


def counters_csv(results: list[dict], *, with_run: bool = False) -> str:
    """One row per host and rule (``host,rule,<counters>``; ``host,fleet_run,rule,...`` with ``with_run``)."""
    keys = sorted({k for r in results for h in r["hosts"] for rule in (h.get("counters") or {}).values()
                   if isinstance(rule, dict) for k in rule})
    rows = [("host,fleet_run,rule," if with_run else "host,rule,") + ",".join(keys)]
    for r in results:
        for h in r["hosts"]:
            for rule_id, counters in sorted((h.get("counters") or {}).items()):
                lead = f"{h['host']},{r['fleet_run']}," if with_run else f"{h['host']},"
                rows.append(lead + f"{rule_id}," + ",".join(str(counters.get(k, 0)) for k in keys))
    return "\n".join(rows) + "\n"


def write_fleet_run_dir(path: str, result: dict) -> Path:
    """One run directory for the CLI's fleet inject: fleet.json (per-host and overall verdict) and counters.csv
    with a host column (one row per host and rule)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "fleet.json", result, dir_mode=0o755, sort_keys=False, default=str)
    (folder / "counters.csv").write_text(counters_csv([result]))
    return folder


def write_experiment_fleet_files(path: str | Path, results: list[dict], *, unstarted: list[str] = ()) -> dict:
    """An experiment's run directory gets its hosts: fleet.json (every fleet fault's record, the hosts that
    carried each and why, the overall verdict over them) and fleet-counters.csv (host, fleet run, rule).
    Returns what fleet.json holds."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    verdicts = [h["verdict"] for r in results for h in r["hosts"]]
    data = {"verdict": overall_verdict(verdicts) if results else "not-run",
            "hosts": sorted({h["host"] for r in results for h in r["hosts"] if h["verdict"] != "not-run"}),
            "faults": results, "refused": list(unstarted)}
    write_json_atomic(folder / "fleet.json", data, dir_mode=0o755, sort_keys=False, default=str)
    (folder / "fleet-counters.csv").write_text(counters_csv(results, with_run=True))
    return data
