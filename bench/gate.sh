#!/usr/bin/env bash
# Whole-gate benchmark: `probegate check --full` against the reference Python
# pipeline (bench/py_gate.py: transformers + peft, scikit-learn), run side by
# side on the same machine with the same thread count. Prints one JSON line
# per run and the ratios. See BENCHMARKS.md.
#
# probegate runs six times: --full (the peer's work, cold and base-cached),
# under the default policy (budgeted, as README command 1 and the Action run
# it; cold and base-cached), under the default with its stop at the
# verdict off (cold), and under the default with a risk model fitted without
# the corpus features (cold; `risk fit --features` on the committed grid), so
# the corpus runs only if the ladder realigns. The peer always does the full
# work: a user writing the Python pipeline would not write a risk-ordered budget.
#
#   THREADS   threads for both sides (default 2)
#   PYREF     the pinned Python (default ~/.cache/probegate/pyref/bin/python,
#             made by scripts/reference/setup-venv.sh)
#   CONCEPTS  a subset of the suite's concepts, space-separated (default: all
#             six, 18 monitors); how the gate grows with the monitors it runs
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
CACHE="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}"
PY="${PYREF:-$CACHE/pyref/bin/python}"
BASE="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER=fixtures/zoo/smollm2-lora-r8-attn-support
[ -f "$BASE" ] || { echo "gate.sh: run scripts/fetch-models.sh smollm2 first" >&2; exit 2; }
[ -x "$PY" ] || { echo "gate.sh: run scripts/reference/setup-venv.sh first" >&2; exit 2; }
# The peer's imports first: a broken venv should fail now, not after 15 minutes.
"$PY" -c 'import torch, transformers, peft, scipy.stats, sklearn.linear_model, sklearn.metrics' \
  || { echo "gate.sh: the peer's venv is incomplete; rerun scripts/reference/setup-venv.sh" >&2; exit 2; }
cargo build --release --quiet
PG=target/release/probegate
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
MONITORS=monitors/smollm2
if [ -n "${CONCEPTS:-}" ]; then
  MONITORS="$work/monitors"; mkdir -p "$MONITORS"
  for c in $CONCEPTS; do
    found=0
    for d in monitors/smollm2/"$c"-l*; do [ -d "$d" ] && ln -s "$PWD/$d" "$MONITORS/" && found=1; done
    [ "$found" = 1 ] || { echo "gate.sh: no monitors for concept '$c'" >&2; exit 2; }
  done
