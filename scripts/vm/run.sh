#!/usr/bin/env bash
# Boot a stock Debian kernel under QEMU and run one command inside it, in this checkout.
#   usage: run.sh [5.10|6.1|6.12|<version>] -- command [args...]
# The guest sees the host's root read-only (9p, tmpfs overlay on top) and this checkout read-write at the same
# path, so it runs the host's .venv python, tc and pytest. No network device. The command's output streams to
# this terminal (serial console); its exit code is this script's exit code.
# Other exits: 77 the VM cannot run here (no qemu / no kernel), 124 VM timeout, 125 VM ended without a result.
# Env: VM_PVH=0 (boot the bzImage, not the extracted vmlinux), VM_QEMU (binary), VM_TIMEOUT (s, whole VM, default 900), VM_MEM (default 2G), VM_CPUS (default 2), VM_ACCEL (kvm|tcg).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
vmdir=$here/scripts/vm
cache=${VM_CACHE:-$here/.cache/vm}
timeout_s=${VM_TIMEOUT:-900}
log() { printf '[vm] %s\n' "$*" >&2; }
skip() { printf 'kernel tier skipped: %s\n' "$*" >&2; exit 77; }

series=6.1
if [ $# -gt 0 ] && [ "$1" != "--" ]; then series=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [5.10|6.1|6.12|<version>] -- command [args...]" >&2; exit 2; }

qemu=${VM_QEMU:-qemu-system-x86_64}
command -v "$qemu" >/dev/null || skip "$qemu not installed (run scripts/vm/setup.sh)"
busybox=/bin/busybox
[ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1 || skip "static busybox not installed (run scripts/vm/setup.sh)"
command -v cpio >/dev/null || skip "cpio not installed (run scripts/vm/setup.sh)"

case "$series" in
  5.10|6.1|6.12) ver=$("$vmdir/fetch-kernel.sh" "$series") ;;   # exits 77 itself when impossible
  *) ver=$series; [ -e "$cache/$ver/.complete" ] || skip "kernel $ver not in $cache" ;;
esac
kdir=$cache/$ver
kernel=$kdir/root/boot/vmlinuz-$ver

# --- boot the uncompressed ELF vmlinux through its PVH entry when we can: decompressing Debian's xz/zstd bzImage
#     under TCG costs 5-9 s before the kernel's first message, PVH starts it in ~0.5 s (both kernels have CONFIG_PVH)
extract_vmlinux() {  # bzImage out -- like the kernel's scripts/extract-vmlinux
  local in=$1 out=$2 magic cmd pos
  for pair in '\xfd\x37\x7a\x58\x5a\x00:xz -dcq --single-stream' '\x28\xb5\x2f\xfd:zstd -dcq' '\x1f\x8b\x08:gzip -dcq'; do
    magic=${pair%%:*}; cmd=${pair#*:}
    for pos in $(LC_ALL=C grep -obUaP "$magic" "$in" | cut -d: -f1); do
      tail -c +$((pos + 1)) "$in" | $cmd > "$out.tmp" 2>/dev/null || true
      if [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then mv "$out.tmp" "$out"; return 0; fi
    done
  done
  rm -f "$out.tmp"; return 1
}
exec 9>"$kdir/.prepare.lock"; flock 9      # one runner at a time extracts vmlinux / packs the initramfs
if [ "${VM_PVH:-1}" = 1 ] && grep -q '^CONFIG_PVH=y' "$kdir/root/boot/config-$ver" 2>/dev/null; then
  if [ -s "$kdir/vmlinux" ] || { log "extracting vmlinux for PVH boot"; extract_vmlinux "$kernel" "$kdir/vmlinux"; }; then
    kernel=$kdir/vmlinux
  else
    log "could not extract vmlinux; booting the compressed image (slower)"
  fi
fi

# --- initramfs: busybox, our init, and the modules needed to reach the 9p root (rebuilt when init.sh changes)
initrd=$kdir/initramfs.cpio
if [ ! -e "$initrd" ] || [ "$vmdir/init.sh" -nt "$initrd" ] || [ "$0" -nt "$initrd" ]; then
  log "packing initramfs for $ver"
  t=$(mktemp -d "$cache/initramfs.XXXXXX")
  mkdir -p "$t/bin" "$t/modules" "$t/proc" "$t/sys" "$t/dev"
  cp "$busybox" "$t/bin/busybox"
  install -m 0755 "$vmdir/init.sh" "$t/init"
  modprobe -d "$kdir/root" -S "$ver" --show-depends -a virtio_pci 9pnet_virtio 9p overlay \
    | awk '$1=="insmod" && !seen[$2]++ {print $2}' | while read -r ko; do
      b=$(basename "$ko"); b=${b%.xz}; b=${b%.zst}; b=${b%.gz}
      case "$ko" in
        *.xz) xz -dc "$ko" > "$t/modules/$b" ;;
        *.zst) zstd -qdc "$ko" > "$t/modules/$b" ;;
        *.gz) gzip -dc "$ko" > "$t/modules/$b" ;;
        *) cp "$ko" "$t/modules/$b" ;;
      esac
      echo "$b" >> "$t/modules/order"
    done
  (cd "$t" && find . | cpio -o -H newc --quiet) > "$t.cpio"
  mv "$t.cpio" "$initrd"; rm -rf "$t"           # atomic: a concurrent run sees the old or the new one
