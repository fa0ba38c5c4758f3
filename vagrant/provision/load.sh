#!/usr/bin/env bash
# load (on the api VM, see README): the load generator; its request log is read on this VM, where chaos-inject
# runs, so request timestamps and the fault's phases share one CLOCK_MONOTONIC.
# Its rate: lab.json's, unless CHAOS_LAB_LOAD_RATE says otherwise: a number (requests/s), or `auto` (vagrant/lab.sh
# and the Vagrantfile's default): the api's capacity measured here first and the load at 40 % of it, as
# `chaos-inject lab up` does -- under QEMU TCG the api serves a few requests/s, far below lab.json's 50/s.
# provision/loadrate.py does it (experiment.py measures again before the run).
set -euo pipefail
here=/vagrant/vagrant/provision
bash "$here/render.sh" load
rate=${CHAOS_LAB_LOAD_RATE:-}
if [ -n "$rate" ]; then
  py=/opt/chaos-inject/venv/bin/python
  [ -x "$py" ] || py="env PYTHONPATH=/opt/chaos-inject/python python3"
  $py "$here/loadrate.py" "$rate"
fi
systemctl enable --now chaos-lab-load
