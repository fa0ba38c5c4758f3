#!/usr/bin/env bash
# Build the local Vagrant box (libvirt provider) from Debian 12 packages: `make vagrant-box`, as root.
#   usage: build.sh                 build (or reuse) the box; prints the .box path on stdout
#          build.sh --inputs-hash   print the hash of the inputs that name the cached box (no root needed)
#          build.sh --metadata      print the box's metadata.json (no root needed)
# The box: a root filesystem made by mmdebstrap (packages.txt: stock kernel linux-image-amd64 with sch_netem and
# sch_fq, openssh-server, sudo, python3 and everything vagrant/provision/common.sh installs), the user `vagrant`
# with Vagrant's insecure public key (taken from the installed vagrant package), written as an ext4 filesystem
# that fills the whole disk (no partition table, no bootloader) and converted to qcow2. The box's Vagrantfile
# boots the box's own vmlinuz/initrd.img with libvirt's direct kernel boot (Vagrantfile.box).
# Cache: .cache/vagrant-box/<inputs hash>/ (hash of this script, customize.sh, packages.txt, Vagrantfile.box, suite, size);
# a complete cached box is reused, any input change builds a new one. Packages come from the suite, its updates and
# its security archive (the current stable kernel). Env: BOX_CACHE, BOX_MIRROR, BOX_SECURITY_MIRROR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${BOX_CACHE:-$repo/.cache/vagrant-box}
suite=bookworm
size_gb=8                                  # virtual disk size (qcow2 is thin: the file holds only what is used)
box_name=chaos-inject/debian12
mirror=${BOX_MIRROR:-http://deb.debian.org/debian}
security_mirror=${BOX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
log() { printf '[vagrant-box] %s\n' "$*" >&2; }
die() { printf 'vagrant-box: %s\n' "$*" >&2; exit 1; }

packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$'; }

inputs_hash() {  # what the box is made of; the cache key
  { printf 'suite=%s size_gb=%s box=%s\n' "$suite" "$size_gb" "$box_name"
    for f in build.sh customize.sh packages.txt Vagrantfile.box; do printf '== %s\n' "$f"; cat "$here/$f"; done
  } | sha256sum | cut -c1-16
}

metadata() { printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$size_gb"; }

case "${1:-}" in
  --inputs-hash) inputs_hash; exit 0 ;;
  --metadata) metadata; exit 0 ;;
  --box-name) echo "$box_name"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--inputs-hash|--metadata|--box-name]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap builds the root filesystem as root)"
for tool in mmdebstrap mkfs.ext4 qemu-img tar; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install mmdebstrap e2fsprogs qemu-utils)"
done
key=""
for k in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /usr/share/vagrant/keys/vagrant.pub \
         /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub; do
  [ -s "$k" ] && { key=$k; break; }
done
[ -n "$key" ] || die "Vagrant's insecure public key (keys/vagrant.pub) not found: install the vagrant package"

hash=$(inputs_hash)
out=$cache/$hash
box=$out/chaos-inject-debian12.box
if [ -e "$out/.complete" ]; then
  log "cached: $box (inputs $hash)"
  echo "$box"; exit 0
fi

mkdir -p "$cache"
exec 8>"$cache/.build.lock"; flock 8              # one build at a time per cache
if [ -e "$out/.complete" ]; then echo "$box"; exit 0; fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT                         # a failed or interrupted build leaves nothing behind
t0=$(date +%s.%N)
root=$work/root
log "mmdebstrap $suite (+updates, security; $(packages | wc -l) packages) from $mirror"
# essential hook: initramfs-tools' settings before the kernel is installed (its initramfs is built once, with them);
# customize hook: the vagrant user, ssh, network, fstab; services the lab runs itself are disabled.
mmdebstrap --variant=apt --quiet \
  --aptopt='APT::Install-Recommends "false"' \
  --include="$(packages | paste -sd,)" \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "MODULES=most\nCOMPRESS=zstd\n" > "$1/etc/initramfs-tools/conf.d/chaos-box.conf"' \
  --customize-hook="$here/customize.sh \"\$1\" \"$key\"" \
  "$suite" "$root" "deb $mirror $suite main" "deb $mirror $suite-updates main" \
  "deb $security_mirror $suite-security main" >&2

kver=$(ls "$root/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
[ -n "$kver" ] && [ -s "$root/boot/initrd.img-$kver" ] || die "no kernel/initramfs in the built root filesystem"
mkdir -p "$work/box"
cp "$root/boot/vmlinuz-$kver" "$work/box/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/box/initrd.img"
cp "$here/Vagrantfile.box" "$work/box/Vagrantfile"
metadata > "$work/box/metadata.json"
log "ext4 filesystem (${size_gb} GiB virtual) -> qcow2"
truncate -s "${size_gb}G" "$work/root.raw"
mkfs.ext4 -q -F -L chaos-root -d "$root" "$work/root.raw"
rm -rf "$root"
qemu-img convert -O qcow2 "$work/root.raw" "$work/box/box.img"
rm -f "$work/root.raw"
(cd "$work/box" && tar -cf "$work/box.tar" metadata.json Vagrantfile vmlinuz initrd.img box.img)
mkdir -p "$work/out"
mv "$work/box.tar" "$work/out/chaos-inject-debian12.box"
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
printf '{"inputs_hash": "%s", "kernel": "%s", "box_name": "%s", "suite": "%s", "build_seconds": %s}\n' \
  "$hash" "$kver" "$box_name" "$suite" "$secs" > "$work/out/build.json"
touch "$work/out/.complete"
rm -rf "$out"; mv "$work/out" "$out"
# older boxes of this cache are superseded
for d in "$cache"/*/; do
  d=${d%/}; [ "$d" = "$out" ] || [ ! -e "$d/.complete" ] || { log "removing superseded $d"; rm -rf "$d"; }
done
log "built $box ($(du -h "$box" | cut -f1), kernel $kver) in $secs s"
echo "$box"
