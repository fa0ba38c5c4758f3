#!/usr/bin/env bash
# api VM: the api service (python3 -m chaosinject.lab.api) and the inventory chaos-inject uses on this VM.
set -euo pipefail
here=/vagrant/vagrant/provision
bash "$here/render.sh" api
PYTHONPATH=/opt/chaos-inject/python python3 -m chaosinject.lab.definition render inventory --out /etc/chaos-inject
systemctl enable --now chaos-lab-api
