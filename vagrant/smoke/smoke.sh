#!/usr/bin/env bash
# `make vagrant-smoke` (as root): one VM from the local box, brought up by vagrant-libvirt on QEMU TCG, chaos-inject
# from this checkout installed in it with no route out, a per-flow netem delay checked on the wire, destroyed;
# nothing left behind.
#   1. build or reuse the box (vagrant/box/build.sh); the wheelhouse of this checkout (vagrant/wheelhouse.sh)
#   2. a network namespace of our own (only `lo`: no route out) with a private mount namespace and libvirtd
#      (vagrant/lib/nslibvirt.sh)
#   3. vagrant box add, vagrant up (isolated management network: DHCP on a bridge inside the namespace, no NAT; the
#      wheelhouse and smoke/in-vm.sh rsynced to /opt/chaos-inject), vagrant ssh: kernel release, then in-vm.sh:
#      pip install from the wheelhouse, `chaos-inject --flow '10.77.0.1->10.77.0.2:5001/tcp' --delay 100ms
#      --engine netem` between two namespaces in the VM: port 5001's connect time rises by 100 ms, port 5002's
#      does not, and after `chaos-inject stop` no qdisc, filter or pin of ours is left
#   4. vagrant destroy -f, delete the box volume and pool, check that no domain, network, pool or bridge is left,
#      stop libvirtd by PID, delete the namespace (ending anything left in it: all ours) and the work directory.
#      A failure or SIGINT/SIGTERM anywhere still does all of step 4.
# Prints timings: box build (or "cached"), wheelhouse, vagrant up, in-VM install and checks, destroy. Exit 0 only if
# every check passed; 77 when this machine cannot run it (not root, vagrant-libvirt / libvirtd / qemu missing).
# Env: SMOKE_KEEP_LOGS=DIR copies the logs (libvirtd, console, vagrant, in-VM output) there before cleanup.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
NSL_TAG=vagrant-smoke
# shellcheck source=../lib/nslibvirt.sh
. "$repo/vagrant/lib/nslibvirt.sh"

if [ "${1:-}" = "--inner" ]; then
  # ---------------- inside the namespace (network + private mounts); $2 = work directory ----------------
  work=$2
  nsl_inner_start "$work"
  export CHAOS_SMOKE_CONSOLE=$work/console.log CHAOS_SMOKE_SHARE=$work/share
  mkdir -p "$work/project" && cp "$here/Vagrantfile" "$work/project/Vagrantfile"
  cd "$work/project"
  inner_checks() {
    local t
    t=$(nsl_now); nsl_box_add "$BOX_NAME" "$BOX_FILE" "$work/vagrant-box-add.log" \
      || { nsl_log "vagrant box add failed:"; tail -20 "$work/vagrant-box-add.log" >&2; return 1; }
    nsl_log "vagrant box add: $(nsl_since "$t") s"
    t=$(nsl_now); nsl_vagrant_up "$work/vagrant-up.log" --provider libvirt \
      || { nsl_log "vagrant up failed:"; tail -30 "$work/vagrant-up.log" >&2; return 1; }
    nsl_timing up "$(nsl_since "$t")"; nsl_log "vagrant up: $(nsl_since "$t") s"
    local kernel
    kernel=$(vagrant ssh -c 'uname -r' 2>"$work/ssh-uname.err" | tr -d '\r' | head -1)
    [ "$kernel" = "$BOX_KERNEL" ] || { nsl_log "FAIL: VM kernel '$kernel', box has '$BOX_KERNEL'"; return 1; }
    nsl_log "ok: kernel $kernel (the box's)"
    t=$(nsl_now)
    local vm_rc=0
    vagrant ssh -c 'sudo bash /opt/chaos-inject/smoke/in-vm.sh' > "$work/in-vm.out" 2>&1 || vm_rc=$?
    nsl_timing in_vm "$(nsl_since "$t")"
    tr -d '\r' < "$work/in-vm.out" | sed 's/^/  vm: /' >&2
    nsl_log "in-VM install and checks: $(nsl_since "$t") s"
    tr -d '\r' < "$work/in-vm.out" | awk '$1=="figure"{print "vm_"$2, $3, $4}' >> "$work/timings"
    [ "$vm_rc" = 0 ] && ! grep -q '^check .* FAIL' "$work/in-vm.out" && grep -q '^check delayed ok' "$work/in-vm.out" \
      || { nsl_log "FAIL: the in-VM checks (exit $vm_rc)"; return 1; }
    nsl_log "ok: chaos-inject netem delay 100ms on one flow in the VM, the other flow undelayed, nothing left"
  }
  rc=0
  inner_checks || rc=1
  nsl_inner_teardown "$work" || rc=1       # whatever happened above
  exit $rc
fi

# ---------------- outside: box, wheelhouse, namespace, cleanup ----------------
nsl_preflight
t=$(nsl_now)
box=$("$repo/vagrant/box/build.sh")
box_dir=$(dirname "$box")
box_secs=$(nsl_since "$t")
built=$(sed -n 's/.*"build_seconds": \([0-9.]*\).*/\1/p' "$box_dir/build.json")
cached=$( [ "${box_secs%.*}" -lt 5 ] && echo yes || echo no)
nsl_log "box: $box ($(du -h "$box" | cut -f1)); built in $built s$( [ "$cached" = yes ] && echo ", cached this time")"
export BOX_FILE=$box BOX_NAME=$("$repo/vagrant/box/build.sh" --box-name)
export BOX_KERNEL=$(sed -n 's/.*"kernel": "\([^"]*\)".*/\1/p' "$box_dir/build.json")

mkdir -p "$repo/.cache/vagrant-smoke"
nsl_mkwork "$repo/.cache/vagrant-smoke" run.      # the run's ledger, then the work directory
work=$NSL_WORK
t=$(nsl_now)
"$repo/vagrant/wheelhouse.sh" "$work/share/wheels" >/dev/null
mkdir -p "$work/share/smoke" && cp "$here/in-vm.sh" "$here/flowcheck.py" "$work/share/smoke/"
wheel_secs=$(nsl_since "$t")

nsl_on_exit() {  # before the work directory goes: logs, the console on failure, the timings
  if [ -n "${SMOKE_KEEP_LOGS:-}" ]; then
    mkdir -p "$SMOKE_KEEP_LOGS"; cp "$NSL_WORK"/*.log "$NSL_WORK"/*.out "$NSL_WORK"/timings "$SMOKE_KEEP_LOGS"/ 2>/dev/null || true
  fi
  [ "$1" = 0 ] || [ ! -s "$NSL_WORK/console.log" ] || { nsl_log "VM console (last lines):"; tail -15 "$NSL_WORK/console.log" >&2; }
  local up destroy in_vm
  up=$(awk '$1=="up"{print $2}' "$NSL_WORK/timings" 2>/dev/null); destroy=$(awk '$1=="destroy"{print $2}' "$NSL_WORK/timings" 2>/dev/null)
  in_vm=$(awk '$1=="in_vm"{print $2}' "$NSL_WORK/timings" 2>/dev/null)
  nsl_log "timings: box build ${built} s$( [ "$cached" = yes ] && echo " (cached: ${box_secs} s this run)"), wheelhouse ${wheel_secs} s, vagrant up ${up:-n/a} s, in-VM install + checks ${in_vm:-n/a} s, destroy ${destroy:-n/a} s"
  [ "$1" = 0 ] && nsl_log "PASS" || nsl_log "FAIL (rc $1)"
}
nsl_run cibox "$work" "$here/smoke.sh" --inner "$work"
