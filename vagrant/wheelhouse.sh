#!/usr/bin/env bash
# The wheels that install chaos-inject from THIS checkout on the VMs, which have no route out: this checkout's
# wheel plus every PyPI dependency as a binary wheel for the box's Python (Debian 12: CPython 3.11, x86_64
# glibc), whatever Python the host runs. bcc is Debian's python3-bpfcc, already in the box (the VM's venv sees the
# system packages).   usage: wheelhouse.sh DIR [EXTRAS]   (DIR is emptied first; prints DIR)
# EXTRAS: pyproject's optional dependencies to include too, e.g. `analysis` (pandas, pyarrow: recording a run).
# Uses the project's .venv (make setup) when there is one, else python3 -m pip; dependencies come from pip's cache
# or PyPI. CHAOS_INJECT_WHEELHOUSE=DIR: wheels made already (an earlier wheelhouse.sh DIR) are linked or copied
# instead (the VM crash walk: one wheelhouse for every run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${1:?usage: wheelhouse.sh DIR [EXTRAS]}
extras=${2:-}
py=$repo/.venv/bin/python
[ -x "$py" ] || py=python3
log() { printf '[wheelhouse] %s\n' "$*" >&2; }
rm -rf "$out"; mkdir -p "$out"
if [ -n "${CHAOS_INJECT_WHEELHOUSE:-}" ]; then
  ls "$CHAOS_INJECT_WHEELHOUSE"/chaos_inject-*.whl >/dev/null 2>&1 \
    || { log "CHAOS_INJECT_WHEELHOUSE=$CHAOS_INJECT_WHEELHOUSE holds no chaos_inject wheel"; exit 1; }
  cp -al "$CHAOS_INJECT_WHEELHOUSE/." "$out/" 2>/dev/null || cp -a "$CHAOS_INJECT_WHEELHOUSE/." "$out/"
  log "$(ls "$out" | wc -l) wheels from $CHAOS_INJECT_WHEELHOUSE (CHAOS_INJECT_WHEELHOUSE)"
  echo "$out"; exit 0
fi
t=$(date +%s.%N)
# built from a private copy inside DIR: setuptools builds in the source tree (build/), which two runs at once would
# share, and a run killed mid-build would leave half-built there
src=$out/.src
rsync -a --exclude .git --exclude .cache --exclude .venv --exclude build --exclude '*.egg-info' "$repo/" "$src/"
"$py" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$src" >&2
rm -rf "$src"
wheel=$(ls "$out"/chaos_inject-*.whl)
# the box's interpreter: CPython 3.11 on glibc 2.36 (manylinux_2_17..2_36)
"$py" -m pip download --quiet --dest "$out" --only-binary=:all: --implementation cp --python-version 3.11 \
  --abi cp311 --abi abi3 --abi none --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any "$wheel${extras:+[$extras]}" >&2
log "$(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1) in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s: $(ls "$out" | sed 's/-[0-9].*//' | paste -sd' ')"
echo "$out"
