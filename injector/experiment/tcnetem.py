"""``tc ... netem`` process actions translated into owned chaos-inject faults (the command line is read by
tcparse.py; here: the settings, the check before a run, and the running).

The published seed injects with ``tc qdisc add dev eth0 root netem delay 5000ms`` and rolls back with
``tc qdisc del dev eth0 root``. Run literally, the first fails on a kernel without netem (and the experiment
"completes" with no fault: principle 1), and on a kernel with netem it replaces the operator's root qdisc,
which the rollback then deletes, whatever is there by then. So a process provider whose path is ``tc``
(or ends in ``/tc``) is read:

* ``qdisc add|replace dev IF root netem ARGS`` -> a chaos-inject fault on every packet leaving IF (netem
  sits on egress), through FaultSession with the best engine, bounded in time;
* ``qdisc change dev IF root netem ARGS`` -> our fault on IF restarted with the new arguments;
* ``qdisc del dev IF root`` -> stops the fault *we* started on IF; the interface's own qdisc is never
  touched;
* any other tc command runs literally.

Where IF lives: ``tc -n NS``, else ``configuration["chaos-inject"]["netns"]``, else the runner's own
namespace. ``configuration["chaos-inject"]["tc"] = "literal"`` (or ``chaos-inject run --literal-tc``) runs
every tc command as written. What we cannot honour (loss/corrupt/duplicate correlation, ``gap``, ``slot``,
``ecn``, rate overheads, netem under a parent class) is refused before anything runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Mapping

from ..errors import InvalidSpec
from ..spec.units import format_duration_ns, parse_duration_ns
from .tcparse import TcNetem, is_tc, parse_netem_args, parse_tc

__all__ = ["TcNetem", "TcSettings", "parse_tc", "parse_netem_args", "tc_settings", "run_translated",
           "DEFAULT_TC_DURATION", "is_tc"]

DEFAULT_TC_DURATION = "5m"     # a translated fault never outlives this (or chaos-inject.tc_duration)
CONF_KEY = "chaos-inject"


@dataclass(frozen=True)
class TcSettings:
    literal: bool = False
    netns: str | None = None
    duration: str = DEFAULT_TC_DURATION


def tc_settings(configuration: Mapping[str, Any], *, literal: bool = False, netns: str | None = None
                ) -> TcSettings:
    """``configuration["chaos-inject"]``: ``netns``, ``tc`` ("translate" | "literal"), ``tc_duration``."""
    block = configuration.get(CONF_KEY) if isinstance(configuration, Mapping) else None
    block = block if isinstance(block, Mapping) else {}
    mode = block.get("tc", "translate")
    if mode not in ("translate", "literal"):
        raise InvalidSpec("must be 'translate' or 'literal'", text=repr(mode), field=f"configuration.{CONF_KEY}.tc")
    duration = block.get("tc_duration", DEFAULT_TC_DURATION)
    parse_duration_ns(str(duration), field=f"configuration.{CONF_KEY}.tc_duration")
    return TcSettings(literal=literal or mode == "literal", netns=netns or block.get("netns") or None,
                      duration=str(duration))


# -- running -------------------------------------------------------------------------------------------------
_LOCK = threading.Lock()
_OURS: dict[tuple[str | None, str], Any] = {}     # (netns, interface) -> FaultSession this process started


def _start(cmd: TcNetem, settings: TcSettings, netns: str | None):
    from ..prepare import prepare
    from ..session import FaultSession
    from . import actions

    prepared = prepare(["*->*"], cmd.fault, interface=cmd.interface, netns=netns, direction="egress",
                       duration_ns=parse_duration_ns(settings.duration, field="tc_duration"), seed=cmd.seed)
    session = FaultSession(prepared.plan, kind="experiment",
                           extra_status={"engine_reason": prepared.why, "translated_from": cmd.text})
    session.start()
    actions.register_session(session)
    return session, prepared.why


def run_translated(cmd: TcNetem, settings: TcSettings) -> dict[str, Any]:
    """Act on ``cmd``; returns a process-like output ({status, stdout, stderr}) plus ``chaos-inject``
    (what was done). Raises InvalidSpec/Unsupported/ChaosInjectError when it could not be done."""
    from ..errors import ChaosInjectError
    from . import actions

    netns = cmd.netns or settings.netns
    key = (netns, cmd.interface)
    where = cmd.interface + (f" in netns {netns}" if netns else "")
    with _LOCK:
        current = _OURS.get(key)
        if current is not None and not current.active:
            _OURS.pop(key, None)
            current = None
    if cmd.verb == "del":
        if current is None:
            msg = (f"tc qdisc del -> nothing to remove: no chaos-inject fault on {where} (the interface's own "
                   "qdisc is left as it is)")
            return {"status": 0, "stdout": msg, "stderr": "", "chaos-inject": {"translated": cmd.text,
                                                                            "removed": None}}
        actions.stop_network_fault(current.run_id)
        with _LOCK:
            _OURS.pop(key, None)
        msg = f"tc qdisc del -> chaos-inject fault {current.run_id} on {where} removed"
        return {"status": 0, "stdout": msg, "stderr": "", "chaos-inject": {"translated": cmd.text,
                                                                        "removed": current.run_id}}
    if cmd.verb == "add" and current is not None:
        raise ChaosInjectError(f"a chaos-inject fault ({current.run_id}) is already on {where}: use 'change' or "
                               "'replace', or delete it first (tc: File exists)")
    if cmd.verb == "change" and current is None:
        raise ChaosInjectError(f"tc qdisc change: no chaos-inject netem fault on {where} to change")
    if current is not None:      # change / replace: the new arguments replace ours
        actions.stop_network_fault(current.run_id)
    session, why = _start(cmd, settings, netns)
    with _LOCK:
        _OURS[key] = session
    bound = format_duration_ns(session.plan.duration_ns)
    msg = (f"tc netem -> chaos-inject fault on {where} (engine {session.plan.engine}): "
           f"{cmd.fault.describe()}; run {session.run_id}; ends by itself after {bound} at the latest")
    return {"status": 0, "stdout": msg, "stderr": "",
            "chaos-inject": {"translated": cmd.text, "run_id": session.run_id, "engine": session.plan.engine,
                             "engine_reason": why, "interface": cmd.interface, "netns": netns,
                             "fault": cmd.fault.describe(), "bound": bound, "notes": list(cmd.notes)}}


def reset() -> None:
    """Forget interfaces whose faults ended (the runner calls this at the end of a run)."""
    with _LOCK:
        _OURS.clear()


def with_netns(cmd: TcNetem, netns: str | None) -> TcNetem:
    return replace(cmd, netns=cmd.netns or netns)


def check_experiment(exp, configuration: Mapping[str, Any], secrets: Mapping[str, Any], settings: TcSettings
                     ) -> list[tuple[str, TcNetem]]:
    """Every tc netem process activity of ``exp`` and what it becomes, before anything runs. Raises
    ExperimentInvalid listing every tc command we would refuse (nothing ran, nothing changed)."""
    from .loader import substitute
    from .spec import ExperimentInvalid, ProcessProvider

    if settings.literal:
        return []
    found: list[tuple[str, TcNetem]] = []
    errors: list[tuple[str, str]] = []
    for act in exp.activities():
        p = act.provider
        if not isinstance(p, ProcessProvider):
            continue
        exe = substitute(p.path, dict(configuration), dict(secrets))
        args = substitute(p.arguments if isinstance(p.arguments, str) else list(p.arguments), dict(configuration),
                          dict(secrets))
        try:
            cmd = parse_tc(str(exe), args)
        except InvalidSpec as exc:
            errors.append((f"{act.path}.provider.arguments", f"{exc} (or run tc as written: --literal-tc / "
                                                              f"configuration.{CONF_KEY}.tc = 'literal')"))
            continue
        if cmd is not None:
            found.append((act.path, with_netns(cmd, settings.netns)))
    if errors:
        raise ExperimentInvalid(errors)
    return found


def describe_translation(cmd: TcNetem, settings: TcSettings) -> str:
    where = cmd.interface + (f" in netns {cmd.netns}" if cmd.netns else "")
    if cmd.verb == "del":
        return f"tc qdisc del -> removes only the chaos-inject fault this run started on {where}"
    notes = "".join(f"; {n}" for n in cmd.notes)
    return (f"tc netem -> chaos-inject fault on {where} ({cmd.fault.describe()}, egress, engine chosen at run "
            f"time, at most {settings.duration}){notes}")
