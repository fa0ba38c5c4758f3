#!/usr/bin/env bash
# The kernel test tier: boot a stock Debian kernel (6.1 by default, 6.12 from backports) under QEMU and run
#   python -m pytest -m kernel tests/kernel [extra pytest args]
# inside it. Prints pytest's summary line and exits with pytest's exit code, except:
#   77  the tier cannot run on this machine (reason printed on one line)
#   1   pytest collected no tests (its exit 5), or every test was skipped inside the VM
#   124 / 125  the VM timed out / died without a result (see scripts/vm/run.sh)
#   usage: kernel-tier.sh [5.10|6.1|6.12] [-- pytest args...]
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
series=6.1
if [ $# -gt 0 ] && [ "$1" != "--" ]; then series=$1; shift; fi
[ "${1:-}" = "--" ] && shift

py=$here/.venv/bin/python
[ -x "$py" ] || { echo "kernel tier skipped: no $py (run make setup)"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "kernel tier skipped: needs root (9p export of / and namespaces in the guest)"; exit 77; }

mkdir -p "$here/.cache/vm"
# one log per run (several tiers may run at once, e.g. 6.1 and 6.12); the last finished is kept as
# .cache/vm/kernel-tier-<series>.log
logf=$(mktemp "$here/.cache/vm/kernel-tier-$series.XXXXXX.log")
start=$(date +%s)
# run.sh in the background (so a TERM/INT here reaches it at once and it kills QEMU), its output streamed from the log
# No plugin autoload in the guest: importing hypothesis's plugin alone costs ~10-19 s of TCG CPU and these tests
# do not use it (KERNEL_TIER_PLUGINS=1 restores autoload).
autoload=()
[ "${KERNEL_TIER_PLUGINS:-0}" = 1 ] || autoload=(env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1)
# 17 tests took 320 s on a quiet machine and 480-600 s on a busy one (TCG shares the 2 cores); the seed's
# experiment on the lab (test_lab_demo.py) adds 3-8 min (lab up 30-90 s, a baseline of 27-120 s, a recovery as
# long, the classifier's compile; not yet measured to the end on a quiet host): 30 min is the cap.
VM_TIMEOUT=${VM_TIMEOUT:-1800} bash "$here/scripts/vm/run.sh" "$series" -- "${autoload[@]}" "$py" -m pytest -m kernel tests/kernel -p no:cacheprovider "$@" \
  > "$logf" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; rm -f "$logf"; exit 143' TERM
trap 'kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; rm -f "$logf"; exit 130' INT
tail -s 0.2 -n +1 -f --pid="$child" "$logf" & tailpid=$!
rc=0; wait "$child" || rc=$?
wait "$tailpid" 2>/dev/null || true
trap - TERM INT
wall=$(( $(date +%s) - start ))

# pytest's own summary line, e.g. "==== 4 passed in 12.3s ====" (the serial console adds \r)
summary=$(tr -d '\r' < "$logf" \
          | grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s|no tests ran in' \
          | tail -1 | sed -E 's/^=+ //; s/ =+$//' || true)
[ -n "$summary" ] || summary="no pytest summary line"
mv -f "$logf" "$here/.cache/vm/kernel-tier-$series.log"
tag="kernel tier ($series)"
case "$rc" in
  77) exit 77 ;;                                   # run.sh / fetch-kernel.sh printed the reason
  124|125) echo "$tag: FAILED: VM did not return a result (exit $rc), ${wall}s"; exit "$rc" ;;
  5) echo "$tag: FAILED: no tests collected ($summary), ${wall}s"; exit 1 ;;
esac
if [ "$rc" -eq 0 ] && ! grep -q ' passed' <<<"$summary"; then
  echo "$tag: FAILED: nothing passed inside the VM ($summary), ${wall}s"; exit 1
fi
echo "$tag: $summary (tier wall ${wall}s, exit $rc)"
exit "$rc"
