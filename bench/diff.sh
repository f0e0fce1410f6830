#!/usr/bin/env bash
# Diff throughput against the disk's sequential read speed on the same files,
# and diff's peak memory. For each pair it reads the base and candidate weight
# files with dd (1 MiB blocks, the peer: the fastest a diff could possibly go
# if it did no work), then runs `probegate diff` on the same pair, both from a
# cold guest page cache (when this user may drop it) and warm. Prints one row
# per pair and mode. See BENCHMARKS.md.
#
#   THREADS   probegate's threads (default 2)
#   ZOO       the zoo root (default ~/.cache/probegate/zoo, made by `probegate zoo build`)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
CACHE="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}"
ZOO="${ZOO:-$CACHE/zoo}"
cargo build --release --quiet
PG="$PWD/target/release/probegate"

can_drop=0
if [ -w /proc/sys/vm/drop_caches ]; then can_drop=1; fi
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# name | base reference | base files | candidate reference | candidate files
pairs=(
  "smollm2 full fine-tune (f32 safetensors)|smollm2|$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf|$ZOO/smollm2/full-chat|$ZOO/smollm2/full-chat/model.safetensors"
  "smollm2 q8_0 GGUF|smollm2|$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf|$ZOO/smollm2/q8_0.gguf|$ZOO/smollm2/q8_0.gguf"
  "gemma3 full fine-tune (f32 safetensors)|gemma3|$CACHE/models/gemma-3-270m-q4_k_m.gguf|$ZOO/gemma3/full-chat|$ZOO/gemma3/full-chat/model.safetensors"
  "gemma3 q8_0 GGUF|gemma3|$CACHE/models/gemma-3-270m-q4_k_m.gguf|$ZOO/gemma3/q8_0.gguf|$ZOO/gemma3/q8_0.gguf"
)

secs() { python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$@"; }

printf '%-40s %-5s %9s %10s %10s %7s %9s\n' pair cache MB "read MB/s" "diff MB/s" ratio "peak MB"
for p in "${pairs[@]}"; do
  IFS='|' read -r name base bfile cand cfile <<<"$p"
  if [ ! -e "$bfile" ] || [ ! -e "$cfile" ]; then
    echo "diff.sh: skipping '$name': run scripts/fetch-models.sh and probegate zoo build first" >&2
    continue
  fi
  bytes=$(( $(stat -c %s "$bfile") + $(stat -c %s "$cfile") ))
  modes=(warm)
  [ "$can_drop" = 1 ] && modes=(cold warm)
  for mode in "${modes[@]}"; do
    # Warm: one untimed pass of each first, so both sides read from memory.
    if [ "$mode" = cold ]; then drop; else cat "$bfile" "$cfile" >/dev/null; fi
    t0=$(date +%s.%N)
    dd if="$bfile" of=/dev/null bs=1M status=none
    dd if="$cfile" of=/dev/null bs=1M status=none
    t1=$(date +%s.%N)
    read_s=$(secs "$t0" "$t1")
    if [ "$mode" = cold ]; then drop; fi
    out=$(mktemp)
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$out.rss" "$PG" --quiet --threads "$THREADS" diff "$base" "$cand" --format json >"$out"
    t1=$(date +%s.%N)
    diff_s=$(secs "$t0" "$t1")
    rss_kb=$(tail -1 "$out.rss")
    python3 - "$name" "$mode" "$bytes" "$read_s" "$diff_s" "$rss_kb" "$out" <<'PY'
import json, sys
name, mode, b, rs, ds, rss, out = sys.argv[1:]
b, rs, ds = int(b), float(rs), float(ds)
family = json.load(open(out)).get("family", "?")
mb = b / 1e6
print(f"{name:<40} {mode:<5} {mb:9.0f} {mb / rs:10.0f} {mb / ds:10.0f} {rs / ds:6.2f}x {int(rss) / 1024:9.0f}   ({family})")
PY
    rm -f "$out" "$out.rss"
  done
done
echo "ratio = diff throughput / sequential read throughput of the same two files (1.00x = diff is read-bound)"
