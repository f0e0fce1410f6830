#!/usr/bin/env bash
# How extraction grows with the number of prompts, their length and the
# model's size, probegate against transformers side by side at each point
# (the every-block row of benches/extract.rs, f32). See BENCHMARKS.md.
#
#   THREADS   threads for both sides (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
cargo bench --bench extract --no-run --quiet 2>/dev/null
for model in smollm2 gemma3; do
  for shape in "64 32" "256 32" "64 128" "32 512"; do
    read -r n t <<<"$shape"
    PROBEGATE_BENCH_MODEL=$model PROBEGATE_BENCH_PROMPTS=$n PROBEGATE_BENCH_TOKENS=$t \
      PROBEGATE_BENCH_ROWS=all PROBEGATE_BENCH_NATIVE=0 PROBEGATE_BENCH_THREADS=$THREADS \
      cargo bench --bench extract --quiet 2>/dev/null | sed -n '1p;3p'
  done
done
