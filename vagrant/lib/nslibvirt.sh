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
#
# Crash safety: every object is in a run ledger (kind vm-lab, /run/chaos-inject/runs/vm-<tag>-<pid>.json, written
# by chaosinject.cli.ledger_writer) before it is made -- the work directory, the namespace (with every process in
# it), the inner script, libvirtd, dnsmasq and QEMU (pid + start time, as soon as they run) -- so that
# `chaos-inject sweep` removes what a killed run left. Crash points (test-only, as chaos-inject's own:
# CHAOS_INJECT_CRASH_AT=N[:before|after], CHAOS_INJECT_CRASH_TRACE=FILE) are the steps `nsl_step` wraps; the
# crash kills the owner (the outer script) and the step's own shell with SIGKILL. The teardown's steps are steps too:
# the inner script's (vagrant destroy, the volumes, the pool, libvirtd), then the outer's trap (the namespace, the
# work directory, the ledger), which carries on from the inner's count (WORK/steps: each script counts its own).
# NSL_END_UP_AT_QEMU=N (test-only) ends `vagrant up` with SIGKILL once N QEMU run, each ledgered. With 1 the run
# goes to its teardown with the first domain running and its volumes made, but without the boot (minutes under
# TCG), so that every teardown step can be walked in the time of the steps before the boot; the lab's 2 and 3 reach
# the ledger writes of its second and third QEMU (after the boot of the VMs before them; vagrant/lab.sh passes
# --no-provision with NSL_UP_NO_PROVISION=1, also test-only).

NSL_TAG=${NSL_TAG:-vagrant}
nsl_log() { printf '[%s] %s\n' "$NSL_TAG" "$*" >&2; }
nsl_now() { date +%s.%N; }
nsl_since() { awk -v a="$1" -v b="$(nsl_now)" 'BEGIN{printf "%.1f", b-a}'; }
nsl_timing() { echo "$1 $2" >> "$NSL_WORK/timings"; }

# the crash-point switch is read once, here, and taken out of the environment: the Python programs started below
# (the ledger writer, pip) count steps of their own
NSL_CRASH_AT=${NSL_CRASH_AT-${CHAOS_INJECT_CRASH_AT:-}}
NSL_TRACE=${NSL_TRACE-${CHAOS_INJECT_CRASH_TRACE:-}}
export NSL_CRASH_AT NSL_TRACE
unset CHAOS_INJECT_CRASH_AT CHAOS_INJECT_CRASH_TRACE
NSL_STEP=${NSL_STEP:-0}
NSL_PY=${CHAOS_INJECT_PYTHON:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin/python}

_nsl_die() { kill -KILL "${NSL_OWNER:-$BASHPID}" "$BASHPID" 2>/dev/null; sleep 5; }
nsl_step() {  # nsl_step LABEL CMD...: one state-changing step (counted, traced; the crash point's place)
  local label=$1 n=${NSL_CRASH_AT%%:*} when=before rc=0 me; shift
  [ "${NSL_CRASH_AT#*:}" = "$NSL_CRASH_AT" ] || when=${NSL_CRASH_AT#*:}
  NSL_STEP=$((NSL_STEP + 1)); export NSL_STEP; me=$NSL_STEP   # a step may hold steps of its own (ledger writes)
  [ -z "$NSL_TRACE" ] || printf '%s\t%s\n' "$me" "$label" >> "$NSL_TRACE"
  [ "$n" != "$me" ] || [ "$when" != before ] || _nsl_die
  "$@" || rc=$?
  [ "$n" != "$me" ] || [ "$when" != after ] || _nsl_die
  return $rc
}
nsl_ledger() {  # nsl_ledger ACTION ARGS...: the ledger of this run (chaosinject.cli.ledger_writer), one step
  nsl_step "write ledger" "$NSL_PY" -m chaosinject.cli.ledger_writer "$1" "$NSL_LEDGER" "${@:2}"
}
nsl_ledger_pidfile() {  # nsl_ledger_pidfile ROLE FILE...: ledger the processes whose pid files exist, once each
  local role=$1 f pid; shift
  for f in "$@"; do
    [ -s "$f" ] && [ "${f##*/}" != driver.pid ] || continue   # driver.pid: libvirtd's own (ledgered already)
    pid=$(tr -dc 0-9 < "$f")
    [ -n "$pid" ] && ! grep -qx "$role $pid" "$NSL_WORK/ledgered" 2>/dev/null || continue
    echo "$role $pid" >> "$NSL_WORK/ledgered"; nsl_ledger add process "$pid" --role "$role"
  done
}

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
  [ -n "$why" ] || [ -x "$NSL_PY" ] || why="no $NSL_PY (make setup; or CHAOS_INJECT_PYTHON): it writes the run ledger"
  if [ -n "$why" ]; then printf '%s skipped: %s\n' "$NSL_TAG" "$why" >&2; exit 77; fi
}

