#!/usr/bin/env bash
# Every lab VM: chaos-inject from the host's checkout, when its wheelhouse was synced in (vagrant/lab.sh sets
# CHAOS_INJECT_WHEELS; the local box has python3-venv, python3-bpfcc and the kernel headers): a venv that sees
# Debian's bcc, installed with no index (no route out needed), /usr/local/bin/chaos-inject. Without a wheelhouse
# (a laptop, public box): nothing here; `cd /vagrant && sudo make setup` installs it instead (README.md).
set -euo pipefail
wheels=/opt/chaos-inject/wheels venv=/opt/chaos-inject/venv
if ! ls "$wheels"/chaos_inject-*.whl >/dev/null 2>&1; then
  echo "chaos-inject: no wheelhouse in $wheels: not installed (cd /vagrant && sudo make setup installs it)"
  exit 0
fi
req=chaos-inject
ls "$wheels"/pandas-*.whl >/dev/null 2>&1 && req="chaos-inject[analysis]"    # recording runs (wheelhouse.sh DIR analysis)
python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install --quiet --no-index --no-compile --find-links "$wheels" "$req"
ln -sfn "$venv/bin/chaos-inject" /usr/local/bin/chaos-inject
echo "chaos-inject: $(chaos-inject --version) in $venv"
