#!/usr/bin/env bash
# db VM: the lab's PostgreSQL cluster, initialised by the same script the netns lab runs (injector/lab/db-init.sh).
set -euo pipefail
here=/vagrant/vagrant/provision
bash "$here/render.sh" db
bash /vagrant/injector/lab/db-init.sh /var/lib/chaos-inject/lab/db /etc/chaos-inject/lab/db
systemctl enable --now chaos-lab-db
