#!/usr/bin/env bash
# Every test tier this machine can run, each reporting its counts (or why it was skipped):
#   unit   no root: specs, plan, runner with a fake engine, analysis, notebooks
#   host   root + bcc on this kernel, in throwaway network namespaces (eBPF engine, CLI lifecycle)
#   kernel a stock Debian kernel under QEMU, for what this kernel lacks (netem, fq)
# Exit status is non-zero if any tier failed, or if a tier that must run collected no test.
# KERNEL_SERIES="6.1 6.12" runs the kernel tier on several kernels (make test-kernels).
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
py=$here/.venv/bin/python
logdir=$here/.cache/test-logs
mkdir -p "$logdir"
series_list=${KERNEL_SERIES:-6.1}
declare -a lines=()
failed=0
total_passed=0 total_failed=0 total_skipped=0

count() {  # count <word> <summary line>
  grep -oE "[0-9]+ $1" <<<"$2" | head -1 | grep -oE '^[0-9]+' || echo 0
}

tally() {  # tally <tier> <exit code> <log>
  local tier=$1 rc=$2 log=$3 summary
  summary=$(tr -d '\r' < "$log" | grep -E '([0-9]+ (passed|failed|errors?|skipped)).* in [0-9.]+s|no tests ran' \
            | tail -1 | sed -E 's/^=+ //; s/ =+$//')
  local p f e s
  p=$(count passed "$summary"); f=$(count failed "$summary"); e=$(count error "$summary"); s=$(count skipped "$summary")
  total_passed=$((total_passed + p)); total_failed=$((total_failed + f + e)); total_skipped=$((total_skipped + s))
  case "$rc" in
    0) lines+=("$tier: ${summary:-ok}") ;;
    5) lines+=("$tier: FAILED: no tests collected"); failed=1 ;;
    77) lines+=("$tier: SKIPPED: $(tail -1 "$log")") ;;
    *) lines+=("$tier: FAILED (exit $rc): ${summary:-see $log}"); failed=1 ;;
  esac
}

run_tier() {  # run_tier <name> <command...>
  local name=$1; shift
  local log=$logdir/$name.log
  echo "=== $name tier: $*"
  "$@" 2>&1 | tee "$log"
  tally "$name" "${PIPESTATUS[0]}" "$log"
}

run_tier unit "$py" -m pytest tests/unit -q -p no:cacheprovider
run_tier host "$py" -m pytest tests/host -q -p no:cacheprovider
for series in $series_list; do
  run_tier "kernel-$series" bash scripts/vm/kernel-tier.sh "$series"
done

echo
echo "=== summary"
printf '%s\n' "${lines[@]}"
echo "tests: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit $failed
