#!/usr/bin/env bash
# Trains the shipped monitor suite: six safety concepts on SmolLM2 and Gemma 3,
# each at about 25%, 50% and 75% of the blocks, from data/suite (made by
# scripts/data/make_suite.py). Writes monitors/<model>/<concept>-l<L>/ and
# monitors/<model>/SUMMARY.json. Deterministic given the data and the seed.
#
# Usage: scripts/build-suite.sh [smollm2] [gemma3]     (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
PROBEGATE="${PROBEGATE:-cargo run --quiet --}"

# concept  negative-label  positive-label
CONCEPTS=(
  "privacy_pii no_pii pii"
  "refusal_compliance safe unsafe"
  "harmful_request benign harmful"
  "prompt_injection benign injection"
  "toxicity civil toxic"
  "self_harm no_risk at_risk"
)
declare -A DEPTHS=([smollm2]="7,15,22" [gemma3]="4,9,13")

models=("$@")
[ ${#models[@]} -eq 0 ] && models=(smollm2 gemma3)
for model in "${models[@]}"; do
  out="monitors/$model"
  mkdir -p "$out"
  summary="$out/SUMMARY.json"
  echo "[" >"$summary.tmp"
  first=1
  for row in "${CONCEPTS[@]}"; do
    read -r concept neg pos <<<"$row"
    echo "== $model / $concept (layers ${DEPTHS[$model]})" >&2
    json=$($PROBEGATE monitor train --model "$model" \
      --data "data/suite/$concept/train.jsonl" --test "data/suite/$concept/test.jsonl" \
      --layers "${DEPTHS[$model]}" --out "$out" --name "$concept" --concept "$concept" \
      --labels "$neg,$pos" --seed 20261127 --format json --quiet)
    [ $first -eq 1 ] || echo "," >>"$summary.tmp"
    first=0
    echo "{\"concept\": \"$concept\", \"result\": $json}" >>"$summary.tmp"
  done
  echo "]" >>"$summary.tmp"
  mv "$summary.tmp" "$summary"
done
