#!/usr/bin/env bash
# Debian packages for `make vagrant-box` / `make vagrant-smoke` (as root, idempotent): the box builder
# (mmdebstrap, e2fsprogs, qemu-utils) and Vagrant with the libvirt provider on QEMU.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "vagrant-setup.sh must run as root (it installs apt packages)" >&2; exit 1; }
pkgs=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base
      mmdebstrap e2fsprogs iproute2 util-linux rsync)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[vagrant-setup] apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
