"""Chaos Toolkit control: the chaos-inject extension's ``record`` and ``verdict`` blocks under the real ``chaos run``.

    "controls": [{"name": "chaos-inject",
                  "provider": {"type": "python", "module": "chaosinject.network.controls",
                               "arguments": {"run_dir": "./chaos-runs/my-run"}}}]   # optional

What ``chaos-inject run`` does around an experiment, as Chaos Toolkit control points: before the experiment the
recorders start (the extension's ``record`` block, and its built-in ``load``) and record a baseline (the
``record`` block's ``baseline``, else 2 s); the method is the fault phase (from when this process's first fault
became active), the recovery starts when the faults were removed (or the method ended) and is recorded for the
extension's ``recovery``. After the experiment the run directory is written (samples, verdict.json, report) and
the journal carries ``chaos-inject``: ``run_dir``, ``verdict``, ``verdict_phases``, phases, faults. A declared
``verdict`` that does not hold marks the journal deviated (chaos exits 1), as ``chaos-inject run`` exits 1.
Without ``run_dir`` the run directory is ``<experiments dir>/<run id>`` (``CHAOS_INJECT_RUN_DIR``).
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("chaos_inject.experiment")

__all__ = ["configure_control", "before_experiment_control", "before_method_control", "after_method_control",
           "after_experiment_control", "cleanup_control"]

_RUN: dict[str, Any] = {}   # the experiment in progress in this process (chaos run runs one)


def configure_control(configuration: dict | None = None, secrets: dict | None = None, run_dir: str | None = None,
                      **_: Any) -> None:
    _RUN.clear()
    _RUN.update(configuration=dict(configuration or {}), secrets=dict(secrets or {}), run_dir=run_dir)


def before_experiment_control(context: dict, configuration: dict | None = None, secrets: dict | None = None,
                              run_dir: str | None = None, **_: Any) -> None:
    from ..experiment.actions import session_mark
    from ..experiment.guard import resolve_guard
    from ..experiment.spec import parse_experiment
    from ..livestatus import experiments_dir
    from ..record.experiment import recording_for
    from ..record.store import Phases

    doc = {k: v for k, v in context.items() if k != "controls"}
    exp = parse_experiment(doc, source="chaos run")
    conf = dict(configuration or _RUN.get("configuration") or {})
    secrets = dict(secrets or _RUN.get("secrets") or {})
    guard = resolve_guard(exp.guard, conf, secrets)
    run_id = f"ctk-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    where = Path(run_dir or _RUN.get("run_dir") or experiments_dir() / run_id).resolve()
    where.mkdir(parents=True, exist_ok=True)
    recording = recording_for(exp)
    recorders: list[Any] = []
    if guard.load is not None:
        from ..experiment.http_load import HttpLoad

        recorders.append(HttpLoad(guard.load.url, guard.load.rate_per_s, timeout_s=guard.load.timeout_s,
                                  netns=guard.load.netns))
    phases = Phases()
    if recording is not None:
        recording.follow(phases)
        recorders.append(recording)
    _RUN.update(exp=exp, guard=guard, run_id=run_id, run_dir=where, recorders=[], phases=phases,
                mark=session_mark(), method=False, t0=time.monotonic())
    phases.mark("baseline")
    for rec in recorders:
        rec.start()
        _RUN["recorders"].append(rec)
    if _RUN["recorders"]:
        time.sleep(recording.spec.baseline_s if recording is not None else 2.0)


def before_method_control(context: dict, **_: Any) -> None:
    if "phases" in _RUN:
        _RUN["phases"].mark("fault")
        _RUN["method"] = True


def after_method_control(context: dict, state: Any = None, **_: Any) -> None:
    if "phases" not in _RUN:
        return
    from ..experiment.actions import started_sessions
    from ..experiment.effects import faults_removal_ns

    removal = faults_removal_ns(_RUN["phases"], started_sessions(_RUN["mark"]))
    if removal is not None:   # the method removed its faults itself: recovery from then on
        _RUN["phases"].close(removal[0])
        _RUN["phases"].mark("recovery", removal[1])
        _RUN["recovery_marked"] = True


def after_experiment_control(context: dict, state: dict, **_: Any) -> None:
    if "phases" not in _RUN or not isinstance(state, dict):
        return
    from ..experiment.actions import describe_session, started_sessions
    from ..experiment.report import write_report, write_run_data
    from ..experiment.effects import fault_starts_when_active, faults_removal_ns

    phases, guard, exp = _RUN["phases"], _RUN["guard"], _RUN["exp"]
    sessions = started_sessions(_RUN["mark"])
    if not _RUN.get("recovery_marked"):   # faults removed by the rollbacks (or none of ours)
        removal = faults_removal_ns(phases, sessions)
        if removal is not None:
            phases.close(removal[0])
            phases.mark("recovery", removal[1])
        else:
            phases.mark("recovery")
    onset = fault_starts_when_active(phases, sessions)
    try:
        if _RUN["recorders"] and _RUN["method"] and guard.recovery_s > 0:
            time.sleep(guard.recovery_s)
    finally:
        for rec in _RUN["recorders"]:
            try:
                rec.stop()
            except Exception as exc:  # noqa: BLE001 - the others still stop, the journal is still written
                log.error("recorder %r: %s", rec, exc)
        phases.close()
    faults = [describe_session(s) for s in sessions]
    run_dir: Path = _RUN["run_dir"]
    ci = state.setdefault("chaos-inject", {})
    ci.update({"run_id": _RUN["run_id"], "run_dir": str(run_dir), "state": state.get("status"), "notes": [],
               "faults": faults, "phases": phases.windows() if phases.starts else {}, "fault_onset": onset,
               "verdict_declared": exp.verdict is not None, "control": __name__})
    report = None
    try:
        report = write_run_data(run_dir, state, phases, _RUN["recorders"], faults, guard, exp.verdict)
    except Exception as exc:  # noqa: BLE001 - the journal still says what happened
        log.exception("writing the run directory failed")
        ci["report_error"] = f"{type(exc).__name__}: {exc}"
    outcome = ci.get("verdict")
    if exp.verdict is not None and state.get("status") == "completed" and outcome != "held":
        state["deviated"] = True   # the experiment's own question was not answered "held": chaos exits 1
        ci["reason"] = (f"the recorded samples' verdict is {outcome}" if outcome else
                        "the experiment's verdict was not judged (no recorded samples)")
    if report is not None:
        try:
            write_report(run_dir, state, report)
        except Exception as exc:  # noqa: BLE001
            log.exception("writing the report failed")
            ci["report_error"] = f"{type(exc).__name__}: {exc}"
    from ..experiment.journal import write_json

    write_json(run_dir / "journal.json", state)
    log.info("chaos-inject: run directory %s, verdict %s", run_dir, outcome)
    _RUN.clear()   # recorders stopped: nothing left for cleanup_control


def cleanup_control(**_: Any) -> None:
    for rec in _RUN.get("recorders", []):   # an experiment that ended before after_experiment_control
        try:
            rec.stop()
        except Exception:  # noqa: BLE001
            pass
    _RUN.clear()

