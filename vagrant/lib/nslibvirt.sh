# Sourced (bash) by vagrant/smoke/smoke.sh and vagrant/lab.sh: Vagrant + vagrant-libvirt on QEMU TCG inside a
# network namespace of our own, with a private libvirtd, and a teardown that leaves nothing.
#
# Outside (as root):   nsl_preflight                  exit 77 with the reason when this machine cannot run it
#                      nsl_run PREFIX WORK CMD...     make namespace PREFIX-<pid> (only `lo`: no route out), run
#                                                     CMD inside it and a private mount namespace, wait for it;
#                                                     on any exit (EXIT/INT/TERM trap) end every process left in
#                                                     the namespace (all ours), delete it and WORK; returns CMD's rc
# Inside (CMD):        nsl_inner_start WORK           tmpfs over /run, WORK's directories over libvirt's state dirs
#                                                     (nothing reaches the host's libvirt), a system libvirtd of
#                                                     ours (PID in WORK/libvirtd.pid; QEMU logs to files, so no
#                                                     virtlogd), Vagrant's environment (VAGRANT_HOME in WORK)
#                      nsl_inner_teardown WORK        delete the box volumes and the pool, remove (and count as a
#                                                     failure) any domain or network still defined, stop libvirtd
#                                                     by PID; returns non-zero if anything was left
# Callers set NSL_TAG (log prefix) first. Timings go to WORK/timings ("<step> <seconds>" lines).

NSL_TAG=${NSL_TAG:-vagrant}
nsl_log() { printf '[%s] %s\n' "$NSL_TAG" "$*" >&2; }
nsl_now() { date +%s.%N; }
nsl_since() { awk -v a="$1" -v b="$(nsl_now)" 'BEGIN{printf "%.1f", b-a}'; }
nsl_timing() { echo "$1 $2" >> "$NSL_WORK/timings"; }

nsl_preflight() {
  local why=""
  [ "$(id -u)" = 0 ] || why="needs root (network namespace, libvirtd)"
  [ -n "$why" ] || command -v vagrant >/dev/null || why="vagrant not installed (scripts/vagrant-setup.sh)"
  if [ -z "$why" ] && ! ls -d /usr/share/rubygems-integration/all/gems/vagrant-libvirt-* >/dev/null 2>&1 \
       && ! vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt; then
    why="vagrant-libvirt not installed (scripts/vagrant-setup.sh)"
  fi
  local tool
  for tool in libvirtd virsh qemu-system-x86_64 qemu-img dnsmasq unshare rsync; do
    [ -n "$why" ] || command -v "$tool" >/dev/null || why="$tool not installed (scripts/vagrant-setup.sh)"
  done
  if [ -n "$why" ]; then printf '%s skipped: %s\n' "$NSL_TAG" "$why" >&2; exit 77; fi
}

