#!/usr/bin/env bash
# The lab on three VMs here (libvirt, QEMU TCG), the seed's experiment on them, everything destroyed (as root):
#   vagrant/lab.sh [RUN_DIR_ON_HOST]      (`make vagrant-lab`; the `vms` tier of `make test-vms` runs it)
#   1. the local box (vagrant/box/build.sh, cached) and the wheelhouse of this checkout with the analysis extra
#      (vagrant/wheelhouse.sh: pandas/pyarrow record the run)
#   2. a network namespace of our own (only `lo`) with a private libvirtd (vagrant/lib/nslibvirt.sh); the VMs'
#      networks -- the management network (DHCP, no NAT) and the lab's 192.168.56.0/24 (isolated, no DHCP) -- are
#      libvirt networks on bridges inside it: no route out
#   3. `vagrant up --no-parallel` of db, api, prometheus from vagrant/Vagrantfile (CHAOS_INJECT_BOX=chaos-inject/
#      debian12): the repo rsynced to /vagrant, the services provisioned by the netns lab's definitions
#      (provision/*.sh), chaos-inject installed from the wheelhouse on every VM, the load at 40 % of the api's
#      capacity measured on the api VM (CHAOS_LAB_LOAD_RATE=auto)
#   4. on the api VM: provision/experiment.py runs injector/lab/experiments/db-timeout.json (the VMs' addresses as
#      its configuration variables); the run directory comes back to the host as RUN_DIR_ON_HOST (default
#      .cache/vagrant-lab/runs/<time>) by `vagrant ssh api -c 'sudo tar ...'`
#      With CHAOS_LAB_CONTROLLER=host, step 4 runs from this machine instead, as a fleet: vagrant/inventory.py
#      writes the VMs' Ansible inventory (RUN_DIR/hosts.yml), provision/handover.py stops the api VM's load (its
#      rate and the baseline sized for it printed), and `chaos-inject run db-timeout.json --inventory hosts.yml
#      --load-url ...` runs in our namespace (the controller: the only place that reaches the VMs), the delay
#      carried by Ansible to the api VM, the probes and the load from here; RUN_DIR/left/ records what each VM
#      (chaos-inject status, ledgers, fleet notes, qdiscs) and the controller (ledgers) still held after it
#   5. vagrant destroy -f; no domain, volume, pool, network or bridge may be left; libvirtd stopped by PID; the
#      namespace (and anything left in it, all ours) and the work directory removed -- on every exit path.
# Prints timings (box, wheelhouse, vagrant up, experiment, fetch, destroy) and the experiment's verdict; exit 0
# only if the verdict is HELD and the teardown left nothing; 77 when this machine cannot run it.
# Env: LAB_KEEP_LOGS=DIR keeps the logs; CHAOS_LAB_LOAD_RATE (default auto); CHAOS_LAB_CONTROLLER (vm, the
# default, or host); VM memory below.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
NSL_TAG=vagrant-lab
# shellcheck source=lib/nslibvirt.sh
. "$here/lib/nslibvirt.sh"

# where the experiment runs: on the api VM (vm), or from this machine through Ansible (host: vagrant/inventory.py)
CONTROLLER=${CHAOS_LAB_CONTROLLER:-vm}
case $CONTROLLER in vm|host) ;; *) echo "lab.sh: CHAOS_LAB_CONTROLLER must be vm or host" >&2; exit 2 ;; esac
export CHAOS_LAB_CONTROLLER=$CONTROLLER

