"""The db-timeout demo (`chaos-inject demo`, what `sudo make demo` runs): the seed's experiment on the netns lab,
end to end.

The lab comes up if it is not (and goes down again at the end, on every exit path, Ctrl-C and SIGTERM
included; a lab that was already up is left as it was); ``experiments/db-timeout.json`` runs against it with
the lab's request log as recorder and halt-guard source; the run returns its verdict, exit code, run directory and
journal, which cli/demo.py prints. ``chaos-inject demo --quick`` is the older loss demo (``quick_demo.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import NotPermitted

EXPERIMENT = "db-timeout.json"


def experiment_path() -> Path:
    return Path(str(resources.files("chaosinject.lab") / "experiments" / EXPERIMENT))


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP outside the experiment's own handlers: unwind so the lab comes down."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def _terminate_as_exception():
    def handler(signum, frame):
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _wait_for_metrics(info, window: str, timeout_s: float = 20.0) -> None:
    """The seed's error-rate query needs two scrapes inside its window before it has a value."""
    from ..httpclient import prometheus_query
    from .state import LabError

    query = f"sum(rate(http_requests_total[{window}]))"
    deadline = time.monotonic() + timeout_s
    while not prometheus_query(info.prometheus_url, query):
        if time.monotonic() > deadline:
            raise LabError(f"Prometheus at {info.prometheus_url} has no request rate after {timeout_s:g} s")
        time.sleep(0.25)


SCRAPE_LAG_S = 3.0     # Prometheus scrapes every second; a rate over the window lags it by a scrape or two


def age_out_capacity_probe(window: str, since_probe_s: float, out) -> None:
    """The api's capacity was measured at full tilt ``since_probe_s`` seconds ago (by `lab up` just before the
    load started, or by the VM lab's `loadrate.remeasure()` before its run): those requests (and a 503 or two of
    a saturated api in a slow VM) are in the api's counters. The seed's error rate over ``window`` must judge the
    lab's load, not our probe of it: wait until the probe has left the window (window + one scrape lag)."""
    from ..spec import parse_duration_ns

    wait = parse_duration_ns(window, field="rate_window") / 1e9 + SCRAPE_LAG_S - since_probe_s
    if wait > 0:
        out(f"waiting {wait:.1f} s: the capacity measurement's requests leave the {window} error-rate window")
        time.sleep(wait)


MAX_BASELINE_S = 120.0


def baseline_for_rate(baseline_s: float, rate_per_s: float, *,
                      max_s: float = MAX_BASELINE_S) -> tuple[float, str]:
    """The experiment's baseline pause is sized for the definition's 50 requests/s (12 s: ~600 requests, what the
    1 % error-rate verdict needs, see its `why`). A lab whose load was lowered to its measured capacity gets the
    same number of requests in a longer pause (at most ``max_s``; the after-hypothesis waits as long, so the
    recovery grows with it); returns (seconds, why) with why "" when unchanged. The demo keeps MAX_BASELINE_S
    (a person waits for it); the VM lab, a few requests/s under TCG, allows more (vagrant/provision/experiment.py)."""
    from .definition import load_definition

    wanted = baseline_s * float(load_definition()["load"]["rate_per_s"])
    need = min(max_s, float(math.ceil(wanted / rate_per_s)))
    if need <= baseline_s:
        return baseline_s, ""
    return need, (f"{wanted:.0f} requests at {rate_per_s:g}/s (the load the lab's capacity allows)"
                  + (f", capped at {max_s:g} s" if need == max_s else ""))


def phase_summary(samples) -> list[dict]:
    """Per phase of the request samples: how many, which HTTP statuses (0: no answer), median latency."""
    df = samples[samples["source"].astype(str) == "request"]
    rows = []
    for phase in ("baseline", "fault", "recovery"):
        part = df[df["phase"].astype(str) == phase]
        if len(part):
            counts = part["status"].value_counts()
            rows.append({"phase": phase, "requests": len(part),
                         "statuses": {int(k): int(v) for k, v in sorted(counts.items())},
                         "median_ms": float(part["latency_ns"].median()) / 1e6})
    return rows


@dataclass
class DemoResult:
    exit_code: int
    verdict: str            # held | deviated | metastable | inconclusive | halted | failed | stopped
    run_dir: Path
    journal: dict           # the experiment's journal (its chaos-inject block: faults, reason, recovery)


