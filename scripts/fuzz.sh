#!/usr/bin/env bash
# Long fuzzing campaigns over every parser of untrusted bytes
# (tests/it/fuzz.rs). `cargo test` runs 64 cases per target; this runs
# CASES per target (default 20000) in the release profile, then in the dev
# profile, where integer overflow panics instead of wrapping, and prints
# seconds per target. A failure prints proptest's minimal failing input:
# add it as a regression test next to the parser, fix, run again.
#
#   scripts/fuzz.sh [CASES] [TARGET-FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-20000}"
filter="${2:-}"
targets=$(cargo test --release --test it -- --list fuzz:: 2>/dev/null |
  sed -n 's/^fuzz::\(.*\): test$/\1/p' | grep -v '^seeds_are_valid$' | grep -- "$filter" || true)
[ -n "$targets" ] || { echo "no fuzz targets match '$filter'" >&2; exit 2; }
status=0
for profile in release dev; do
  flag=$([ "$profile" = release ] && echo --release || true)
  cargo test $flag --test it --no-run -q 2>/dev/null
  for t in $targets; do
    start=$(date +%s.%N)
    if PROPTEST_CASES="$cases" cargo test $flag -q --test it -- --exact "fuzz::$t" >"/tmp/fuzz-$t-$profile.log" 2>&1; then
      result=ok
    else
      result="FAILED (see /tmp/fuzz-$t-$profile.log)"; status=1
    fi
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    printf '%-8s %-30s %7s cases %8s s  %s\n' "$profile" "$t" "$cases" "$secs" "$result"
  done
done
exit $status
