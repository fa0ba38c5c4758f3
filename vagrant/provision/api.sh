#!/usr/bin/env bash
# api VM: the api service (python3 -m chaosinject.lab.api) and the inventory chaos-inject uses on this VM.
set -euo pipefail
here=/vagrant/vagrant/provision
bash "$here/render.sh" api
PYTHONPATH=/opt/chaos-inject/python python3 -m chaosinject.lab.definition render inventory --out /etc/chaos-inject
systemctl enable --now chaos-lab-api
# Warm the compiled-program cache: the first fault on a TCG VM compiles its BPF programs with bcc (90 s measured),
# which the experiment's fault action would otherwise spend inside its own phases. Exit 4: no packet matched in
# the second (nothing need flow yet) -- expected here.
if [ -x /usr/local/bin/chaos-inject ]; then
  t=$(date +%s); rc=0
  chaos-inject --flow 'api->db' --delay 1ms --duration 1s --engine netem >/tmp/chaos-inject-warmup.log 2>&1 || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 4 ]; then
    echo "chaos-inject: warm-up fault failed (exit $rc):"; tail -20 /tmp/chaos-inject-warmup.log; exit 1
  fi
  echo "chaos-inject: warm-up fault (api->db, netem, compiles the programs once): $(( $(date +%s) - t )) s, exit $rc"
fi
