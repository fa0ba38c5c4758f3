"""``chaos-inject run EXPERIMENT``: argument parsing and presentation for the experiment runner
(experiment/runner.py)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..experiment.model import DRY_MODES, HYPOTHESIS_STRATEGIES, ROLLBACK_STRATEGIES

__all__ = ["add_run_parser", "cmd_run"]

RUN_EPILOG = """\
examples:
  sudo chaos-inject run experiment.json --dry-run
  sudo chaos-inject run experiment.yaml --var api_url=http://10.0.0.2:8080 --record runs/api-delay
  sudo chaos-inject run experiment.json --max-error-rate 1% --p99-ratio 1.5
  chaos-inject run fleet-delay.json --inventory hosts.yml --record runs/fleet   (faults on the hosts, via Ansible)

safety (where we differ from `chaos run`): an unsteady baseline aborts before anything is injected (exit 1,
no rollback: nothing was applied); once the method started, rollbacks always run on a halt, Ctrl-C, SIGTERM
and errors; the halt guard stops the run within a second of a breach (runbook defaults: error rate > 5 %,
p99 > 2x baseline), state `halted`. Exit codes: 0 completed, not deviated and the experiment's `verdict` block
(if any) held on the recorded samples, 1 otherwise, 2 invalid experiment, 130/143 interrupted (rollbacks ran).
"""


def add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="run a Chaos Toolkit experiment file (JSON or YAML)", epilog=RUN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", metavar="EXPERIMENT",
                   help="experiment file (.json, .yaml, .yml): Chaos Toolkit, Chaos Mesh manifests (NetworkChaos, "
                        "PodChaos, StressChaos) or an AWS FIS experiment template (translated; see --dry-run)")
    p.add_argument("--inventory", metavar="FILE",
                   help="hosts and their labels/tags for Chaos Mesh selectors and FIS resourceTags (default: "
                        "$CHAOS_INJECT_INVENTORY, /etc/chaos-inject/inventory.toml, the lab's); an Ansible "
                        "inventory (YAML or INI, not .toml) carries the method's network faults to its hosts")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the host picks (mode one, fixed-percent, COUNT, PERCENT; "
                   "with an Ansible inventory, --percent and --count)")
    fleet = p.add_argument_group("fleet (--inventory is an Ansible inventory: YAML or INI, not .toml)")
    fleet.add_argument("--percent", metavar="P", help="fault ceil(P%%) of the hosts of each flow's source group "
                       "(FIS PERCENT(P)), chosen with --seed")
    fleet.add_argument("--count", metavar="N", help="fault N hosts of each flow's source group (FIS COUNT(N))")
    fleet.add_argument("--allow-unreachable", action="store_true",
                       help="run on the reachable hosts when some are not (default: refuse the fault)")
    fleet.add_argument("--heartbeat-timeout", default="15s", metavar="DURATION",
                       help="a host ends its fault when the controller has not renewed it for this long "
                            "(default %(default)s; renewed every third)")
    p.add_argument("--prometheus-url", metavar="URL",
                   help="Prometheus for a FIS template's stop condition (default http://prometheus:9090)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (activities, resolved configuration, faults) and touch nothing")
    p.add_argument("--dry", choices=DRY_MODES, help="chaos run's dry modes: skip these activities")
    p.add_argument("--journal-path", metavar="FILE", help="also write the journal here")
    p.add_argument("--record", metavar="DIR",
                   help="run directory (journal, samples, report); default ./chaos-runs/<run id>")
    p.add_argument("--rollback-strategy", choices=ROLLBACK_STRATEGIES,
                   help="for normal ends; halts, signals and errors always roll back")
    p.add_argument("--hypothesis-strategy", choices=HYPOTHESIS_STRATEGIES)
    p.add_argument("--hypothesis-frequency", type=float, default=1.0, metavar="SECONDS",
                   help="period of the during-method hypothesis (default 1)")
    p.add_argument("--fail-fast", action="store_true", help="halt when the during-method hypothesis fails")
    p.add_argument("--var", action="append", metavar="KEY=VALUE", help="override a configuration value")
    p.add_argument("--var-file", action="append", metavar="FILE",
                   help="configuration values from a JSON/YAML mapping or a KEY=VALUE .env file (--var wins)")
    p.add_argument("--literal-tc", action="store_true",
                   help="run `tc ... netem` process actions as written (default: each becomes an owned "
                        "chaos-inject fault on that interface, and `tc qdisc del dev IF root` removes only ours)")
    p.add_argument("--tc-netns", metavar="NS",
                   help="network namespace of the interfaces tc commands name (default: configuration "
                        "chaos-inject.netns, else ours)")
    guard = p.add_argument_group("halt guard (overrides the experiment's chaos-inject extension)")
    guard.add_argument("--max-error-rate", metavar="P%", help="halt above this error rate (default 5%%)")
    guard.add_argument("--p99-ratio", type=float, metavar="X", help="halt when p99 > X x baseline (default 2)")
    guard.add_argument("--load-url", metavar="URL", help="built-in load generator: GET this URL during the run")
    guard.add_argument("--load-rate", type=float, default=50.0, metavar="N", help="requests per second")
    guard.add_argument("--load-timeout", default="1s", metavar="DURATION",
                       help="a request of the load that takes longer fails (default 1s; set it above the service's "
                            "own deadline, or the service's late answers count as the load's timeouts)")
    guard.add_argument("--no-guard", action="store_true", help="no halt guard (rollbacks still always run)")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress on stderr")


def _guard_from_args(exp, args):
    from ..spec.units import parse_percent_ratio
    from ..experiment.model import LoadSpec

    g = exp.guard
    if args.no_guard:
        return replace(g, enabled=False)
    if args.max_error_rate:
        g = replace(g, max_error_rate=parse_percent_ratio(args.max_error_rate, field="--max-error-rate"))
    if args.p99_ratio is not None:
        from ..errors import InvalidSpec

        if not args.p99_ratio > 1:
            raise InvalidSpec("must be > 1", text=str(args.p99_ratio), field="--p99-ratio")
        g = replace(g, latency_max_ratio=args.p99_ratio)
    if args.load_url:
        from ..spec.units import parse_duration_s

        g = replace(g, load=LoadSpec(args.load_url, args.load_rate,
                                     parse_duration_s(args.load_timeout, field="--load-timeout")))
    return g


FAULT_FUNCS = {"start_network_fault", "network_delay", "network_loss", "network_partition", "network_fault"}


def _dependence_line(dep: dict) -> str:
    """One line for the CLI: where the verdict found dependence in time order (intervals widened, effective n)
    or samples without time order; "" when every phase's samples were independent."""
    parts = []
    for phase, metrics in dep.items():
        for metric, d in metrics.items():
            if d.get("widened"):
                parts.append(f"{phase} {metric.replace('_', ' ')} effective n {d['n_eff']:.0f} of {d['n']} "
                             f"(dependent in time order: intervals widened)")
            elif not d.get("ordered", True) and metric == "latency":
                parts.append(f"{phase} {metric} without time order (treated as independent)")
    if not parts:
        return ""
    return "verdict dependence: " + "; ".join(parts)


