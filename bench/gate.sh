#!/usr/bin/env bash
# Whole-gate benchmark: `probegate check --full` against the reference Python
# pipeline (bench/py_gate.py: transformers + peft, scikit-learn), run side by
# side on the same machine with the same thread count. Prints one JSON line
# per run and the ratios. See BENCHMARKS.md.
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
  local t0 t1
  t0=$(date +%s.%N)
  PROBEGATE_CACHE="$work/cache" RAYON_NUM_THREADS="$THREADS" "$PG" --quiet --threads "$THREADS" check \
    --base smollm2 --candidate "smollm2+$ADAPTER" --monitors "$MONITORS" --full --no-history \
    --out "$work/$1" >/dev/null || [ $? -eq 1 ]
  t1=$(date +%s.%N)
  python3 - "$work/$1/report.json" "$1" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"peer": "probegate " + sys.argv[2], "wall_seconds": float(sys.argv[3]), "seconds": r["seconds"],
                  "stale": sum(m["status"] != "healthy" for m in r["monitors"]),
                  "verdict": r["verdict"]}))
PY
}

pg_cold=$(run_pg cold)
# Warm as in CI: the base's activations stay cached from earlier gates, the
# candidate's are computed afresh.
PROBEGATE_CACHE="$work/cache" "$PG" --quiet cache clear --model "smollm2+$ADAPTER"
pg_warm=$(run_pg warm)
t0=$(date +%s.%N)
py=$(OMP_NUM_THREADS="$THREADS" "$PY" bench/py_gate.py --base "$BASE" --adapter "$ADAPTER" \
  --monitors "$MONITORS" --data data/suite --corpus data/realign/corpus.jsonl --threads "$THREADS")
t1=$(date +%s.%N)
echo "$pg_cold"; echo "$pg_warm"; echo "$py" | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("features"); print(json.dumps(d))'
python3 - "$pg_cold" "$pg_warm" "$py" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, sys
cold, warm, py = (json.loads(x) for x in sys.argv[1:4])
py_wall = float(sys.argv[4])
print(f"whole gate, SmolLM2 + LoRA adapter, full revalidation of {len(py['monitors'])} monitors, {py['threads']} threads:")
print(f"  python reference {py_wall:7.1f} s wall (stages {py['seconds']['total']:.1f} s)")
print(f"  probegate cold   {cold['wall_seconds']:7.1f} s wall  -> {py_wall / cold['wall_seconds']:.2f}x faster")
print(f"  probegate warm   {warm['wall_seconds']:7.1f} s wall  -> {py_wall / warm['wall_seconds']:.2f}x faster (base activations cached)")
PY