fi

exec 9>&-

# --- accelerator: KVM only when it is a real one (this project's /dev/kvm is PVM-only: stock kernels fail on it)
accel=${VM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] \
     && { [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; }; then accel=kvm; fi
fi
case "$accel" in
  kvm) accel_args=(-accel kvm -cpu host) ;;
  *)   accel_args=(-accel tcg,thread=multi -cpu max) ;;
esac

# --- per-run directory inside the checkout (the guest reads cmd.sh, writes rc); removed on every exit path
mkdir -p "$cache/run"
# a SIGKILLed runner cannot remove its run directory: clear those older than any VM may live
find "$cache/run" -mindepth 1 -maxdepth 1 -mmin +$(( timeout_s / 60 + 10 )) -exec rm -rf {} + 2>/dev/null || true
run=$(mktemp -d "$cache/run/XXXXXX")
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill -KILL "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

headers=/var/cache/chaos-inject/headers/$ver      # made by `make setup` (6.1); else fetch-kernel.sh's copy
[ -e "$headers/include" ] || headers=$kdir/headers
{
  echo "cd $(printf '%q' "$here") || exit 125"
  echo "export CHAOS_INJECT_VM=1 CHAOS_INJECT_VM_KERNEL=$ver PYTHONDONTWRITEBYTECODE=1"
  [ -e "$headers/include" ] && echo "export BCC_KERNEL_SOURCE=$headers"
  [ -n "${PY_COLORS:-}" ] && echo "export PY_COLORS=$PY_COLORS"
  printf '%q ' "$@"; echo
} > "$run/cmd.sh"

log "booting $ver ($accel, ${VM_CPUS:-2} vCPU, ${VM_MEM:-2G}, timeout ${timeout_s}s)"
start=$(date +%s.%N)
# setpriv --pdeathsig: QEMU dies with this script even if the script itself is SIGKILLed
setpriv --pdeathsig KILL -- "$qemu" \
  "${accel_args[@]}" -smp "${VM_CPUS:-2}" -m "${VM_MEM:-2G}" \
  -nodefaults -no-user-config -display none -no-reboot -nic none \
  -chardev stdio,id=con,signal=on -serial chardev:con \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 oops=panic ci.run=$run ci.checkout=$here" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$here,mount_tag=checkout,security_model=none,multidevs=remap" \
  </dev/null &
qpid=$!

setpriv --pdeathsig KILL -- sleep "$timeout_s" & wd=$!        # the hard timeout on the whole VM
wait -n "$qpid" "$wd" || true
timed_out=0
if kill -0 "$qpid" 2>/dev/null; then timed_out=1; kill -KILL "$qpid" 2>/dev/null || true; fi
wait "$qpid" 2>/dev/null || true
qpid=""
kill "$wd" 2>/dev/null || true; wait "$wd" 2>/dev/null || true
wall=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
if [ -s "$run/rc" ]; then
  rc=$(cat "$run/rc")
  log "VM exited; command exit $rc; VM wall ${wall}s"
  exit "$rc"
fi
if [ "$timed_out" = 1 ]; then
  log "VM killed after the ${timeout_s}s timeout"; exit 124
fi
log "VM ended without a result (kernel panic or init failure); wall ${wall}s"
exit 125