def verdict_of(outcome) -> str:
    """The demo's one word: the experiment's outcome, and for a run that completed and held, the recorded
    samples' verdict too (verdict.json): held only if both held, so the printed verdict and the report agree."""
    j = outcome.journal
    if outcome.state != "completed":
        return outcome.state
    if j["deviated"] and not (j["chaos-inject"].get("recovery") or {}).get("metastable"):
        return "deviated"
    if (j["chaos-inject"].get("recovery") or {}).get("metastable"):
        return "metastable"     # the fault was removed and the lab still failed at the end: not the fault's doing
    samples = j["chaos-inject"].get("verdict")
    return {"held": "held", "violated": "deviated"}.get(samples, "inconclusive")


def _say(line: str) -> None:
    print(line, flush=True)   # interleaves with the runner's progress on stderr


def run_lab_demo(run_dir: Path | None = None, *, spec=None, keep_lab: bool = False, quiet: bool = False,
                 out=_say) -> DemoResult:
    from ..experiment import load_experiment
    from ..experiment.loader import resolve_configuration
    from ..experiment.runner import RunOptions, run_experiment
    from ..spec.inventory import INVENTORY_ENV
    from .netlab import lab_down, lab_ledger, lab_status, lab_up
    from .requests import RequestLogRecorder
    from .state import LabSpec

    if os.geteuid() != 0:
        raise NotPermitted("the demo builds the netns lab (namespaces, PostgreSQL, Prometheus): run it as root "
                           "(sudo make demo)")
    spec = spec or LabSpec()
    exp = load_experiment(experiment_path())     # a broken file fails here, before the lab is touched
    run_dir = Path(run_dir) if run_dir else Path("chaos-runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and any(run_dir.iterdir()):
        from ..errors import InvalidSpec

        raise InvalidSpec("run directory exists and is not empty", text=str(run_dir), field="--record")
    progress = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with _terminate_as_exception(), contextlib.ExitStack() as holds:
        was_up = lab_status(spec).up
        if not (was_up or keep_lab):
            holds.enter_context(lab_ledger(spec))   # killed (-9) with the lab it brought up: sweep takes it down
        started = time.monotonic()
        if was_up:
            out(f"lab {spec.prefix}: already up, used as it is (and left up)")
        else:
            out(f"lab {spec.prefix}: bringing it up (namespaces, PostgreSQL, api, Prometheus, load generator)")
        try:
            info = lab_up(spec)
            lab_ready = time.monotonic()
            if not was_up:
                out(f"lab up in {time.monotonic() - started:.1f} s: api {info.api_url}, prometheus "
                    f"{info.prometheus_url}, load {info.load_text()}, db timeout {info.db_timeout_s:g} s")
            variables = {"api_url": info.api_url, "prometheus_url": info.prometheus_url,
                         # past the api's deadline, whatever the lab was started with
                         "db_delay": f"{max(2.0, 2 * info.db_timeout_s):g}s"}
            baseline_s, why_longer = baseline_for_rate(float(resolve_configuration(exp, variables)["baseline_s"]),
                                                       info.load_rate_per_s)
            if why_longer:
                variables["baseline_s"] = baseline_s
                out(f"baseline {baseline_s:g} s: {why_longer}")
            conf = resolve_configuration(exp, variables)
            if not was_up:
                since_probe = sum(info.timings_s.get(k, 0.0) for k in ("load_start", "first_scrape")) \
                    + time.monotonic() - lab_ready
                age_out_capacity_probe(str(conf.get("rate_window", "10s")), since_probe, out)
            _wait_for_metrics(info, str(conf.get("rate_window", "10s")))
            recorder = RequestLogRecorder(info.request_log)
            out(f"experiment: {exp.title} ({experiment_path()})")
            out(f"run directory: {run_dir}")
            with _env(INVENTORY_ENV, info.inventory_path):   # api->db resolves to this lab's addresses
                outcome = run_experiment(exp, RunOptions(run_dir=run_dir, variables=variables,
                                                         recorders=[recorder], sample_sources=[recorder],
                                                         progress=progress))
        finally:
            if not (was_up or keep_lab):
                with _no_signals():
                    lab_down(spec)
                out(f"lab {spec.prefix}: taken down")
    verdict = verdict_of(outcome)
    code = outcome.exit_code if outcome.exit_code or verdict == "held" else 1
    return DemoResult(code, verdict, run_dir, outcome.journal)


@contextlib.contextmanager
def _no_signals():
    """Taking the lab down is not interrupted by a second Ctrl-C or SIGTERM (it takes ~0.5 s)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
