"""`chaos-inject demo`: its parser, and the printing of a demo's result (what it measured, the verdicts, the
report). The demo itself is lab/db_timeout_demo.py (the seed's experiment on the netns lab) and, with
``--quick``, lab/quick_demo.py (a loss fault between two throwaway namespaces)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..lab.db_timeout_demo import DemoResult, phase_summary


def _say(line: str) -> None:
    print(line, flush=True)   # interleaves with the runner's progress on stderr


def print_measured(run_dir: Path, journal: dict, out) -> None:
    """What the run measured: the requests per phase, and the hold the delay engine measured per packet."""
    try:
        from chaosinject.analysis import load_run

        rows = phase_summary(load_run(run_dir).samples)
    except Exception as exc:  # noqa: BLE001 - the report is written; the summary is a courtesy
        out(f"samples: could not be read ({exc})")
        rows = []
    for r in rows:
        statuses = ", ".join(f"{n} x {code or 'no answer'}" for code, n in r["statuses"].items())
        out(f"  {r['phase']:<9} {r['requests']:>5} requests: {statuses}; median {r['median_ms']:.1f} ms")
    for f in journal["chaos-inject"].get("faults", []):
        for c in (f.get("counters") or {}).values():
            if isinstance(c, dict) and c.get("delay_p50_ns"):
                from ..summary import hold_clock

                held = c.get("delay_samples_seen") or c.get("delayed_packets", c.get("delayed", 0))
                out(f"  fault {f['fault']} on {', '.join(f['flows'])} ({f['engine']} engine): "
                    f"{held} packets held, measured hold p50 "
                    f"{c['delay_p50_ns'] / 1e6:.3f} ms, p99 {c['delay_p99_ns'] / 1e6:.3f} ms ({hold_clock(c)})")


def verdict_lines(run_dir: Path) -> list[str]:
    """The recorded samples' verdict (verdict.json), its phases and the time to recover, as lines."""
    try:
        v = json.loads((run_dir / "verdict.json").read_text())
    except (OSError, ValueError):
        return ["recorded samples: no verdict (no samples were recorded)"]
    recover = (v.get("recovery") or {}).get("recover_text")
    return [f"recorded samples: steady state {v['outcome'].upper()} ({v.get('spec_text', '')})"] + \
        [f"  {ph['summary']}" for ph in (v.get("phases") or {}).values()] + \
        ([f"  recovery: {recover}"] if recover else [])


def print_result(result: DemoResult, out=_say) -> None:
    """What the run measured, the recorded samples' verdict, the demo's one word and why, the report's path."""
    verdict, run_dir = result.verdict, result.run_dir
    ci = result.journal["chaos-inject"]
    out("measured:")
    print_measured(run_dir, result.journal, out)
    for line in verdict_lines(run_dir):
        out(line)
    why = (ci.get("reason") if verdict != "metastable" else None) or {
        "held": "the api answered 503, never 500, while the database timed out (the fault took effect), and "
                "the error rate was back under 1 %",
        "deviated": "the recorded samples violate the steady state (see above)",
        "inconclusive": "the probes held, but the recorded samples cannot confirm it (see above)",
        "metastable": "the lab did not recover after the fault was removed (it still failed at the end of the "
                      "recording): a metastable failure of the lab under its load, not a fault that never ended; "
                      "see the recovery line above"}.get(verdict, "")
    out(f"verdict: {verdict.upper()}" + (f": {why}" if why else ""))
    out(f"report: {run_dir / 'report.md'} (and report.html)")


def cmd_demo(args) -> int:
    if args.quick:
        from ..lab.quick_demo import run_demo

        return run_demo(loss=args.loss, duration=args.duration, rate_pps=args.rate)
    from ..lab.db_timeout_demo import Terminated, run_lab_demo
    from ..lab.state import LabSpec

    spec = LabSpec(prefix=args.lab_prefix, subnet=args.lab_subnet, state_dir=args.lab_state_dir)
    try:
        result = run_lab_demo(args.record, spec=spec, keep_lab=args.keep_lab, quiet=args.quiet)
    except Terminated as exc:     # (a KeyboardInterrupt: lab_up removes what it made and re-raises it)
        print(f"demo: {exc} (the lab was taken down if the demo brought it up)", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("demo: interrupted (the lab was taken down if the demo brought it up)", file=sys.stderr)
        return 130
    print_result(result)
    return result.exit_code


def add_demo_parser(sub) -> None:
    from ..lab.state import DEFAULT_STATE_DIR

    demo = sub.add_parser(
        "demo", help="the seed's experiment on the netns lab: delay api->db, 503 not 500, report (what `make demo` "
                     "runs); --quick: a loss fault between two throwaway namespaces",
        description="Brings the netns lab up (unless it is up), runs the seed's experiment 'API handles database "
                    "connection timeout' against it (per-flow delay on api->db past the api's database deadline; "
                    "the api must answer 503, never 500, and recover), writes a run directory with journal, "
                    "samples and report, prints the verdict, and takes the lab down again if it brought it up. "
                    "Exit code: 0 held (the probes and the recorded samples' verdict), 1 deviated/inconclusive/failed/"
                    "halted, 130/143 interrupted.")
    demo.add_argument("--record", type=Path, metavar="DIR",
                      help="run directory (default ./chaos-runs/demo-<time>)")
    demo.add_argument("--keep-lab", action="store_true", help="leave the lab up afterwards")
    demo.add_argument("-q", "--quiet", action="store_true", help="no live progress on stderr")
    demo.add_argument("--quick", action="store_true",
                      help="the quick demo instead: two namespaces, 10%% loss on one UDP flow, counters")
    demo.add_argument("--loss", default="10%", help="--quick: loss on the faulted flow")
    demo.add_argument("--duration", default="6s", help="--quick: how long")
    demo.add_argument("--rate", type=float, default=2000.0, help="--quick: packets per second per flow")
    demo.add_argument("--lab-prefix", default="cilab", help=argparse.SUPPRESS)       # parallel labs (tests)
    demo.add_argument("--lab-subnet", default="10.213.0.0/24", help=argparse.SUPPRESS)
    demo.add_argument("--lab-state-dir", type=Path, default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
