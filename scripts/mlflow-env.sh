#!/usr/bin/env bash
# Installs a pinned MLflow into a virtual environment outside the clone, for
# the real-MLflow integration test (tests/it/mlflow/mod.rs), and prints the
# venv's python. Idempotent: a venv that already has the pinned version is
# reused without touching the network.
#
#   PROBEGATE_CACHE   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/probegate)
#   PYTHON            interpreter the venv is made from (default: python3, >= 3.10)
#   PIP_INDEX_URL     a PyPI mirror, if any (pip reads it)
#
# Usage: scripts/mlflow-env.sh        -> last line of stdout: /…/mlflow-venv/bin/python
set -euo pipefail

MLFLOW_VERSION=3.17.2
CACHE="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}"
VENV="$CACHE/mlflow-venv"
PY="${PYTHON:-python3}"

die() { echo "mlflow-env: error: $*" >&2; exit 2; }

# Written last, so an interrupted install never passes for a finished one.
MARK="$VENV/.probegate-mlflow-$MLFLOW_VERSION"

installed() {
  [ -f "$MARK" ] && [ -x "$VENV/bin/mlflow" ] &&
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mlflow"))' 2>/dev/null)" = "$MLFLOW_VERSION" ]
}

if ! installed; then
  command -v "$PY" >/dev/null || die "$PY not found (set PYTHON to a python >= 3.10)"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PY is older than 3.10; mlflow $MLFLOW_VERSION needs 3.10+ (set PYTHON)"
  mkdir -p "$CACHE"
  echo "mlflow-env: installing mlflow==$MLFLOW_VERSION into $VENV (about 2 minutes)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || die "could not create a venv at $VENV (python3-venv missing?)"
  log="$(mktemp)"
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "mlflow==$MLFLOW_VERSION" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "pip could not install mlflow==$MLFLOW_VERSION (offline? set PIP_INDEX_URL for a mirror)"
  fi
  rm -f "$log"
  touch "$MARK"
  installed || die "the venv at $VENV does not report mlflow $MLFLOW_VERSION after install"
fi
echo "$VENV/bin/python"