_nsl_cleanup() {
  local rc=$? left
  trap - EXIT INT TERM
  if ip netns list | grep -qw "$NSL_NS"; then
    # every process in the namespace is ours (we made it): libvirtd, dnsmasq, qemu, vagrant's ssh if any survived
    left=$(ip netns pids "$NSL_NS" 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "$left" ]; then
      # after a clean run nothing is left (a failure then); after an interruption this is the teardown
      nsl_log "processes left in $NSL_NS: ${left}: SIGTERM"; kill -TERM $left 2>/dev/null || true; [ "$rc" != 0 ] || rc=1
      for _ in $(seq 1 50); do [ -z "$(ip netns pids "$NSL_NS" 2>/dev/null)" ] && break; sleep 0.1; done
      left=$(ip netns pids "$NSL_NS" 2>/dev/null || true)
      [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
    fi
    ip netns del "$NSL_NS"
  fi
  [ "$(type -t nsl_on_exit)" != function ] || nsl_on_exit "$rc" || true     # the caller's last words (logs)
  rm -rf "$NSL_WORK"
  exit "$rc"
}

nsl_run() {  # nsl_run PREFIX WORK CMD...
  NSL_NS=$1-$$ NSL_WORK=$2; shift 2
  trap _nsl_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  ip netns add "$NSL_NS"
  ip -n "$NSL_NS" link set lo up
  nsl_log "namespace $NSL_NS (lo only, no route out); work directory $NSL_WORK"
  local rc=0
  # in the background and waited for, so that SIGTERM/SIGINT reach our trap at once (the cleanup ends the
  # namespace's processes, CMD included)
  ip netns exec "$NSL_NS" unshare --mount --propagation private -- "$@" &
  wait $! || rc=$?
  return "$rc"
}

nsl_inner_start() {  # nsl_inner_start WORK
  NSL_WORK=$1
  local work=$1 d
  mount -t tmpfs -o mode=0755 nsl-run /run
  mkdir -p /run/libvirt /run/lock
  for d in etc var-lib var-log var-cache; do mkdir -p "$work/libvirt/$d"; done
  mount --bind "$work/libvirt/etc" /etc/libvirt
  mount --bind "$work/libvirt/var-lib" /var/lib/libvirt
  mount --bind "$work/libvirt/var-log" /var/log/libvirt
  mount --bind "$work/libvirt/var-cache" /var/cache/libvirt
  mkdir -p /var/lib/libvirt/images /etc/libvirt/qemu/networks
  cat > /etc/libvirt/libvirtd.conf <<'CONF'
# chaos-inject: local unix socket only, root only
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
CONF
  cat > /etc/libvirt/qemu.conf <<'CONF'
# chaos-inject: QEMU as root in this namespace, no cgroups, no per-domain /dev, logs to files (no virtlogd)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
CONF
  : > /etc/libvirt/libvirt.conf
  libvirtd --pid-file /run/libvirt/libvirtd.pid > "$work/libvirtd.log" 2>&1 &
  echo $! > "$work/libvirtd.pid"
  export LIBVIRT_DEFAULT_URI=qemu:///system
  for _ in $(seq 1 600); do virsh -q version >/dev/null 2>&1 && break; sleep 0.1; done
  virsh -q version >/dev/null 2>&1 || { nsl_log "libvirtd did not answer within 60 s"; tail -20 "$work/libvirtd.log" >&2; return 1; }
  export VAGRANT_HOME=$work/vagrant.d VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1 \
         VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
}

nsl_inner_teardown() {  # nsl_inner_teardown WORK (cwd: the Vagrant project)
  local work=$1 rc=0 t v n d pid
  t=$(nsl_now)
  if [ -d "${VAGRANT_DOTFILE_PATH:-.vagrant}" ]; then
    vagrant destroy -f >"$work/vagrant-destroy.log" 2>&1 || { nsl_log "vagrant destroy failed:"; tail -20 "$work/vagrant-destroy.log" >&2; rc=1; }
  fi
  nsl_timing destroy "$(nsl_since "$t")"; nsl_log "vagrant destroy -f: $(nsl_since "$t") s"
  # what vagrant keeps on purpose (the box's volume in the pool, the pool) goes too; then check nothing is left
  for v in $(virsh -q vol-list default 2>/dev/null | awk '{print $1}'); do virsh -q vol-delete "$v" --pool default >/dev/null || rc=1; done
  virsh -q pool-destroy default >/dev/null 2>&1 || true
  virsh -q pool-undefine default >/dev/null 2>&1 || true
  for d in $(virsh -q list --all --name); do
    nsl_log "domain $d left: removing it"; rc=1
    virsh -q destroy "$d" >/dev/null 2>&1 || true; virsh -q undefine "$d" --nvram >/dev/null 2>&1 || virsh -q undefine "$d" >/dev/null 2>&1 || true
  done
  for n in $(virsh -q net-list --all --name); do
    nsl_log "network $n left: removing it"; rc=1
    virsh -q net-destroy "$n" >/dev/null 2>&1 || true; virsh -q net-undefine "$n" >/dev/null 2>&1 || true
  done
  [ -z "$(virsh -q pool-list --all --name)" ] || { nsl_log "storage pool left: $(virsh -q pool-list --all --name)"; rc=1; }
  [ -z "$(ip -br link show type bridge)" ] || { nsl_log "bridge left: $(ip -br link show type bridge)"; rc=1; }
  pid=$(cat "$work/libvirtd.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { nsl_log "libvirtd $pid did not stop on SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; rc=1; }
  return $rc
}