def fault_flows(exp, conf: dict) -> list[list[str]]:
    """The flows of each of our network-fault actions in the method (resolved), in order."""
    from ..experiment.loader import substitute
    from ..experiment.model import PythonProvider, thaw

    out = []
    for act in exp.method:
        p = act.provider
        if isinstance(p, PythonProvider) and p.module == "chaosinject.experiment.actions" and p.func in FAULT_FUNCS:
            flow = substitute(thaw(p.arguments), conf).get("flow")
            if flow:
                out.append([flow] if isinstance(flow, str) else list(flow))
    return out


def describe_plan(exp, conf: dict, guard, warnings: list[str], tc_lines: dict | None = None) -> str:
    from ..experiment.loader import substitute
    from ..experiment.model import PythonProvider

    def thaw(v):   # what the run would pass: frozen spec values with ${name} resolved
        from ..experiment.model import thaw as _thaw

        return substitute(_thaw(v), conf)

    lines = [f"experiment: {exp.title}", f"  {exp.description}" if exp.description else ""]
    lines.append("configuration (resolved):")
    lines += [f"  {k} = {v!r}" for k, v in conf.items()] or ["  (none)"]
    for note in dict.fromkeys((*exp.notes, *warnings)):
        lines.append(f"note: {note}")

    def act(a, indent="  "):
        p = a.provider
        what = {"python": lambda: f"{p.module}.{p.func}({json.dumps(thaw(p.arguments))})",
                "process": lambda: f"{p.path} {thaw(p.arguments) if isinstance(p.arguments, str) else ' '.join(thaw(p.arguments))}",
                "http": lambda: f"{p.method} {thaw(p.url)}",
                "prometheus": lambda: f"{thaw(p.url)} {'range' if p.start else 'instant'} query {thaw(p.query)!r}"}[p.type]()
        tol = f"  tolerance {a.tolerance.kind}: {json.dumps(thaw(a.tolerance.raw))}" if a.tolerance else ""
        extra = (" [background]" if a.background else "") + (
            f" pauses {a.pauses.before or 0}/{a.pauses.after or 0}s" if a.pauses.before or a.pauses.after else "")
        fault = ""
        if isinstance(p, PythonProvider) and p.module == "chaosinject.experiment.actions":
            if p.func in FAULT_FUNCS:
                fault = "  <- FAULT: would apply " + ", ".join(f"{k}={v}" for k, v in thaw(p.arguments).items())
            else:
                fault = "  <- stops the faults this run started"
        elif isinstance(p, PythonProvider) and p.module == "chaosinject.experiment.hostactions":
            fault = "  <- HOST FAULT: would " + {"kill_hosts": "kill the processes in the hosts' netns",
                                                  "stress_cpu": "run CPU stress workers"}.get(p.func, p.func)
        if tc_lines and a.path in tc_lines:
            fault = f"  <- {tc_lines[a.path]}"
        return f"{indent}{a.type} {a.name}: {p.type} {what}{extra}{tol}{fault}"

    if exp.hypothesis:
        lines.append(f"steady-state hypothesis: {exp.hypothesis.title}")
        lines += [act(a) for a in exp.hypothesis.probes]
    lines.append("method:")
    lines += [act(a) for a in exp.method] or ["  (empty)"]
    lines.append("rollbacks:")
    lines += [act(a) for a in exp.rollbacks] or ["  (none)"]
    if guard.enabled:
        src = f"load {thaw(guard.load.url)} at {guard.load.rate_per_s:g}/s" if guard.load else "no live load source"
        lines.append(f"halt guard: error rate > {guard.max_error_rate}, p{guard.latency_quantile * 100:g} > "
                     f"{guard.latency_max_ratio}x baseline, alpha {guard.alpha:g}, every {guard.interval_s:g}s "
                     f"({src}" + (f"; prometheus {guard.prometheus_query!r} > {guard.prometheus_max:g}" if
                                   guard.prometheus_query else "") + ")")
    else:
        lines.append("halt guard: off")
    from ..experiment.report import verdict_spec

    spec, expect, origin = verdict_spec(exp.verdict, guard)
    lines.append(f"recorded-samples verdict: {spec.describe()}; expected: " + ", ".join(
        f"{p} {expect.get(p, 'steady')}" for p in ("baseline", "fault", "recovery")) + f" ({origin})")
    from ..record.experiment import record_errors

    record = record_errors(exp.extensions)[0]
    if record is not None:
        lines.append(record.describe())
    return "\n".join(line for line in lines if line != "")


