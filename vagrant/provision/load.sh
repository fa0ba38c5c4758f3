#!/usr/bin/env bash
# load (on the api VM, see README): the load generator; its request log is read on this VM, where chaos-inject
# runs, so request timestamps and the fault's phases share one CLOCK_MONOTONIC.
# Its rate: lab.json's, unless CHAOS_LAB_LOAD_RATE says otherwise: a number (requests/s), or `auto`: the api's
# capacity measured here first and the load at 40 % of it, as `chaos-inject lab up` does (netlab.measure_capacity,
# netlab.load_rate) -- under QEMU TCG the api serves a few requests/s, far below lab.json's 50/s.
set -euo pipefail
here=/vagrant/vagrant/provision
bash "$here/render.sh" load
conf=/etc/chaos-inject/lab/load/load.json
rate=${CHAOS_LAB_LOAD_RATE:-}
if [ -n "$rate" ]; then
  py=/opt/chaos-inject/venv/bin/python
  [ -x "$py" ] || py="env PYTHONPATH=/opt/chaos-inject/python python3"
  $py - "$conf" "$rate" <<'PY'
import json, sys
from pathlib import Path
from chaosinject.lab.definition import load_definition
conf, rate = Path(sys.argv[1]), sys.argv[2]
cfg = json.loads(conf.read_text())
if rate == "auto":
    from chaosinject.lab.netlab import measure_capacity, load_rate
    d = load_definition()
    url = cfg["url"]
    for _ in range(60):                     # the api has just started (TCG: slow)
        try:
            cap = measure_capacity(url, int(d["api"].get("max_in_flight", 8)), min_s=5.0, max_s=20.0)
            break
        except Exception as exc:            # not answering yet
            import time; time.sleep(2); last = exc
    else:
        sys.exit(f"load: the api never answered {url}: {last}")
    cfg["rate_per_s"], note = load_rate(cap, float(d["load"]["rate_per_s"]))
else:
    cfg["rate_per_s"], note = float(rate), "set by CHAOS_LAB_LOAD_RATE"
conf.write_text(json.dumps(cfg, indent=2) + "\n")
Path("/etc/chaos-inject/lab/load/rate-note").write_text(f"{cfg['rate_per_s']:g} {note}\n")
print(f"load: {cfg['rate_per_s']:g} requests/s ({note})")
PY
fi
systemctl enable --now chaos-lab-load
