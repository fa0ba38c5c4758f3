#!/usr/bin/env bash
# prometheus VM: our Prometheus (scrapes the api every second), own storage under /var/lib/chaos-inject/lab.
set -euo pipefail
here=/vagrant/vagrant/provision
bash "$here/render.sh" prometheus
systemctl enable --now chaos-lab-prometheus
