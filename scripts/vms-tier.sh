#!/usr/bin/env bash
# A VM tier of scripts/run-tests.sh (`make test`: vms-smoke) and of `make test-vms` (vms):
#   vms-tier.sh PYTEST_PATHS...
# As root it first installs what it needs (scripts/vagrant-setup.sh: vagrant, vagrant-libvirt, libvirt, QEMU,
# mmdebstrap; idempotent) and builds or reuses the local box (vagrant/box/build.sh, cached by its inputs), then runs
# the tests with CHAOS_INJECT_VM_TIER=1. A setup or box failure fails the tier (exit 1, with the reason); not root:
# the tests skip with their reason (run-tests.sh counts a tier that only skipped as a failure).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
py=$here/.venv/bin/python
if [ "$(id -u)" = 0 ]; then
  t=$(date +%s)
  bash scripts/vagrant-setup.sh || { echo "vms tier: scripts/vagrant-setup.sh failed"; exit 1; }
  box=$(bash vagrant/box/build.sh) || { echo "vms tier: the box build (vagrant/box/build.sh) failed"; exit 1; }
  echo "vms tier: setup and box ($box) in $(( $(date +%s) - t )) s"
fi
CHAOS_INJECT_VM_TIER=1 exec "$py" -m pytest "$@" -q -ra -p no:cacheprovider
