#!/usr/bin/env bash
# `make vagrant-smoke` (as root): one VM from the local box, brought up by vagrant-libvirt on QEMU TCG, checked,
# destroyed; nothing left behind.
#   1. build or reuse the box (vagrant/box/build.sh)
#   2. a network namespace of our own (only `lo`: no route out); inside it, in a private mount namespace, tmpfs
#      over /run and our own directories over /etc/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt
#      (so nothing reaches the host's /run/libvirt or libvirt state), a system libvirtd started by us (its PID
#      recorded; QEMU's console logs go to files, so no virtlogd is needed)
#   3. vagrant box add, vagrant up (isolated management network: DHCP on a bridge inside the namespace, no NAT),
#      vagrant ssh -c: kernel release and a netem qdisc that really delays (ping over lo), vagrant destroy -f
#   4. stop libvirtd by PID, check that no domain, volume, network or pool is left, delete the namespace and the
#      work directory. A failure anywhere still does all of step 4 (EXIT trap), and any process left in the
#      namespace (all of them ours: we made it) is killed.
# Prints timings: box build (or "cached"), vagrant up, checks, destroy. Exit 0 only if every check passed;
# 77 when this machine cannot run it (not root, vagrant-libvirt / libvirtd / qemu missing).
# Env: SMOKE_KEEP_LOGS=DIR copies the logs (libvirtd, console, vagrant) there before cleanup.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
log() { printf '[vagrant-smoke] %s\n' "$*" >&2; }
skip() { printf 'vagrant smoke skipped: %s\n' "$*" >&2; exit 77; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

if [ "${1:-}" = "--inner" ]; then
  # ---------------- inside the namespace (network + private mounts); $2 = work directory ----------------
  work=$2
  mount -t tmpfs -o mode=0755 smoke-run /run
  mkdir -p /run/libvirt /run/lock
  for d in etc var-lib var-log var-cache; do mkdir -p "$work/libvirt/$d"; done
  mount --bind "$work/libvirt/etc" /etc/libvirt
  mount --bind "$work/libvirt/var-lib" /var/lib/libvirt
  mount --bind "$work/libvirt/var-log" /var/log/libvirt
  mount --bind "$work/libvirt/var-cache" /var/cache/libvirt
  mkdir -p /var/lib/libvirt/images /etc/libvirt/qemu/networks
  cat > /etc/libvirt/libvirtd.conf <<'EOF'
# chaos-inject smoke: local unix socket only, root only
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
EOF
  cat > /etc/libvirt/qemu.conf <<'EOF'
# chaos-inject smoke: QEMU as root in this namespace, no cgroups, no per-domain /dev, logs to files (no virtlogd)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
  : > /etc/libvirt/libvirt.conf
  libvirtd --pid-file /run/libvirt/libvirtd.pid > "$work/libvirtd.log" 2>&1 &
  echo $! > "$work/libvirtd.pid"
  export LIBVIRT_DEFAULT_URI=qemu:///system
  for _ in $(seq 1 600); do virsh -q version >/dev/null 2>&1 && break; sleep 0.1; done
  virsh -q version >/dev/null 2>&1 || { log "libvirtd did not answer within 60 s"; tail -20 "$work/libvirtd.log" >&2; exit 1; }

  export VAGRANT_HOME=$work/vagrant.d VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1 \
         VAGRANT_BOX_UPDATE_CHECK_DISABLE=1 CHAOS_SMOKE_CONSOLE=$work/console.log
  mkdir -p "$work/project" && cp "$here/Vagrantfile" "$work/project/Vagrantfile"
  cd "$work/project"
  rc=0
  inner_checks() {
    local t
    t=$(now); vagrant box add --name "$BOX_NAME" "$BOX_FILE" >"$work/vagrant-box-add.log" 2>&1 \
      || { log "vagrant box add failed:"; tail -20 "$work/vagrant-box-add.log" >&2; return 1; }
    log "vagrant box add: $(since "$t") s"
    t=$(now); vagrant up --provider libvirt >"$work/vagrant-up.log" 2>&1 \
      || { log "vagrant up failed:"; tail -30 "$work/vagrant-up.log" >&2; return 1; }
    echo "up $(since "$t")" >> "$work/timings"; log "vagrant up: $(since "$t") s"
    t=$(now)
    vagrant ssh -c 'uname -r; sudo tc qdisc add dev lo root netem delay 50ms && sudo tc qdisc show dev lo;
                    ping -c 3 -i 0.3 -q 127.0.0.1; sudo tc qdisc del dev lo root' > "$work/ssh.out" 2>&1 \
      || { log "vagrant ssh -c failed:"; cat "$work/ssh.out" >&2; return 1; }
    echo "checks $(since "$t")" >> "$work/timings"
    cat "$work/ssh.out" >&2
    local kernel; kernel=$(head -1 "$work/ssh.out" | tr -d '\r')
    [ "$kernel" = "$BOX_KERNEL" ] || { log "FAIL: VM kernel '$kernel', box has '$BOX_KERNEL'"; return 1; }
    grep -q 'qdisc netem .* delay 50ms' "$work/ssh.out" || { log "FAIL: no netem qdisc on lo in the VM"; return 1; }
    # ping over lo passes the netem root twice (request and reply): min RTT >= 100 ms when the delay works
    local rtt_min; rtt_min=$(sed -n 's|^rtt min/avg/max/mdev = \([0-9.]*\)/.*|\1|p' "$work/ssh.out")
    awk -v m="$rtt_min" 'BEGIN{exit !(m != "" && m >= 100)}' \
      || { log "FAIL: ping rtt min '$rtt_min' ms, expected >= 100 ms through netem delay 50ms"; return 1; }
    log "ok: kernel $kernel, netem delay 50ms on lo: ping rtt min $rtt_min ms"
  }
  inner_checks || rc=1
  # teardown, whatever happened above
  t=$(now)
  if [ -d .vagrant ]; then
    vagrant destroy -f >"$work/vagrant-destroy.log" 2>&1 || { log "vagrant destroy failed:"; tail -20 "$work/vagrant-destroy.log" >&2; rc=1; }
  fi
  echo "destroy $(since "$t")" >> "$work/timings"; log "vagrant destroy -f: $(since "$t") s"
  # what vagrant keeps on purpose (the box's volume in the pool, the pool) goes too; then check nothing is left
  for v in $(virsh -q vol-list default 2>/dev/null | awk '{print $1}'); do virsh -q vol-delete "$v" --pool default >/dev/null || rc=1; done
  virsh -q pool-destroy default >/dev/null 2>&1 || true
  virsh -q pool-undefine default >/dev/null 2>&1 || true
  for n in $(virsh -q net-list --all --name); do
    log "network $n left: removing it"; rc=1
    virsh -q net-destroy "$n" >/dev/null 2>&1 || true; virsh -q net-undefine "$n" >/dev/null 2>&1 || true
  done
  for d in $(virsh -q list --all --name); do
    log "domain $d left: removing it"; rc=1
    virsh -q destroy "$d" >/dev/null 2>&1 || true; virsh -q undefine "$d" --nvram >/dev/null 2>&1 || virsh -q undefine "$d" >/dev/null 2>&1 || true
  done
  [ -z "$(virsh -q pool-list --all --name)" ] || { log "storage pool left: $(virsh -q pool-list --all --name)"; rc=1; }
  pid=$(cat "$work/libvirtd.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { log "libvirtd $pid did not stop on SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; rc=1; }
  exit $rc
fi

# ---------------- outside: box, namespace, cleanup ----------------
[ "$(id -u)" = 0 ] || skip "needs root (network namespace, libvirtd)"
command -v vagrant >/dev/null || skip "vagrant not installed (apt-get install vagrant vagrant-libvirt)"
ls -d /usr/share/rubygems-integration/all/gems/vagrant-libvirt-* >/dev/null 2>&1 || vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt \
  || skip "vagrant-libvirt not installed (apt-get install vagrant-libvirt)"
for tool in libvirtd virsh qemu-system-x86_64 qemu-img dnsmasq unshare; do
  command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base)"