_nsl_cleanup() {
  local rc=$? left
  trap - EXIT INT TERM
  [ ! -s "$NSL_WORK/steps" ] || NSL_STEP=$(cat "$NSL_WORK/steps")   # the inner script's steps came after ours
  if [ -n "${NSL_NS:-}" ] && ip netns list | grep -qw "$NSL_NS"; then
    # every process in the namespace is ours (we made it): libvirtd, dnsmasq, qemu, vagrant's ssh if any survived
    left=$(ip netns pids "$NSL_NS" 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "$left" ]; then
      # after a clean run nothing is left (a failure then); after an interruption this is the teardown
      nsl_log "processes left in $NSL_NS: ${left}: SIGTERM"; kill -TERM $left 2>/dev/null || true; [ "$rc" != 0 ] || rc=1
      for _ in $(seq 1 50); do [ -z "$(ip netns pids "$NSL_NS" 2>/dev/null)" ] && break; sleep 0.1; done
      left=$(ip netns pids "$NSL_NS" 2>/dev/null || true)
      [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
    fi
    nsl_step "delete netns" ip netns del "$NSL_NS"
  fi
  [ "$(type -t nsl_on_exit)" != function ] || nsl_on_exit "$rc" || true     # the caller's last words (logs)
  [ ! -e "$NSL_WORK" ] || nsl_step "remove work directory" rm -rf "$NSL_WORK"
  if [ -n "${NSL_LEDGER:-}" ] && { [ -z "${NSL_NS:-}" ] || ! ip netns list | grep -qw "$NSL_NS"; } \
     && [ ! -e "$NSL_WORK" ]; then   # all gone: the ledger too
    nsl_step "delete ledger" "$NSL_PY" -m chaosinject.cli.ledger_writer close "$NSL_LEDGER" || rc=1
  fi
  exit "$rc"
}

nsl_mkwork() {  # nsl_mkwork PARENT PREFIX: open this run's ledger, then make the work directory NSL_WORK (its
  # name: PREFIX, our pid, a random part); from here on every exit path removes it (nsl_run's teardown)
  NSL_OWNER=$$ NSL_LEDGER=vm-$NSL_TAG-$$ NSL_WORK=$1/$2$$-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
  export NSL_OWNER NSL_LEDGER
  mkdir -p "$1"
  trap _nsl_cleanup EXIT
  nsl_step "write ledger" "$NSL_PY" -m chaosinject.cli.ledger_writer open "$NSL_LEDGER" --owner "$$" --tag "$NSL_TAG"
  nsl_ledger add lab-dir "$NSL_WORK"
  nsl_step "create work directory" mkdir -m 0700 "$NSL_WORK"
}

nsl_run() {  # nsl_run PREFIX WORK CMD...
  NSL_NS=$1-$$ NSL_WORK=$2; shift 2
  trap _nsl_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  nsl_ledger add netns "$NSL_NS"
  nsl_step "create netns" ip netns add "$NSL_NS"
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
  nsl_ledger add process "$BASHPID" --role "inner script"   # started by nsl_run; the namespace entry covered it
  # the tmpfs over /run would hide the ledgers (/run/chaos-inject by default): keep the host's run directory
  # reachable at the same path in this mount namespace, or every later `nsl_ledger add` finds no ledger
  local runroot=${CHAOS_INJECT_RUN_DIR:-/run/chaos-inject}
  case $runroot in /run/*)
    mkdir -p "$work/host-run" && mount --bind "$runroot" "$work/host-run" ;;
  esac
  mount -t tmpfs -o mode=0755 nsl-run /run
  case $runroot in /run/*)
    mkdir -p "$runroot" && mount --move "$work/host-run" "$runroot" ;;   # nothing stays mounted in WORK
  esac
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
  nsl_step "start libvirtd" eval 'libvirtd --pid-file /run/libvirt/libvirtd.pid > "$work/libvirtd.log" 2>&1 &'
  echo $! > "$work/libvirtd.pid"
  nsl_ledger add process "$!" --role libvirtd
  export LIBVIRT_DEFAULT_URI=qemu:///system
  for _ in $(seq 1 600); do virsh -q version >/dev/null 2>&1 && break; sleep 0.1; done
  virsh -q version >/dev/null 2>&1 || { nsl_log "libvirtd did not answer within 60 s"; tail -20 "$work/libvirtd.log" >&2; return 1; }
  export VAGRANT_HOME=$work/vagrant.d VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1 \
         VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
}

nsl_box_add() {  # nsl_box_add NAME FILE LOG: the box into VAGRANT_HOME as `vagrant box add` would put it, its files
  # hard-linked from an unpacked copy beside FILE instead of extracted from the tar on every run (1.7 GB: seconds
  # each run, minutes over a crash walk). The copy is unpacked once in the work directory (a killed run leaves
  # nothing half-made outside it) and renamed into place; `vagrant box add` where hard links cannot be made.
  local name=$1 file=$2 log=$3 unpacked dir
  unpacked=$(dirname "$file")/unpacked
  dir=$VAGRANT_HOME/boxes/${name//\//-VAGRANTSLASH-}/0/libvirt
  # (one filesystem only: there a rename is atomic and hard links can be made)
  if [ ! -e "$unpacked/.complete" ] && [ "$(stat -c %d "$NSL_WORK")" = "$(stat -c %d "$(dirname "$file")")" ]; then
    mkdir -p "$NSL_WORK/unpack" && tar -C "$NSL_WORK/unpack" -xf "$file" && touch "$NSL_WORK/unpack/.complete" \
      && { mv -T "$NSL_WORK/unpack" "$unpacked" 2>/dev/null || rm -rf "$NSL_WORK/unpack"; }
  fi
  if [ -e "$unpacked/.complete" ] && mkdir -p "$dir" && cp -al "$unpacked/." "$dir/" 2>"$log"; then
    rm -f "$dir/.complete"; echo "hard-linked from $unpacked" >> "$log"; return 0
  fi
  rm -rf "$VAGRANT_HOME/boxes"
  vagrant box add --name "$name" "$file" > "$log" 2>&1
}

nsl_vagrant_up() {  # nsl_vagrant_up LOG ARGS...: `vagrant up ARGS` in the background, its objects ledgered as they
  # appear: the dnsmasq of each libvirt network once NSL_NETWORKS of them are up (the caller's count, default 1:
  # one step whatever the order they come up in), each QEMU once its domain runs (steps "libvirt network up",
  # "QEMU started"); returns vagrant's exit status
  local log=$1 pid rc=0 net=0 dom=0 running; shift
  NSL_UP_ARGS=("$@")
  nsl_step "start vagrant up" eval 'vagrant up "${NSL_UP_ARGS[@]}" > "$log" 2>&1 &'
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    running=$(virsh -q list --name 2>/dev/null)
    if [ "$net" = 0 ] && { [ "$(virsh -q net-list --name 2>/dev/null | grep -c .)" -ge "${NSL_NETWORKS:-1}" ] \
                           || [ -n "$running" ]; }; then      # a domain runs: its networks are all up
      net=1; nsl_step "libvirt network up" nsl_ledger_pidfile dnsmasq /run/libvirt/network/*.pid
    fi
    if [ "$dom" = 0 ] && [ -n "$running" ]; then
      dom=1; nsl_step "QEMU started" nsl_ledger_pidfile qemu /run/libvirt/qemu/*.pid
    fi
    [ "$net" = 0 ] || nsl_ledger_pidfile dnsmasq /run/libvirt/network/*.pid   # a network beyond NSL_NETWORKS
    [ "$dom" = 0 ] || nsl_ledger_pidfile qemu /run/libvirt/qemu/*.pid    # the lab's next VMs (--no-parallel)
    # test-only: straight to the teardown once N QEMU run, ledgered (the crash walk; N=1: no boot)
    if [ -n "${NSL_END_UP_AT_QEMU:-}" ] && [ "$(grep -c '^qemu ' "$NSL_WORK/ledgered" 2>/dev/null)" -ge "$NSL_END_UP_AT_QEMU" ]; then
      nsl_log "NSL_END_UP_AT_QEMU: $NSL_END_UP_AT_QEMU QEMU run: vagrant up ($pid) ended"; kill -KILL "$pid" 2>/dev/null
    fi
    sleep 0.5
  done
  wait "$pid" || rc=$?
  return $rc
}

nsl_inner_teardown() {  # nsl_inner_teardown WORK (cwd: the Vagrant project)
  local work=$1 rc=0 t v n d pid
  t=$(nsl_now)
  if [ -d "${VAGRANT_DOTFILE_PATH:-.vagrant}" ]; then
    nsl_step "vagrant destroy" vagrant destroy -f >"$work/vagrant-destroy.log" 2>&1 \
      || { nsl_log "vagrant destroy failed:"; tail -20 "$work/vagrant-destroy.log" >&2; rc=1; }
  fi
  nsl_timing destroy "$(nsl_since "$t")"; nsl_log "vagrant destroy -f: $(nsl_since "$t") s"
  # what vagrant keeps on purpose (the box's volume in the pool, the pool) goes too; then check nothing is left
  for v in $(virsh -q vol-list default 2>/dev/null | awk '{print $1}'); do
    nsl_step "delete volume" virsh -q vol-delete "$v" --pool default >/dev/null || rc=1
  done
  if virsh -q pool-info default >/dev/null 2>&1; then
    nsl_step "remove storage pool" eval 'virsh -q pool-destroy default >/dev/null 2>&1; virsh -q pool-undefine default >/dev/null 2>&1' || true
  fi
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
  nsl_step "stop libvirtd" kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { nsl_log "libvirtd $pid did not stop on SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; rc=1; }
  echo "$NSL_STEP" > "$work/steps"     # the outer script's teardown counts on from here (_nsl_cleanup)
  return $rc
}