if [ "${1:-}" = "--inner" ]; then
  work=$2 dest=$3
  nsl_inner_start "$work"
  export CHAOS_INJECT_BOX=$BOX_NAME CHAOS_INJECT_ISOLATED=1 CHAOS_INJECT_LIBVIRT_DRIVER=qemu \
         CHAOS_INJECT_WHEELS=$work/wheels CHAOS_INJECT_CONSOLE_DIR=$work/console \
         CHAOS_INJECT_VM_MEMORY_API=${CHAOS_INJECT_VM_MEMORY_API:-768} \
         CHAOS_INJECT_VM_MEMORY_DB=${CHAOS_INJECT_VM_MEMORY_DB:-512} \
         CHAOS_INJECT_VM_MEMORY_PROMETHEUS=${CHAOS_INJECT_VM_MEMORY_PROMETHEUS:-512} \
         CHAOS_LAB_LOAD_RATE=${CHAOS_LAB_LOAD_RATE:-auto} VAGRANT_DOTFILE_PATH=$work/dot-vagrant
  mkdir -p "$work/console"
  cd "$repo/vagrant"
  inner() {
    local t
    t=$(nsl_now); nsl_box_add "$BOX_NAME" "$BOX_FILE" "$work/vagrant-box-add.log" \
      || { nsl_log "vagrant box add failed:"; tail -20 "$work/vagrant-box-add.log" >&2; return 1; }
    # two libvirt networks (Vagrantfile): the management network and the lab's 192.168.56.0/24
    # NSL_UP_NO_PROVISION=1 (test-only, the crash walk of the second and third QEMU): boots without provisioning
    t=$(nsl_now); NSL_NETWORKS=2 nsl_vagrant_up "$work/vagrant-up.log" --provider libvirt --no-parallel \
      ${NSL_UP_NO_PROVISION:+--no-provision} \
      || { nsl_log "vagrant up failed:"; tail -40 "$work/vagrant-up.log" >&2; return 1; }
    nsl_timing up "$(nsl_since "$t")"; nsl_log "vagrant up (db, api, prometheus, provisioned): $(nsl_since "$t") s"
    grep -E 'chaos-inject: |load: ' "$work/vagrant-up.log" | sed 's/^/  /' >&2 || true
    [ "$CONTROLLER" = host ] && { from_host; return; }
    local rc=0 remote=/var/lib/chaos-inject/runs/vm-run
    t=$(nsl_now)
    vagrant ssh api -c "sudo /opt/chaos-inject/venv/bin/python /vagrant/vagrant/provision/experiment.py $remote" \
      > "$work/experiment.out" 2>&1 || rc=$?
    nsl_timing experiment "$(nsl_since "$t")"
    tr -d '\r' < "$work/experiment.out" | grep -vE '^\s*$' | tail -40 | sed 's/^/  api: /' >&2
    nsl_log "experiment on the VMs: $(nsl_since "$t") s (exit $rc)"
    t=$(nsl_now)
    mkdir -p "$dest"
    if vagrant ssh api -c "sudo tar -C $remote -cf - ." 2>"$work/fetch.err" | tar -C "$dest" -xf -; then
      nsl_timing fetch "$(nsl_since "$t")"; nsl_log "run directory fetched to $dest ($(du -sh "$dest" | cut -f1))"
    else
      nsl_log "could not fetch the run directory: $(tail -3 "$work/fetch.err")"; rc=1
    fi
    tr -d '\r' < "$work/experiment.out" > "$dest/vm-experiment.out" 2>/dev/null || true
    return $rc
  }
  from_host() {  # the experiment from here: this namespace is the controller, Ansible carries the fault to the api VM
    local rc=0 t ctl=$work/ctl-run out=$dest/host-experiment.out vm
    t=$(nsl_now)
    mkdir -p "$dest" "$ctl" "$work/tmp"
    "$NSL_PY" "$here/inventory.py" "$dest/hosts.yml" || { nsl_log "vagrant/inventory.py failed"; return 1; }
    vagrant ssh api -c "sudo /opt/chaos-inject/venv/bin/python /vagrant/vagrant/provision/handover.py" \
      2>"$work/handover.err" | tr -d '\r' | tail -1 > "$work/handover.json" \
      && "$NSL_PY" -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))["vars"], sys.stdout)' \
           "$work/handover.json" > "$work/vars.json" \
      || { nsl_log "the load's handover on the api VM failed:"; tail -20 "$work/handover.err" >&2; return 1; }
    local load_url rate timeout why
    read -r load_url rate timeout why < <("$NSL_PY" -c 'import json,sys; h = json.load(open(sys.argv[1]));
print(h["load_url"], h["rate"], h["timeout_s"], h["why"])' "$work/handover.json")
    nsl_log "load handed over to the controller: $why"
    # the controller's own run state (its fleet ledger) and temporary files in the work directory, not the host's;
    # a renewal is one Ansible round on a TCG VM (seconds of Python start-up there): a heartbeat of 15 s is too short
    CHAOS_INJECT_RUN_DIR=$ctl TMPDIR=$work/tmp "$(dirname "$NSL_PY")/chaos-inject" run \
      "$repo/injector/lab/experiments/db-timeout.json" --inventory "$dest/hosts.yml" --var-file "$work/vars.json" \
      --load-url "$load_url" --load-rate "$rate" --load-timeout "${timeout}s" --heartbeat-timeout 120s \
      --record "$dest" > "$out" 2>&1 || rc=$?
    nsl_timing experiment "$(nsl_since "$t")"
    grep -vE '^\s*$' "$out" | tail -40 | sed 's/^/  controller: /' >&2
    nsl_log "experiment from the host: $(nsl_since "$t") s (exit $rc)"
    [ "$rc" = 0 ] && echo "verdict: HELD" >> "$out" || echo "verdict: NOT HELD (chaos-inject run exit $rc)" >> "$out"
    # what the run left: every VM's chaos-inject runs, ledgers, fleet notes and qdiscs; the controller's ledgers
    mkdir -p "$dest/left"
    for vm in db api prometheus; do
      vagrant ssh "$vm" -c 'sudo sh -c "chaos-inject status --json; echo @@; ls -A /run/chaos-inject/runs /run/chaos-inject/fleet 2>/dev/null; echo @@; tc qdisc show"' \
        2>/dev/null | tr -d '\r' > "$dest/left/$vm.txt" || rc=1
    done
    ls -A "$ctl/runs" > "$dest/left/controller.txt" 2>/dev/null || true
    return $rc
  }
  rc=0
  inner || rc=1
  nsl_inner_teardown "$work" || rc=1
  exit $rc
