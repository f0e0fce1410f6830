#!/usr/bin/env bash
# Creates the pinned Python venv used by scripts/reference/make_reference.py and
# bench/hf_extract.py. Lives OUTSIDE the repository.
#
#   PYREF_VENV  venv location (default: ~/.cache/probegate/pyref)
#   PYTHON      interpreter to build it from (default: python3; tested with 3.11)
#
# Usage: scripts/reference/setup-venv.sh            (idempotent; re-run to repair)
# Then:  "$PYREF_VENV/bin/python" scripts/reference/make_reference.py
#
# Everything is installed with --no-deps from requirements.txt, which is the full,
# exactly pinned closure (torch's CUDA libraries included, triton excluded; see the
# notes there). The check at the end imports torch on the CPU.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PYREF_VENV:-$HOME/.cache/probegate/pyref}"
PY="${PYTHON:-python3}"

"$PY" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"setup-venv: python 3.11 is required (torch wheel pin), got {sys.version.split()[0]}; set PYTHON=")
PY

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-deps --only-binary=:all: -r "$HERE/requirements.txt"
# bitsandbytes: NF4 / LLM.int8 fixture (scripts/reference/make_bnb_reference.py). The wheel
# ships a CPU backend; its dependencies (torch, numpy, packaging) are all in requirements.txt.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-deps --only-binary=:all: bitsandbytes==0.48.2

# --no-deps trusts requirements.txt to be the whole closure; pip check says
# where it is not (triton is left out on purpose, see requirements.txt).
"$VENV/bin/python" -m pip check 2>&1 | grep -v -e "requires triton" -e "No broken requirements" | grep . && {
  echo "setup-venv: requirements.txt misses the dependencies above" >&2; exit 1; }
OMP_NUM_THREADS=1 "$VENV/bin/python" - <<'PY'
import torch, transformers, gguf, safetensors, numpy, accelerate, bitsandbytes
# Everything bench/py_gate.py imports, so a gap in the pinned closure fails here
# rather than after the benchmark's probegate runs.
import peft, scipy.stats, sklearn.linear_model, sklearn.metrics
x = torch.ones(2, 2) @ torch.ones(2, 2)
assert float(x.sum()) == 8.0
print(f"pyref venv ok: torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, gguf, safetensors {safetensors.__version__}, "
      f"numpy {numpy.__version__}, accelerate {accelerate.__version__}, "
      f"bitsandbytes {bitsandbytes.__version__}")
PY
echo "venv: $VENV"
