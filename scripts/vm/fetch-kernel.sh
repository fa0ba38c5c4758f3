#!/usr/bin/env bash
# Fetch a stock Debian kernel for the test VM into .cache/vm/<version>/ (never the host's /boot).
#   usage: fetch-kernel.sh 5.10|6.1|6.12     prints the kernel version (e.g. 6.1.0-56-amd64) on stdout
# 6.1 comes from the host's own apt lists (bookworm); 6.12 from bookworm-backports and 5.10 from Debian 11
# (bullseye, bullseye-security) through a private sources list and lists directory under .cache/vm/apt[-<series>],
# so the host's apt configuration is untouched.
# Cached: once .cache/vm/<version>/ is complete, nothing is downloaded.
# Exit 77 when the kernel cannot be obtained (no network / no such package).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cache=${VM_CACHE:-$here/.cache/vm}
series=${1:-6.1}
log() { printf '[vm-fetch] %s\n' "$*" >&2; }
skip() { printf 'kernel tier skipped: %s\n' "$*" >&2; exit 77; }

mkdir -p "$cache"
exec 9>"$cache/.fetch.lock"; flock 9        # concurrent tiers (6.1 and 6.12, or two checkouts' runs) fetch one at a time
apt_opts=()
case "$series" in
  6.1) ;;
  6.12|5.10)
    # private apt state: only bookworm-backports (6.12) or bullseye (5.10), its own lists and caches
    if [ "$series" = 6.12 ]; then
      a=$cache/apt
      sources="deb http://deb.debian.org/debian bookworm-backports main"
      release=bookworm-backports
    else
      a=$cache/apt-5.10
      sources="deb http://deb.debian.org/debian bullseye main
deb http://deb.debian.org/debian-security bullseye-security main"
      release=bullseye-security
    fi
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/sources.list.d"
    echo "$sources" > "$a/sources.list"
    apt_opts=(-o "Dir::Etc::sourcelist=$a/sources.list" -o "Dir::Etc::sourceparts=$a/sources.list.d"
              -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache"
              -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Default-Release=$release")
    ;;
  *) echo "usage: $0 5.10|6.1|6.12" >&2; exit 2 ;;
esac

# The versioned image package the linux-image-amd64 meta package points at (e.g. linux-image-6.1.0-56-amd64).
image_pkg() { apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null \
                | awk '/Depends: linux-image-[0-9]/{print $2}' | sort -V | tail -1; }

stampfile=$cache/latest-$series      # remembers which version this series resolved to last time
pkg=""
if [ -s "$stampfile" ] && [ -e "$cache/$(cat "$stampfile")/.complete" ]; then
  ver=$(cat "$stampfile")
  if [ -e "/var/cache/chaos-inject/headers/$ver/include" ] || [ -e "$cache/$ver/headers/.complete" ]; then
    echo "$ver"; exit 0
  fi
fi

pkg=$(image_pkg || true)
if [ -z "$pkg" ]; then
  log "apt-get update (${series})"
  apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || skip "apt-get update failed for the $series kernel (no network?)"
  pkg=$(image_pkg || true)
fi
[ -n "$pkg" ] || skip "no linux-image-amd64 dependency found in apt for $series"
ver=${pkg#linux-image-}
ver=${ver%-unsigned}
dir=$cache/$ver

if [ ! -e "$dir/.complete" ]; then
  log "downloading $pkg into $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && apt-get "${apt_opts[@]}" download -qq "$pkg" >/dev/null 2>&1) \
    || { rm -rf "$dir"; skip "apt-get download $pkg failed (no network?)"; }
  dpkg -x "$dir"/*.deb "$dir/root"
  rm -f "$dir"/*.deb
  [ -e "$dir/root/boot/vmlinuz-$ver" ] || { rm -rf "$dir"; skip "$pkg has no /boot/vmlinuz-$ver"; }
  depmod -b "$dir/root" "$ver"
  touch "$dir/.complete"
fi

# Kernel headers for bcc inside the guest. `make setup` puts the 6.1 ones in /var/cache/chaos-inject/headers/<ver>;
# otherwise (e.g. 6.12) fetch linux-headers-<ver> + its -common and merge them into .cache/vm/<ver>/headers.
# Best effort: without them only the bcc tests skip.
if [ ! -e "/var/cache/chaos-inject/headers/$ver/include" ] && [ ! -e "$dir/headers/.complete" ]; then
  log "downloading linux-headers-$ver for bcc"
  t=$(mktemp -d "$cache/headers.XXXXXX")
  common=$(apt-cache "${apt_opts[@]}" depends "linux-headers-$ver" 2>/dev/null | awk '/Depends: linux-headers-.*-common/{print $2; exit}')
  if [ -n "$common" ] && (cd "$t" && apt-get "${apt_opts[@]}" download -qq "linux-headers-$ver" "$common" >/dev/null 2>&1); then
    for deb in "$t"/*.deb; do dpkg-deb -x "$deb" "$t/x"; done
    rm -rf "$dir/headers"; mkdir -p "$dir/headers"
    cp -a "$t/x/usr/src/$common/." "$dir/headers/"
    cp -a --remove-destination "$t/x/usr/src/linux-headers-$ver/." "$dir/headers/"
    touch "$dir/headers/.complete"
  else
    log "could not download linux-headers-$ver: bcc tests will skip in the $ver guest"
  fi
  rm -rf "$t"
fi
echo "$ver" > "$stampfile"
echo "$ver"
