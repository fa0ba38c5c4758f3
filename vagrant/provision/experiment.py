"""The seed's experiment (injector/lab/experiments/db-timeout.json, the shipped file, unedited) on the lab VMs,
run on the api VM as root by vagrant/lab.sh (`vagrant ssh api -c 'sudo chaos-inject-python experiment.py DIR'`):
the VMs' addresses come from lab.json's vagrant section (the experiment's configuration variables, as the netns
demo passes its own), `api->db` resolves through the VM's inventory (/etc/chaos-inject/inventory.toml, written by
provision/api.sh), the load generator's request log on this VM is the recorder, and the fault's engine is the one
`auto` picks on this stock kernel (netem for a delay; printed). The load's rate is measured again first, with the
load stopped and every VM up (provision/loadrate.py), and the baseline sized to hold ~600 requests at it. Prints the measured lines and `verdict: WORD`;
exit 0 only if the verdict is held.   usage: python experiment.py RUN_DIR
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from chaosinject.cli.demo import print_measured, verdict_lines
from chaosinject.experiment import load_experiment
from chaosinject.experiment.loader import resolve_configuration
from chaosinject.experiment.runner import RunOptions, run_experiment
from chaosinject.lab import db_timeout_demo
from chaosinject.lab.definition import load_definition, port, vagrant_addresses
from chaosinject.lab.requests import RequestLogRecorder

import loadrate       # beside this file (provision/)

REQUEST_LOG = "/var/lib/chaos-inject/lab/requests.bin"      # definition.py's render --log default (load.sh)
# The baseline holds ~600 requests (what the 1 % error-rate verdict needs) at the few requests/s a TCG api serves:
# at 2/s that is 300 s. The demo's 120 s cap would leave ~240 requests, too few to hold (one run ended INCONCLUSIVE).
MAX_BASELINE_S = 420.0


def say(line: str) -> None:
    print(line, flush=True)


def wait_for_metrics(prometheus_url: str, window: str, timeout_s: float = 120.0) -> None:
    query = urllib.parse.quote(f"sum(rate(http_requests_total[{window}]))")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?query={query}", timeout=5) as r:
                if json.load(r)["data"]["result"]:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"Prometheus at {prometheus_url} has no request rate after {timeout_s:g} s")
        time.sleep(1)


def main(run_dir: Path) -> int:
    d = load_definition()
    addrs = vagrant_addresses(d)
    api_url = f"http://{addrs['api']}:{port('api', d)}"
    prometheus_url = f"http://{addrs['prometheus']}:{port('prometheus', d)}"
    db_timeout_s = float(d["api"]["db_timeout_s"])
    exp = load_experiment(db_timeout_demo.experiment_path())
    rate, rate_why = loadrate.remeasure()
    probed = time.monotonic()          # the capacity probe's requests end here
    variables = {"api_url": api_url, "prometheus_url": prometheus_url, "db_delay": f"{max(2.0, 2 * db_timeout_s):g}s"}
    baseline_s, why = db_timeout_demo.baseline_for_rate(
        float(resolve_configuration(exp, variables)["baseline_s"]), rate, max_s=MAX_BASELINE_S)
    if why:
        variables["baseline_s"] = baseline_s
        say(f"baseline {baseline_s:g} s: {why}")
    conf = resolve_configuration(exp, variables)
    say(f"lab on VMs: api {api_url}, prometheus {prometheus_url}, load {rate:g} requests/s ({rate_why})")
    window = str(conf.get("rate_window", "10s"))
    wait_for_metrics(prometheus_url, window)
    db_timeout_demo.age_out_capacity_probe(window, time.monotonic() - probed, say)
    recorder = RequestLogRecorder(REQUEST_LOG)
    say(f"experiment: {exp.title} ({db_timeout_demo.experiment_path()})")
    say(f"run directory: {run_dir}")
    t = time.monotonic()
    outcome = run_experiment(exp, RunOptions(run_dir=run_dir, variables=variables, recorders=[recorder],
                                             sample_sources=[recorder], progress=say))
    say(f"experiment time: {time.monotonic() - t:.1f} s")
    verdict = db_timeout_demo.verdict_of(outcome)
    say("measured:")
    print_measured(run_dir, outcome.journal, say)
    for line in verdict_lines(run_dir):
        say(line)
    for f in outcome.journal["chaos-inject"].get("faults", []):
        say(f"fault: {f.get('fault')} on {', '.join(f.get('flows', []))}: engine {f.get('engine')}")
    say(f"verdict: {verdict.upper()}")
    say(f"report: {run_dir / 'report.md'}")
    return 0 if verdict == "held" else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