def cmd_run(args, carrier=None) -> int:
    """``carrier`` (a FaultCarrier, e.g. the fleet's for an Ansible inventory): where the method's network faults
    are held; None: on this host."""
    from ..experiment.loader import check_environment, parse_vars, resolve_configuration
    from ..experiment.runner import RunOptions, run_experiment

    import os

    from ..experiment.foreign import load_any

    if carrier is None and (args.percent is not None or args.count is not None or args.allow_unreachable):
        from ..errors import InvalidSpec

        raise InvalidSpec("--percent, --count and --allow-unreachable choose hosts of an Ansible inventory "
                          "(--inventory hosts.yml)", field="inventory")
    if args.inventory and carrier is None:        # our actions resolve host names through the same inventory
        os.environ["CHAOS_INJECT_INVENTORY"] = str(Path(args.inventory).resolve())
    exp, kind, translation = load_any(args.experiment, inventory=None if carrier else args.inventory,
                                      seed=args.seed, prometheus_url=args.prometheus_url)
    if carrier is not None and kind != "chaos-toolkit":
        from ..errors import InvalidSpec

        raise InvalidSpec(f"a fleet (Ansible inventory) runs Chaos Toolkit experiments; this is {kind}",
                          text=str(args.experiment), field="inventory")
    if kind != "chaos-toolkit":
        exp = replace(exp, notes=(f"translated from {kind}: {args.experiment}", *translation, *exp.notes))
    guard = _guard_from_args(exp, args)
    from ..experiment.loader import read_var_file

    variables = {}
    for path in args.var_file or []:
        variables.update(read_var_file(path))
    variables.update(parse_vars(args.var))
    warnings = check_environment(exp)
    conf = resolve_configuration(exp, variables)
    from ..experiment import tcnetem
    from ..experiment.loader import resolve_secrets

    tc = tcnetem.tc_settings(conf, literal=args.literal_tc, netns=args.tc_netns)
    translated = tcnetem.check_experiment(exp, conf, resolve_secrets(exp), tc)
    if carrier is not None:
        from ..errors import InvalidSpec
        from ..experiment.model import ProcessProvider

        local = [a.path for a in exp.activities()
                 if isinstance(a.provider, ProcessProvider) and tcnetem.is_tc(str(a.provider.path))]
        if local:    # a tc command names an interface of the machine it runs on: here, the controller
            raise InvalidSpec("on a fleet (Ansible inventory) a network fault is our action "
                              "chaosinject.experiment.actions.start_network_fault (or network_delay...) with a flow "
                              "between inventory groups; tc commands would run on this controller: "
                              + ", ".join(local), field="inventory")
    if args.dry_run:
        print(describe_plan(exp, conf, guard, warnings,
                            {path: tcnetem.describe_translation(cmd, tc) for path, cmd in translated}))
        if carrier is not None:
            for flows in fault_flows(exp, conf):
                print(carrier.describe_plan(flows))
        print("dry run: nothing was run and nothing was changed")
        return 0
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    import time

    run_dir = Path(args.record) if args.record else Path("chaos-runs") / time.strftime("%Y%m%d-%H%M%S")
    opts = RunOptions(run_dir=run_dir, journal_path=Path(args.journal_path) if args.journal_path else None,
                      rollback_strategy=args.rollback_strategy, hypothesis_strategy=args.hypothesis_strategy,
                      hypothesis_frequency_s=args.hypothesis_frequency, fail_fast=args.fail_fast, dry=args.dry,
                      variables=variables, guard=guard, progress=progress, literal_tc=args.literal_tc,
                      tc_netns=args.tc_netns)
    if carrier is None:
        outcome = run_experiment(exp, opts)
    else:
        from ..experiment.carrier import carried_by

        try:
            with carried_by(carrier):
                outcome = run_experiment(exp, opts)
        finally:               # the runner removed them on every path already; whatever happened, again
            carrier.stop_all()
            fleet = carrier.write_run_files(run_dir)
        print(f"fleet: verdict {fleet['verdict']} over host(s) {', '.join(fleet['hosts']) or 'none'} "
              f"({run_dir}/fleet.json)")
    j = outcome.journal
    from ..experiment.report import _surprises

    for item in _surprises(j):   # e.g. a process action that exited non-zero still "succeeded" (chaoslib)
        print(f"surprising: {item}", file=sys.stderr)
    print(f"experiment {j['chaos-inject']['run_id']}: {outcome.state} (status {j['status']}, deviated "
          f"{str(j['deviated']).lower()}); {j['chaos-inject'].get('reason') or 'ran to the end'}; "
          f"report {outcome.run_dir}/report.md")
    dep = _dependence_line(j["chaos-inject"].get("verdict_dependence") or {})
    if dep:
        print(dep)
    return outcome.exit_code
