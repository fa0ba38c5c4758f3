#!/usr/bin/env bash
# mmdebstrap customize hook for the local Vagrant box (called by build.sh): ROOT KEY
#   ROOT  the box's root filesystem;  KEY  Vagrant's insecure public key (from the installed vagrant package)
set -euo pipefail
root=$1 key=$2
in_root() { chroot "$root" "$@"; }

echo chaos-box > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tchaos-box\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
# the whole disk is the root filesystem (build.sh: mkfs.ext4 -L chaos-root over the image)
printf 'LABEL=chaos-root / ext4 defaults,errors=remount-ro 0 1\n' > "$root/etc/fstab"
# each VM generates its own machine-id (DHCP client ids come from it) and ssh host keys at first boot
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
  > "$root/etc/systemd/system/ssh.service.d/host-keys.conf"
printf 'UseDNS no\n' > "$root/etc/ssh/sshd_config.d/vagrant.conf"

# DHCP on every ethernet interface (the management network); Vagrant writes its own files for private networks
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nUseDomains=yes\n' \
  > "$root/etc/systemd/network/99-dhcp.network"
in_root systemctl enable systemd-networkd ssh >/dev/null 2>&1
# the lab starts its own PostgreSQL and Prometheus (units chaos-lab-*): the packages' services stay off
in_root systemctl disable postgresql prometheus >/dev/null 2>&1 || true
in_root systemctl mask systemd-networkd-wait-online >/dev/null 2>&1   # boot does not wait for every link
# no console getty on tty1..6 under a headless VM; the serial console keeps one
in_root systemctl mask getty@tty1 >/dev/null 2>&1 || true

# the vagrant user: passwordless sudo, Vagrant's well-known insecure key (Vagrant replaces it on first `up`)
in_root useradd -m -s /bin/bash -U vagrant
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' > "$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
install -d -m 0700 -o "$(in_root id -u vagrant)" -g "$(in_root id -g vagrant)" "$root/home/vagrant/.ssh"
install -m 0600 -o "$(in_root id -u vagrant)" -g "$(in_root id -g vagrant)" "$key" "$root/home/vagrant/.ssh/authorized_keys"

# smaller image: no package caches or lists (provisioning installs nothing new: it is all here)
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
