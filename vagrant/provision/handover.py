"""The api VM hands its load over to a controller elsewhere (vagrant/lab.sh, CHAOS_LAB_CONTROLLER=host): run
here as root (`sudo /opt/chaos-inject/venv/bin/python handover.py`), it measures the load's rate again with every
VM up (provision/loadrate.py), waits until Prometheus has the request rate and the capacity probe has left its
window (as experiment.py does), then stops this VM's load generator and prints one JSON line: the experiment's
configuration variables (the VMs' URLs, the delay, the baseline sized for the rate), the load's URL, rate and
timeout. The controller's own load (`chaos-inject run --load-url`) takes over at that rate:
its request samples are the experiment's recorded samples there, as the request log is here."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from chaosinject.experiment import load_experiment
from chaosinject.experiment.loader import resolve_configuration
from chaosinject.lab import db_timeout_demo
from chaosinject.lab.definition import load_definition, port, vagrant_addresses

import loadrate                                          # beside this file (provision/)
from experiment import MAX_BASELINE_S, wait_for_metrics


def main() -> int:
    d = load_definition()
    addrs = vagrant_addresses(d)
    api_url = f"http://{addrs['api']}:{port('api', d)}"
    prometheus_url = f"http://{addrs['prometheus']}:{port('prometheus', d)}"
    exp = load_experiment(db_timeout_demo.experiment_path())
    rate, rate_why = loadrate.remeasure()
    probed = time.monotonic()
    baseline_s, why = db_timeout_demo.baseline_for_rate(float(resolve_configuration(exp, {})["baseline_s"]), rate,
                                                        max_s=MAX_BASELINE_S)
    window = str(resolve_configuration(exp, {}).get("rate_window", "10s"))
    wait_for_metrics(prometheus_url, window)
    db_timeout_demo.age_out_capacity_probe(window, time.monotonic() - probed, lambda line: print(line, file=sys.stderr))
    subprocess.run(["systemctl", "stop", loadrate.LOAD_UNIT], check=True)
    variables = {"api_url": api_url, "prometheus_url": prometheus_url,
                 "db_delay": f"{max(2.0, 2 * float(d['api']['db_timeout_s'])):g}s", "baseline_s": baseline_s}
    # the load's timeout: the lab's own load generator's (longer than the api's database deadline, so the api's
    # 503s arrive as 503s, not as the client's timeouts)
    print(json.dumps({"vars": variables, "load_url": api_url + d["load"]["path"], "rate": rate,
                      "timeout_s": float(d["load"]["timeout_s"]),
                      "why": "; ".join(filter(None, (f"load {rate:g}/s: {rate_why}", why)))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
