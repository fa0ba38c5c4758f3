#!/usr/bin/env bash
# load (on the api VM, see README): the load generator; its request log is read on this VM, where chaos-inject
# runs, so request timestamps and the fault's phases share one CLOCK_MONOTONIC.
set -euo pipefail
here=/vagrant/vagrant/provision
bash "$here/render.sh" load
systemctl enable --now chaos-lab-load
