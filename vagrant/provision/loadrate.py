"""The lab load generator's rate on the api VM, in one place for provision/load.sh and provision/experiment.py.

    python loadrate.py RATE        RATE: requests/s, or `auto`: the api's capacity measured here and the load at
                                   netlab.LOAD_FRACTION of it (as `chaos-inject lab up` does)

Writes the rate into the load generator's configuration (load.json) and the rate and why into RATE_NOTE, which
experiment.py reads. Under QEMU TCG the api serves a few requests/s, far below lab.json's 50/s, and a capacity
measured while a neighbour VM boots reads low: experiment.py measures again, with the load stopped, right before
the run (`remeasure`), unless the rate was set by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from chaosinject.lab.definition import load_definition
from chaosinject.lab.capacity import load_rate, measure_capacity
from chaosinject.lab.state import LabError

LOAD_CONF = Path("/etc/chaos-inject/lab/load/load.json")      # render.sh load
RATE_NOTE = Path("/etc/chaos-inject/lab/load/rate-note")       # "RATE why"
SET_BY_HAND = "set by CHAOS_LAB_LOAD_RATE"
LOAD_UNIT = "chaos-lab-load"


def measured_rate(url: str, tries: int = 60) -> tuple[float, str]:
    """(rate, why) from the api's capacity; the api may have just started (TCG: slow), so retry until it answers."""
    d = load_definition()
    last: Exception | None = None
    for _ in range(tries):
        try:
            cap = measure_capacity(url, int(d["api"].get("max_in_flight", 8)), min_s=5.0, max_s=20.0)
            return load_rate(cap, float(d["load"]["rate_per_s"]))
        except (LabError, OSError) as exc:  # not answering 200 yet (httpclient.get turns connection errors into
            last = exc                       # a reply without a status, measure_capacity into LabError)
            time.sleep(2)
    raise SystemExit(f"load: the api never answered {url}: {last}")


def write(rate: float, why: str) -> None:
    cfg = json.loads(LOAD_CONF.read_text())
    cfg["rate_per_s"] = rate
    LOAD_CONF.write_text(json.dumps(cfg, indent=2) + "\n")
    RATE_NOTE.write_text(f"{rate:g} {why}\n")


def current() -> tuple[float, str]:
    """The rate the load runs at and why (lab.json's when nothing was written)."""
    if RATE_NOTE.exists():
        rate, why = RATE_NOTE.read_text().split(None, 1)
        return float(rate), why.strip()
    return float(load_definition()["load"]["rate_per_s"]), "lab.json"


def remeasure() -> tuple[float, str]:
    """Measure again with the load stopped (all VMs up and idle now), write it, start the load again. A rate set
    by hand is kept."""
    rate, why = current()
    if SET_BY_HAND in why:
        return rate, why
    url = json.loads(LOAD_CONF.read_text())["url"]
    subprocess.run(["systemctl", "stop", LOAD_UNIT], check=True)
    try:
        rate, why = measured_rate(url)
        write(rate, why.replace("at lab up", "before the run"))
    finally:
        subprocess.run(["systemctl", "start", LOAD_UNIT], check=True)
    return current()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "auto":
        rate, why = measured_rate(json.loads(LOAD_CONF.read_text())["url"])
    else:
        try:
            rate, why = float(argv[0]), SET_BY_HAND
        except ValueError:
            print(f"load: CHAOS_LAB_LOAD_RATE must be a number of requests/s or auto, not {argv[0]!r}",
                  file=sys.stderr)
            return 2
        if rate <= 0:
            print(f"load: CHAOS_LAB_LOAD_RATE must be > 0, not {argv[0]!r}", file=sys.stderr)
            return 2
    write(rate, why)
    print(f"load: {rate:g} requests/s ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
