#!/usr/bin/env bash
# Idempotent host set-up for chaos-inject on Debian 12, as root:
# apt packages, kernel headers for bcc, and the project venv.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
headers_root=${CHAOS_INJECT_HEADERS_ROOT:-/var/cache/chaos-inject/headers}
stamp=$venv/.installed-$(sha256sum "$here/pyproject.toml" | cut -c1-16)

log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host.sh must run as root (it installs apt packages)" >&2
  exit 1
fi

apt_packages=(
  python3-bpfcc python3-venv python3-dev   # real bcc lives in Debian, for /usr/bin/python3
  iproute2 kmod iputils-ping bpftool iptables ethtool nftables   # nftables: the userspace delay engine
  prometheus   # experiment tests run a real Prometheus (our own binary invocation; the service is not used)
  postgresql python3-psycopg   # the netns lab's db and the api's driver (`chaos-inject lab up` runs its own instances)
  chromium   # headless browser: the host tier opens JupyterLab on a run and the HTML report
  openssh-server   # the fleet tier's hosts: a real sshd per test namespace (the system service is not used)
  ruby   # `ruby -c` syntax-checks vagrant/Vagrantfile in the unit tier (vagrant itself is not needed)
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  # packages with services (prometheus, postgresql) must not start system instances: the lab runs its own.
  # policy-rc.d 101 = "do not start" for invoke-rc.d/deb-systemd-invoke; ours only if none exists.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "${own_policy:-}" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  if [ -d /run/systemd/system ]; then   # ... nor at the next boot, for the ones installed just now
    for unit in prometheus postgresql ssh; do
      printf '%s\n' "${missing[@]}" | grep -qx "${unit/#ssh/openssh-server}" && systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi

# Kernel headers for bcc: the distribution's package for this kernel when it exists,
# else Debian's headers (amd64 + common) merged into one tree that chaosinject.kernel.headers finds.
kver=$(uname -r)
if [ -e "/lib/modules/$kver/build/include" ]; then
  log "kernel headers: /lib/modules/$kver/build"
elif apt-get install -y -qq "linux-headers-$kver" >/dev/null 2>&1; then
  log "kernel headers: installed linux-headers-$kver"
else
  meta=$(apt-cache depends linux-headers-amd64 2>/dev/null | awk '/Depends: linux-headers-/{print $2; exit}')
  if [ -z "$meta" ]; then apt-get update -qq; meta=$(apt-cache depends linux-headers-amd64 | awk '/Depends: linux-headers-/{print $2; exit}'); fi
  hver=${meta#linux-headers-}            # e.g. 6.1.0-56-amd64
  dest=$headers_root/$hver
  if [ -e "$dest/include/linux/kconfig.h" ] && [ -e "$dest/include/generated/autoconf.h" ]; then
    log "kernel headers: $dest (cached)"
  else
    log "kernel headers: merging Debian linux-headers-$hver and -common into $dest"
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -qq "linux-headers-$hver" "linux-headers-${hver%-amd64}-common" 2>/dev/null)
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
    rm -rf "$dest.new"; mkdir -p "$dest.new"
    # -common carries the source headers, -amd64 the generated config; copy both into one tree
    cp -a "$tmp/x/usr/src/linux-headers-${hver%-amd64}-common/." "$dest.new/"
    cp -a --remove-destination "$tmp/x/usr/src/linux-headers-$hver/." "$dest.new/"
    rm -rf "$dest"; mv "$dest.new" "$dest"
  fi
fi

# the kernel test tier's host packages (QEMU, busybox, cpio, ...)
bash "$here/scripts/vm/setup.sh"

# tracefs for tracepoint programs (recording layer)
mountpoint -q /sys/kernel/tracing 2>/dev/null || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true

if [ ! -x "$venv/bin/python" ]; then
  log "venv: $venv (system python, with system site-packages for bcc)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
if [ ! -e "$stamp" ]; then
  log "pip install -e .[dev]"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e "$here[dev]"
  rm -f "$venv"/.installed-*; touch "$stamp"
fi
"$venv/bin/python" -c 'import bcc, pyroute2' || { echo "bcc or pyroute2 not importable from $venv" >&2; exit 1; }
# every classifier variant compiled into the program cache now, so no fault waits ~1 s for bcc (a few seconds
# once per source and kernel; later runs find them cached)
"$venv/bin/chaos-inject" doctor --warm-cache --no-self-test | sed -n '/^compiled programs/,$p' | sed 's/^/[setup] /' \
  || log "warning: the program cache was not warmed (the first fault compiles instead)"
log "ok"
