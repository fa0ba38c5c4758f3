#!/usr/bin/env bash
# Runs inside the smoke VM as root (smoke.sh: vagrant ssh -c 'sudo bash /opt/chaos-inject/smoke/in-vm.sh'):
#   1. install chaos-inject from the wheelhouse synced from the host (no index: the VM has no route out) into a
#      venv that sees Debian's python3-bpfcc
#   2. two network namespaces joined by a veth pair (10.77.0.1 <-> 10.77.0.2), TCP listeners on :5001, :5002
#   3. chaos-inject --flow '10.77.0.1->10.77.0.2:5001/tcp' --delay 100ms --engine netem (in the background), connect
#      times to both ports, chaos-inject stop RUN_ID (it exits 0); then no qdisc, filter or BPF pin of ours is left
# Prints "check <name> ok|FAIL <detail>" lines and "figure <name> <value>" lines; exit 0 only if every check passed.
set -uo pipefail
base=/opt/chaos-inject
venv=$base/venv
A=ci-smoke-a B=ci-smoke-b
DELAY_MS=100
rc=0
ok() { echo "check $1 ok ${*:2}"; }
fail() { echo "check $1 FAIL ${*:2}"; rc=1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
server="" inject=""
cleanup() {   # a failed check: chaos-inject's SIGTERM handler removes what it made; then our namespaces
  [ -z "$inject" ] || ! kill -0 "$inject" 2>/dev/null || { kill -TERM "$inject"; wait "$inject"; }
  [ -z "$server" ] || kill "$server" 2>/dev/null
  ip netns del "$A" 2>/dev/null; ip netns del "$B" 2>/dev/null
}
trap cleanup EXIT

t=$(now)
python3 -m venv --system-site-packages "$venv" \
  && "$venv/bin/pip" install --quiet --no-index --no-compile --find-links "$base/wheels" chaos-inject \
  || { fail install "pip install from the wheelhouse failed"; exit 1; }
echo "figure install_s $(since "$t")"
ci=$venv/bin/chaos-inject
version=$("$ci" --version) && ok install "$version" || { fail install "chaos-inject --version failed"; exit 1; }
export CHAOS_INJECT_RUN_DIR=$base/run

ip netns add "$A" && ip netns add "$B"
ip -n "$A" link add ci-sa type veth peer name ci-sb netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev ci-sa; ip -n "$B" addr add 10.77.0.2/24 dev ci-sb
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set ci-sa up; ip -n "$B" link set ci-sb up
qdisc_before=$(ip netns exec "$A" tc qdisc show dev ci-sa)
ip netns exec "$B" python3 "$base/smoke/flowcheck.py" serve 5001 5002 > /tmp/flowcheck-serve.log 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q listening /tmp/flowcheck-serve.log && break; sleep 0.1; done
# the minimum of 20 connect times: a delay raises every one of them, TCG's scheduling noise only some
probe() { ip netns exec "$A" python3 "$base/smoke/flowcheck.py" probe 10.77.0.2 "$1" 20 | sed -n 's/.*"min_ms": \([0-9.]*\).*/\1/p'; }
base1=$(probe 5001); base2=$(probe 5002)
echo "figure baseline_connect_ms 5001=$base1 5002=$base2"

t=$(now)
# in the background, not --detach: --detach gives up after 120 s, and bcc's compile of the classifier under TCG on
# a loaded host can take longer; the fault is active once its status file is there and netem is on the veth
"$ci" --flow '10.77.0.1->10.77.0.2:5001/tcp' --netns "$A" --delay "${DELAY_MS}ms" --engine netem \
      --duration 1200s --quiet > /tmp/chaos-inject.out 2> /tmp/chaos-inject.err &
inject=$!
run_id=""
for _ in $(seq 1 1800); do
  kill -0 "$inject" 2>/dev/null || break
  f=$(ls "$CHAOS_INJECT_RUN_DIR"/runs/*.status.json 2>/dev/null | head -1)
  if [ -n "$f" ] && ip netns exec "$A" tc qdisc show dev ci-sa | grep -q netem; then
    run_id=$(basename "$f" .status.json); break
  fi
  sleep 0.5
done
if [ -z "$run_id" ]; then
  fail inject "chaos-inject did not become active: $(tail -5 /tmp/chaos-inject.err)"; kill "$inject" 2>/dev/null; exit 1
fi
echo "figure inject_active_s $(since "$t")"
ok inject "run $run_id active, engine netem"
ip netns exec "$A" tc qdisc show dev ci-sa | grep -q netem && ok qdisc "netem under our root on ci-sa" \
  || fail qdisc "no netem qdisc on ci-sa: $(ip netns exec "$A" tc qdisc show dev ci-sa | tr '\n' ';')"
d1=$(probe 5001); d2=$(probe 5002)
echo "figure fault_connect_ms 5001=$d1 5002=$d2"
# the delayed flow: its connect time rises by the delay (TCG adds a few ms of noise); the other port does not
awk -v b="$base1" -v d="$d1" -v m="$DELAY_MS" 'BEGIN{r=d-b; exit !(r >= m-5 && r <= m+60)}' \
  && ok delayed "port 5001 connect min $base1 -> $d1 ms (+${DELAY_MS} ms asked)" \
  || fail delayed "port 5001 connect min $base1 -> $d1 ms, expected +${DELAY_MS} ms"
awk -v b="$base2" -v d="$d2" 'BEGIN{exit !(d - b < 30)}' \
  && ok undelayed "port 5002 connect min $base2 -> $d2 ms" \
  || fail undelayed "port 5002 connect min $base2 -> $d2 ms: the other flow was delayed"
"$ci" stop "$run_id" > /tmp/chaos-inject-stop.out 2>&1 && ok stop "$(tr '\n' ' ' < /tmp/chaos-inject-stop.out)" \
  || fail stop "$(cat /tmp/chaos-inject-stop.out)"
inject_rc=0; wait "$inject" || inject_rc=$?
[ "$inject_rc" = 0 ] && ok exit "chaos-inject exited 0: $(grep -m1 '^run ' /tmp/chaos-inject.out)" \
  || fail exit "chaos-inject exited $inject_rc: $(tail -3 /tmp/chaos-inject.err)"
qdisc_after=$(ip netns exec "$A" tc qdisc show dev ci-sa)
[ "$qdisc_after" = "$qdisc_before" ] && ok restored "qdiscs on ci-sa as before: $qdisc_before" \
  || fail restored "qdiscs on ci-sa: before '$qdisc_before', after '$qdisc_after'"
filters=$(ip netns exec "$A" tc filter show dev ci-sa egress 2>/dev/null)
[ -z "$filters" ] && ok filters "no filter left" || fail filters "filters left: $filters"
pins=$(ls /sys/fs/bpf 2>/dev/null | tr '\n' ' ')
[ -z "$pins" ] && ok pins "no BPF pin left" || fail pins "left in /sys/fs/bpf: $pins"
a1=$(probe 5001)
awk -v b="$base1" -v d="$a1" 'BEGIN{exit !(d - b < 30)}' && ok after "port 5001 connect min $a1 ms after stop" \
  || fail after "port 5001 connect min $a1 ms after stop (baseline $base1)"
exit $rc