fi

nsl_preflight
t=$(nsl_now)
box=$("$repo/vagrant/box/build.sh")
built=$(sed -n 's/.*"build_seconds": \([0-9.]*\).*/\1/p' "$(dirname "$box")/build.json")
nsl_log "box: $box ($(du -h "$box" | cut -f1)); built in $built s ($(nsl_since "$t") s this run)"
export BOX_FILE=$box BOX_NAME=$("$repo/vagrant/box/build.sh" --box-name)
mkdir -p "$repo/.cache/vagrant-lab/runs"
dest=$(realpath -m "${1:-$repo/.cache/vagrant-lab/runs/$(date +%Y%m%d-%H%M%S)}")
nsl_mkwork "$repo/.cache/vagrant-lab" work.       # the run's ledger, then the work directory
work=$NSL_WORK
t=$(nsl_now)
"$here/wheelhouse.sh" "$work/wheels" analysis >/dev/null
wheel_secs=$(nsl_since "$t")
nsl_on_exit() {
  if [ -n "${LAB_KEEP_LOGS:-}" ]; then
    mkdir -p "$LAB_KEEP_LOGS"; cp -r "$NSL_WORK"/*.log "$NSL_WORK"/*.out "$NSL_WORK"/timings "$NSL_WORK"/console "$LAB_KEEP_LOGS"/ 2>/dev/null || true
  fi
  local f; f() { awk -v k="$1" '$1==k{print $2}' "$NSL_WORK/timings" 2>/dev/null; }
  nsl_log "timings: box build ${built} s, wheelhouse ${wheel_secs} s, vagrant up $(f up) s, experiment $(f experiment) s, fetch $(f fetch) s, destroy $(f destroy) s"
  local verdict; verdict=$(sed -n 's/^verdict: //p' "$dest/$CONTROLLER-experiment.out" 2>/dev/null | tail -1)
  nsl_log "verdict: ${verdict:-none}; run directory: $dest"
  [ "$1" = 0 ] && nsl_log "PASS" || nsl_log "FAIL (rc $1)"
}
nsl_run cilab "$work" "$here/lab.sh" --inner "$work" "$dest"