fi
# A cold activation cache (models linked in), so probegate computes the base side too.
mkdir -p "$work/cache/models"; ln -s "$CACHE"/models/* "$work/cache/models/"

run_pg() {
  local t0 t1 name="$1"; shift
  t0=$(date +%s.%N)
  PROBEGATE_CACHE="$work/cache" RAYON_NUM_THREADS="$THREADS" "$PG" --quiet --threads "$THREADS" check \
    --base smollm2 --candidate "smollm2+$ADAPTER" --monitors "$MONITORS" "$@" --no-history \
    --out "$work/$name" >/dev/null || [ $? -eq 1 ]
  t1=$(date +%s.%N)
  python3 - "$work/$name/report.json" "$name" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"peer": "probegate " + sys.argv[2], "wall_seconds": float(sys.argv[3]), "seconds": r["seconds"],
                  "stale": sum(m["status"] != "healthy" for m in r["monitors"]),
                  "labeled_examples": r["budget"]["examples_used"],
                  "verdict": r["verdict"]}))
PY
}

pg_cold=$(run_pg cold --full)
# Warm as in CI: the base's activations stay cached from earlier gates, the
# candidate's are computed afresh.
clear_cand() { PROBEGATE_CACHE="$work/cache" "$PG" --quiet cache clear --model "smollm2+$ADAPTER"; }
clear_cand
pg_warm=$(run_pg warm --full)
# The default policy, cold: nothing cached at all.
rm -rf "$work/cache"; mkdir -p "$work/cache/models"; ln -s "$CACHE"/models/* "$work/cache/models/"
pg_dcold=$(run_pg default-cold)
clear_cand
pg_dwarm=$(run_pg default-warm)
# The default policy with its stop at the verdict off (budget.stop_at_verdict):
# the repair ladder climbed on a failing candidate too. Cold, like default-cold.
printf 'name = "default-no-stop"\nextends = "default"\n[budget]\nstop_at_verdict = false\n' > "$work/nostop.toml"
rm -rf "$work/cache"; mkdir -p "$work/cache/models"; ln -s "$CACHE"/models/* "$work/cache/models/"
pg_ncold=$(run_pg default-no-stop-cold --policy "$work/nostop.toml")
# The default policy with a risk model that reads no corpus feature. Cold.
FEATURES=depth_fraction,base_auroc,log_weight_norm,log_change_below,log_stable_rank,family_quantization,family_low_rank,family_quant_adapter,family_full,log_change_at,concept_abs_shift,concept_ks,concept_flip_rate,concept_decision_loss
"$PG" --quiet risk fit study/v2/history-smollm2.jsonl study/v2/history-gemma3.jsonl \
  --features "$FEATURES" --out "$work/no-corpus.json" >/dev/null
rm -rf "$work/cache"; mkdir -p "$work/cache/models"; ln -s "$CACHE"/models/* "$work/cache/models/"
pg_ccold=$(run_pg default-no-corpus-cold --risk-model "$work/no-corpus.json")
t0=$(date +%s.%N)
py=$(OMP_NUM_THREADS="$THREADS" "$PY" bench/py_gate.py --base "$BASE" --adapter "$ADAPTER" \
  --monitors "$MONITORS" --data data/suite --corpus data/realign/corpus.jsonl --threads "$THREADS")
t1=$(date +%s.%N)
echo "$pg_cold"; echo "$pg_warm"; echo "$pg_dcold"; echo "$pg_dwarm"; echo "$pg_ncold"; echo "$pg_ccold"; echo "$py" | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("features"); print(json.dumps(d))'
python3 - "$pg_cold" "$pg_warm" "$pg_dcold" "$pg_dwarm" "$pg_ncold" "$pg_ccold" "$py" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
cold, warm, dcold, dwarm, ncold, ccold, py = (json.loads(x) for x in sys.argv[1:8])
py_wall = float(sys.argv[8])
print(f"whole gate, SmolLM2 + LoRA adapter, full revalidation of {len(py['monitors'])} monitors, {py['threads']} threads:")
print(f"  python reference {py_wall:7.1f} s wall (stages {py['seconds']['total']:.1f} s)")
print(f"  probegate cold   {cold['wall_seconds']:7.1f} s wall  -> {py_wall / cold['wall_seconds']:.2f}x faster")
print(f"  probegate warm   {warm['wall_seconds']:7.1f} s wall  -> {py_wall / warm['wall_seconds']:.2f}x faster (base activations cached)")
print(f"default policy (budgeted, {dcold['labeled_examples']} labeled examples), same peer:")
print(f"  probegate cold   {dcold['wall_seconds']:7.1f} s wall  -> {py_wall / dcold['wall_seconds']:.2f}x faster")
print(f"  probegate warm   {dwarm['wall_seconds']:7.1f} s wall  -> {py_wall / dwarm['wall_seconds']:.2f}x faster (base activations cached)")
print(f"default policy without its stop at the verdict ({ncold['labeled_examples']} labeled examples):")
print(f"  probegate cold   {ncold['wall_seconds']:7.1f} s wall  -> {py_wall / ncold['wall_seconds']:.2f}x faster")
print(f"default policy, risk model without the corpus features ({ccold['labeled_examples']} labeled examples, {ccold['verdict']}):")
print(f"  probegate cold   {ccold['wall_seconds']:7.1f} s wall  -> {py_wall / ccold['wall_seconds']:.2f}x faster")
PY