done

t=$(now)
box=$("$repo/vagrant/box/build.sh")
box_dir=$(dirname "$box")
box_secs=$(since "$t")
built=$(sed -n 's/.*"build_seconds": \([0-9.]*\).*/\1/p' "$box_dir/build.json")
log "box: $box ($(du -h "$box" | cut -f1)); built in $built s$( [ "${box_secs%.*}" -lt 5 ] && echo ", cached this time")"
export BOX_FILE=$box BOX_NAME=$("$repo/vagrant/box/build.sh" --box-name)
export BOX_KERNEL=$(sed -n 's/.*"kernel": "\([^"]*\)".*/\1/p' "$box_dir/build.json")

mkdir -p "$repo/.cache/vagrant-smoke"
work=$(mktemp -d "$repo/.cache/vagrant-smoke/run.XXXXXX")
ns=cibox-$$
cleanup() {
  local rc=$? left
  trap - EXIT INT TERM
  if ip netns list | grep -qw "$ns"; then
    # every process in the namespace is ours (we made it): libvirtd, dnsmasq, qemu, vagrant's ssh if any survived
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "$left" ]; then
      # after a clean run nothing is left (a failure then); after an interruption this is the teardown
      log "processes left in $ns: ${left}: SIGTERM"; kill -TERM $left 2>/dev/null || true; [ "$rc" != 0 ] || rc=1
      for _ in $(seq 1 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
      left=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
    fi
    ip netns del "$ns"
  fi
  if [ -n "${SMOKE_KEEP_LOGS:-}" ]; then mkdir -p "$SMOKE_KEEP_LOGS"; cp "$work"/*.log "$work"/ssh.out "$SMOKE_KEEP_LOGS"/ 2>/dev/null || true; fi
  [ "$rc" = 0 ] || [ ! -s "$work/console.log" ] || { log "VM console (last lines):"; tail -15 "$work/console.log" >&2; }
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
log "namespace $ns (lo only, no route out); work directory $work"
rc=0
# in the background and waited for, so that SIGTERM/SIGINT reach our trap at once (cleanup kills the namespace's
# processes, the inner script included)
ip netns exec "$ns" unshare --mount --propagation private -- "$here/smoke.sh" --inner "$work" &
wait $! || rc=$?
up=$(awk '$1=="up"{print $2}' "$work/timings" 2>/dev/null); destroy=$(awk '$1=="destroy"{print $2}' "$work/timings" 2>/dev/null)
log "timings: box build ${built} s$( [ "${box_secs%.*}" -lt 5 ] && echo " (cached: ${box_secs} s this run)"), vagrant up ${up:-n/a} s, destroy ${destroy:-n/a} s"
[ "$rc" = 0 ] && log "PASS" || log "FAIL (rc $rc)"
exit "$rc"
