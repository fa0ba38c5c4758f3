#!/usr/bin/env bash
# Every lab VM: packages the lab's roles need (Debian's, like the netns lab), no system instances of them.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# the lab runs its own PostgreSQL/Prometheus (units chaos-lab-*): keep the packages' own services from starting
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
pkgs=(python3 python3-psycopg postgresql prometheus iproute2)
# the local box (vagrant/box/, packages.txt) has them all already: then no apt at all (no route out needed)
missing=$(for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
rm -f /usr/sbin/policy-rc.d
systemctl disable --now postgresql prometheus >/dev/null 2>&1 || true
install -d -m 0755 /etc/chaos-inject/lab /var/lib/chaos-inject/lab
# the import name chaosinject over the synced checkout, without installing it: a link named chaosinject to its
# injector/ folder (chaosinject/__init__.py then finds analysis/ beside it); render.sh and the units use this path
install -d -m 0755 /opt/chaos-inject/python && ln -sfn /vagrant/injector /opt/chaos-inject/python/chaosinject
