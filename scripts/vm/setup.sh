#!/usr/bin/env bash
# Host packages the kernel test tier (scripts/vm/) needs. Idempotent; run as root.
#   qemu-system-x86  the VM (TCG here; KVM where a real one exists)
#   busybox-static   the guest's init shell inside the hand-made initramfs
#   cpio             packs that initramfs
#   kmod             depmod/modprobe for the unpacked guest kernel's modules
#   zstd xz-utils    to decompress modules if a kernel ships them compressed
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/vm/setup.sh must run as root (it installs apt packages)" >&2
  exit 1
fi

pkgs=(qemu-system-x86 busybox-static cpio kmod zstd xz-utils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[vm-setup] apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "[vm-setup] ok"
