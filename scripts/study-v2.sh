#!/usr/bin/env bash
# Rebuilds the v2 study grid (issue #17) from a clean clone: the zoo of both
# models, then every condition through the gate with full revalidation and
# every repair rung tried alone (`probegate study grid`), one condition at a
# time so an interrupted run resumes where it stopped. Then STUDY.md.
#
#   scripts/study-v2.sh [smollm2] [gemma3]      (default: both)
#
#   PROBEGATE         the binary (default: target/release/probegate, built if missing)
#   PROBEGATE_CACHE   models, zoo and activations (default: ~/.cache/probegate)
#   STUDY_DIR         history and reports (default: study/v2 in this clone)
#   BUDGETED_POLICY   the policy of the budgeted runs (default: default)
#   BUDGETED_TAG      their directories, budgeted-<tag>-<model> (default: seq);
#                     e.g. BUDGETED_POLICY=study/v2/policy-reserve120.toml
#                     BUDGETED_TAG=reserve120 to try a policy before it ships
#
# Each condition runs twice: with full revalidation (the ground truth, into
# reports-<model>) and as the default policy runs it (sequential
# revalidation within its budget, into budgeted-seq-<model>: a replay of
# full reports cannot redo sequential looks), so STUDY.md can count the
# gate's false passes, false fails and labeled cost (issue #18).
#
# The grid's results are data committed with the script that made them:
# study/v2 keeps each condition's report.json and the history rows in git
# (study/v2/.gitignore drops the rest), so a run cut off on one machine
# resumes on another, and STUDY.md is regenerated from them in seconds.
# When a newer probegate computes a feature the committed rows lack,
# scripts/study-refeature.py adds it (seconds per condition, outcomes untouched).
#
# Time on 2 cores (Intel Xeon): zoo 16 + 37 min; grid about 2 min per
# SmolLM2 condition and 4-5 min per Gemma 3 condition, 33 conditions each,
# and as many again for the default policy's runs (on an AMD EPYC, about
# 80 s per SmolLM2 and 45 s per Gemma 3 condition since a failing one stops
# at its first monitor beyond repair).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}"
DIR="${STUDY_DIR:-study/v2}"
PG="${PROBEGATE:-target/release/probegate}"
BPOLICY="${BUDGETED_POLICY:-default}"
BTAG="${BUDGETED_TAG:-seq}"
[ -x "$PG" ] || cargo build --release --quiet
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(smollm2 gemma3)
mkdir -p "$DIR"
scripts/fetch-models.sh >/dev/null
for m in "${models[@]}"; do
  zoo="$CACHE/zoo/$m"
  # Builds only the conditions the manifest lacks: seconds when it is complete.
  "$PG" zoo build --models "$m" --out "$CACHE/zoo" --quiet >/dev/null
  conds=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(" ".join(["identical"]+[c["name"] for c in m["conditions"]]))' "$zoo/zoo.json")
  for c in $conds; do
    if [ -f "$DIR/history-$m.jsonl" ] && grep -q "\"condition\":\"$c\"" "$DIR/history-$m.jsonl"; then
      continue
    fi
    echo "study-v2: $m / $c" >&2
    # rc 1 is a failed gate (the grid's normal outcome); 2 is an error.
    rc=0
    "$PG" study grid --zoo "$zoo" --monitors "monitors/$m" --history "$DIR/history-$m.jsonl" \
      --reports "$DIR/reports-$m" --only "$c" --quiet --format json >"$DIR/last.json" || rc=$?
    [ "$rc" -le 1 ] || { echo "study-v2: $m / $c failed (exit $rc)" >&2; exit 2; }
  done
  for c in $conds; do
    [ -f "$DIR/budgeted-$BTAG-$m/$c/report.json" ] && continue
    echo "study-v2: $m / $c (budgeted, $BPOLICY)" >&2
    rc=0
    "$PG" study grid --budgeted --policy "$BPOLICY" --zoo "$zoo" --monitors "monitors/$m" \
      --reports "$DIR/budgeted-$BTAG-$m" --only "$c" --quiet --format json >"$DIR/last.json" || rc=$?
    [ "$rc" -le 1 ] || { echo "study-v2: $m / $c (budgeted, $BPOLICY) failed (exit $rc)" >&2; exit 2; }
  done
done
cat "$DIR"/history-*.jsonl >"$DIR/history.jsonl"
echo "study-v2: grid complete: $DIR/history.jsonl ($(wc -l <"$DIR/history.jsonl") rows)" >&2
# STUDY.md comes from both models' grids, never from one alone, and counts
# the default policy's runs: runs under another policy leave it alone.
if [ "$BTAG" != seq ]; then
  echo "study-v2: runs under $BPOLICY are in $DIR/budgeted-$BTAG-*; compare with: $PG study summarize $DIR/reports-<model> --budgeted $DIR/budgeted-$BTAG-<model> --policy $BPOLICY" >&2
elif [ -d "$DIR/reports-smollm2" ] && [ -d "$DIR/reports-gemma3" ]; then
  "$PG" study report --reports "$DIR/reports-smollm2" --reports "$DIR/reports-gemma3" \
    --budgeted "$DIR/budgeted-seq-smollm2" --budgeted "$DIR/budgeted-seq-gemma3" --out STUDY.md --quiet
  echo "study-v2: wrote STUDY.md; refit the risk model with: $PG risk fit $DIR/history-smollm2.jsonl $DIR/history-gemma3.jsonl --out risk/default.json" >&2
fi
