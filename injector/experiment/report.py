"""The run directory of an experiment: samples (recorders), meta.json, counters.json, verdict.json and a
report (Markdown and HTML with plots from chaosinject.analysis.plots when samples exist), beside journal.json.

The report says what held, what failed and what was surprising, from the journal and the verdict.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from ..files import write_json_atomic
from .model import GuardSpec, VerdictSpec

__all__ = ["write_run_data", "write_report", "ReportParts", "render_markdown", "verdict_spec"]

log = logging.getLogger("chaos_inject.experiment")


def _counters(faults: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for f in faults:
        for rule, c in (f.get("counters") or {}).items():
            row = {}
            for k, v in c.items():
                if not isinstance(v, (int, float)) or v < 0:
                    continue
                name = "bytes" if k == "matched_bytes" else k.removesuffix("_packets")
                row[name] = int(v)
            out[f"{f['run_id']}#{rule}"] = row
    return out


def _achieved(fault: dict) -> list[str]:
    """What the kernel / engine counted per rule: matched, dropped, and the hold a delay engine measured."""
    out = []
    for rule, c in (fault.get("counters") or {}).items():
        if not isinstance(c, dict):
            continue
        parts = [f"{c[k]} {k.removesuffix('_packets')}" for k in ("matched_packets", "dropped_packets",
                                                                   "delayed_packets") if c.get(k)]
        if c.get("delay_p50_ns"):
            from ..summary import hold_clock

            ci = (f" (95 % CI of the median [{c['delay_p50_ci_low_ns'] / 1e6:.3f}, {c['delay_p50_ci_high_ns'] / 1e6:.3f}] ms)"
                  if "delay_p50_ci_low_ns" in c else "")
            n = f" over {c['delay_samples']} packets" if c.get("delay_samples") else ""
            parts.append(f"measured hold per packet{n}: p50 {c['delay_p50_ns'] / 1e6:.3f} ms{ci}, p99 "
                         f"{c.get('delay_p99_ns', 0) / 1e6:.3f} ms, {hold_clock(c)}")
        if parts:
            out.append(f"rule {rule}: " + ", ".join(parts))
    return out


def hosts_table(faults: list[dict]) -> list[str]:
    """The Hosts section (markdown lines) of faults carried to other hosts (a fleet: each fault's ``hosts``
    rows); [] when every fault was held here."""
    carried = [f for f in faults if f.get("hosts")]
    if not carried:
        return []
    lines = ["## Hosts", "", "| fault | host | address | state | verdict | matched | dropped | delayed | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in carried:
        for h in f["hosts"]:
            lines.append(f"| `{f['run_id']}` | {h['host']} | {h.get('address') or ''} | {h.get('state') or ''} | "
                         f"{h['verdict']} | {h.get('matched', 0)} | {h.get('dropped', 0)} | {h.get('delayed', 0)} | "
                         f"{(h.get('message') or '').replace('|', '/')} |")
    for f in carried:
        lines += [f"- `{f['run_id']}` hosts chosen: {c}" for c in f.get("choices", [])]
    return lines + [""]


def _surprises(journal: dict) -> list[str]:
    out = []
    ci = journal.get("chaos-inject", {})
    out.extend(ci.get("notes", []))
    for section in ("run", "rollbacks"):
        for run in journal.get(section, []):
            name = run["activity"].get("name")
            if run.get("status") == "failed":
                out.append(f"{section} activity {name!r} failed: {''.join(run.get('exception', [])).strip()[:300]}")
            out_ = run.get("output")
            if isinstance(out_, dict) and out_.get("status") not in (None, 0) and "stdout" in out_:
                out.append(f"process {name!r} exited with status {out_['status']}: {str(out_.get('stderr')).strip()[:200]}")
    for f in ci.get("faults", []):
        c = f.get("counters") or {}
        if c and not any(v.get("matched_packets") for v in c.values() if isinstance(v, dict)):
            out.append(f"fault {f['run_id']} ({f['fault']} on {', '.join(f['flows'])}) matched no packet")
    return out


def _held_failed(journal: dict) -> tuple[list[str], list[str]]:
    held, failed = [], []
    for phase in ("before", "after"):
        st = journal["steady_states"].get(phase)
        if not st:
            continue
        for p in st["probes"]:
            line = f"{phase}: probe {p['activity'].get('name')!r}: {p.get('tolerance_detail', p.get('status'))}"
            (held if p.get("tolerance_met") else failed).append(line)
    for i, st in enumerate(journal["steady_states"].get("during") or []):
        if st and not st.get("steady_state_met"):
            failed.append(f"during (iteration {i + 1}): steady state not met")
    ci = journal.get("chaos-inject", {})
    for item in ci.get("no_effect") or []:   # principle 1: no fault, no experiment
        failed.append(f"the fault did not take effect: {item}")
    if ci.get("verdict_declared"):          # the experiment's own question (its `verdict` block)
        outcome = ci.get("verdict") or "not judged (no samples)"
        (held if outcome == "held" else failed).append(f"the experiment's verdict on the recorded samples: {outcome}")
    return held, failed


def render_markdown(journal: dict, verdict_text: str | None, plots: list[str]) -> str:
    ci = journal.get("chaos-inject", {})
    exp = journal["experiment"]
    held, failed = _held_failed(journal)
    lines = [f"# {exp.get('title')}", "", exp.get("description", "") or "", "",
             f"- run: `{ci.get('run_id')}`  state **{ci.get('state')}**  (journal status `{journal['status']}`, "
             f"deviated {str(journal['deviated']).lower()}, exit code {ci.get('exit_code')})",
             f"- {ci.get('reason') or 'ran to the end'}",
             *([f"- recorded samples: steady state **{ci['verdict'].upper()}** (" + ", ".join(
                 f"{p} {o}" for p, o in (ci.get("verdict_phases") or {}).items()) + "; verdict below)"]
               if ci.get("verdict") else []),
             *[f"- {t}" for t in ((ci.get("recovery") or {}).get(k) for k in ("recover_text", "settle_text")) if t],
             f"- started {journal['start']}, took {journal.get('duration', 0):.1f} s; hypothesis strategy "
             f"{ci.get('hypothesis_strategy')}, rollback strategy {ci.get('rollback_strategy')}", ""]
    lines += ["## What held", ""] + ([f"- {h}" for h in held] or ["- (nothing checked)"]) + [""]
    lines += ["## What failed", ""] + ([f"- {f}" for f in failed] or ["- nothing"]) + [""]
    halt = ci.get("halt") or {}
    if halt.get("breach"):
        lines += [f"- **halted**: {halt['breach']}", ""]
    surprises = _surprises(journal)
    lines += ["## What was surprising", ""] + ([f"- {s}" for s in surprises] or ["- nothing noted"]) + [""]
    lines += ["## Activities", "", "| section | activity | status | duration (s) |", "|---|---|---|---|"]
    for section in ("run", "rollbacks"):
        for run in journal.get(section, []):
            lines.append(f"| {'method' if section == 'run' else 'rollback'} | {run['activity'].get('name')} | "
                         f"{run.get('status')} | {run.get('duration', 0):.3f} |")
    lines.append("")
    if ci.get("faults"):
        lines += ["## Faults applied", ""]
        for f in ci["faults"]:
            lines.append(f"- `{f['run_id']}` {f['fault']} on {', '.join(f['flows'])} ({f['engine']}), "
                         f"final state {f['state']}")
            lines += [f"  - {m}" for m in _achieved(f)]
        lines.append("")
        lines += hosts_table(ci["faults"])
    if halt:
        lines += ["## Halt guard", ""] + [f"- {n}" for n in halt.get("notes", [])]
        for k in ("error_rate", "latency"):
            if halt.get(k):
                lines.append(f"- {k}: {halt[k]}")
        lines.append("")
    recorded = (ci.get("recorders") or {}).get("record") or {}   # the extension's record block
    if recorded.get("shifts") or recorded.get("notes"):
        lines += ["## Measured latency shift per source (fault median - baseline median)", ""]
        lines += [f"- {s}" for s in recorded.get("shifts", [])] or ["- no samples in both phases"]
        lines += [f"- note: {n}" for n in recorded.get("notes", [])] + [""]
    if verdict_text:
        lines += ["## Recorded samples: steady-state verdict", "", "```", verdict_text, "```", ""]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    return "\n".join(lines)


def _md_to_html(md: str, run_dir: Path) -> str:
    out = ["<!doctype html><meta charset='utf-8'><title>chaos-inject experiment report</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 8px}pre{background:#f4f4f4;padding:1em}</style>"]
    in_pre = in_list = in_table = False
    for line in md.splitlines():
        if line.startswith("```"):
            out.append("</pre>" if in_pre else "<pre>")
            in_pre = not in_pre
            continue
        if in_pre:
            out.append(html.escape(line))
            continue
        if in_list and not line.startswith("- "):
            out.append("</ul>")
            in_list = False
        if in_table and not line.startswith("|"):
            out.append("</table>")
            in_table = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            text = html.escape(line[2:]).replace("**", "")
            out.append(f"<li>{text}</li>")
        elif line.startswith("|"):
            if set(line) <= set("|-"):
                continue
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
        elif line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            data = base64.b64encode((run_dir / name).read_bytes()).decode()
            out.append(f"<p><img alt='{html.escape(name)}' src='data:image/png;base64,{data}' width='100%'></p>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    if in_list:
        out.append("</ul>")
    if in_table:
        out.append("</table>")
    return "\n".join(out) + "\n"


def verdict_spec(verdict: VerdictSpec | None, guard: GuardSpec):
    """(SteadyStateSpec, expect per phase, where it came from) for the recorded-samples verdict: the
    experiment's ``verdict`` block over the guard-derived default (every phase steady, the guard's error
    rate, quantile and latency ratio, no absolute latency limit, error rate not higher than baseline)."""
    from chaosinject.analysis import SteadyStateSpec

    base = dict(quantile=guard.latency_quantile, latency_max_ns=None, max_error_rate=guard.max_error_rate,
                latency_max_ratio=guard.latency_max_ratio, error_rate_vs_baseline=True)
    if verdict is None:
        return SteadyStateSpec(**base), {}, "default: derived from the halt guard (no `verdict` block)"
    given = ", ".join(sorted(k.removesuffix("_ns") for k in verdict.settings)) or "none"
    return (SteadyStateSpec(**{**base, **verdict.settings}), dict(verdict.expect),
            f"the experiment's `verdict` block (fields given: {given}; the rest derived from the halt guard)")


@dataclasses.dataclass
class ReportParts:
    """What the report shows beyond the journal: the verdict's text and the plots' file names."""
    verdict_text: str | None = None
    plots: list[str] = dataclasses.field(default_factory=list)


def write_run_data(run_dir: Path, journal: dict, phases, recorders: list, faults: list[dict],
                   guard: GuardSpec, verdict: VerdictSpec | None = None) -> ReportParts:
    """Samples, meta.json, counters.json, verdict.json and the plots; the verdict's outcome goes into the
    journal (``chaos-inject.verdict``) before the run's outcome is decided and :func:`write_report` runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for rec in recorders:
        try:
            summaries[getattr(rec, "source", type(rec).__name__)] = rec.write(run_dir, phases)
        except Exception as exc:  # noqa: BLE001 - one broken recorder must not lose the journal
            log.error("recorder %r could not write: %s", rec, exc)
            summaries[type(rec).__name__] = {"error": str(exc)}
    ci = journal["chaos-inject"]
    ci["recorders"] = summaries
    verdict_text = None
    plots: list[str] = []
    has_samples = any((run_dir / "samples").glob("*.parquet")) if (run_dir / "samples").is_dir() else False
    if phases is not None and phases.starts:
        flows = sorted({fl for f in faults for fl in f["flows"]})
        meta = {"schema_version": 1, "run_id": ci["run_id"],
                "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
                "flow": ", ".join(flows), "fault": {"faults": [f["fault"] for f in faults]},
                "engine": faults[0]["engine"] if faults else "none", "kernel": os.uname().release, "seed": None,
                "phases": phases.windows(), "experiment": journal["experiment"].get("title"),
                "recorders": summaries}
        write_json_atomic(run_dir / "meta.json", meta, dir_mode=0o755, sort_keys=False)
        write_json_atomic(run_dir / "counters.json", _counters(faults), dir_mode=0o755, sort_keys=False)
    if has_samples:
        from chaosinject.analysis import evaluate, load_run, phases_from_run

        run = load_run(run_dir)
        spec, expect, origin = verdict_spec(verdict, guard)
        settle_ns = verdict.recovery_settle_ns if verdict else 0
        verdict = evaluate(phases_from_run(run, source=verdict.source if verdict else None, settle_ns=settle_ns),
                           spec, expect=expect)
        phase_lines = {p: verdict.phase_summary(p) for p in verdict.phases()}
        verdict_text = verdict.summary()
        spec_text = (f"spec: {spec.describe()}\nfrom: {origin}\nexpected: " +
                     ", ".join(f"{p} {verdict.expectation(p)}" for p in verdict.phases()))
        onset = ci.get("fault_onset")
        if onset:
            spec_text += (f"\nfault phase: from the fault's activation, {onset['seconds']:.3f} s after the method "
                          f"started; samples in between are in no phase (not judged)")
        rec = verdict.recovery
        if settle_ns:
            spec_text += (f"\nrecovery settle: {settle_ns / 1e9:g} s (the `verdict` block's recovery_settle): "
                          f"recovery samples in the first {settle_ns / 1e9:g} s after the fault's removal are "
                          f"measured, not judged")
        write_json_atomic(run_dir / "verdict.json",
            {"outcome": verdict.outcome.value, "spec": dataclasses.asdict(spec), "spec_from": origin,
             "spec_text": spec.describe(), "expect": {p: verdict.expectation(p) for p in verdict.phases()},
             "phases": {p: {"outcome": verdict.phase_outcome(p).value, "summary": phase_lines[p]}
                        for p in verdict.phases()},
             "checks": verdict.to_records(), "recovery": rec.to_record() if rec else None,
             "dependence": {p: {m: d.to_record() for m, d in ds.items()} for p, ds in verdict.dependence.items()}},
            dir_mode=0o755, sort_keys=False, default=str)
        ci["verdict"] = verdict.outcome.value
        if rec is not None:   # time to recover and what the settle window left out
            ci["recovery"] = rec.to_record()
        ci["verdict_phases"] = {p: verdict.phase_outcome(p).value for p in verdict.phases()}
        # n and effective n per phase and metric (the CLI's summary says when dependence widened an interval)
        ci["verdict_dependence"] = {p: {m: {"n": d.n, "n_eff": d.n_eff, "widened": d.applied, "ordered": d.ordered}
                                        for m, d in ds.items()} for p, ds in verdict.dependence.items()}
        verdict_text = spec_text + "\n\n" + verdict_text
        try:
            from chaosinject.analysis import plots as P

            for name, fig in (("latency_cdf.png", P.latency_cdf(run, verdict=verdict)),
                              ("latency_over_time.png", P.latency_over_time(run)),
                              # the dependence the verdict found per phase (autocorrelation of p99 exceedances)
                              ("dependence.png", P.dependence_figure(run, verdict=verdict))):
                fig.savefig(run_dir / name, dpi=80)
                plots.append(name)
        except Exception as exc:  # noqa: BLE001 - a plot problem leaves the text report
            log.warning("plots: %s", exc)
    return ReportParts(verdict_text, plots)


def write_report(run_dir: Path, journal: dict, parts: ReportParts) -> None:
    md = render_markdown(journal, parts.verdict_text, parts.plots)
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(_md_to_html(md, run_dir))
