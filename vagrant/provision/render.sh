#!/usr/bin/env bash
# Render one role's config + systemd unit with the generators the netns lab uses, install and start the unit.
#   render.sh ROLE
set -euo pipefail
role=$1
out=/etc/chaos-inject/lab/$role
PYTHONPATH=/opt/chaos-inject/python python3 -m chaosinject.lab.definition render "$role" --out "$out"
install -m 0644 "$out/chaos-lab-$role.service" /etc/systemd/system/
systemctl daemon-reload
