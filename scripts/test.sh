#!/usr/bin/env bash
# The project's one test command. README and .ci/run both call this.
#
# Tests build in the release profile: it is the binary users install (and the
# one the install test puts in a temporary prefix, reusing this build), the
# gate is 4x faster than in the dev profile, and one profile means one build.
#
#   1. model-free: unit tests (policy, verdict, config, parsers) in seconds;
#   2. the real models (scripts/fetch-models.sh) and a real MLflow server
#      (scripts/mlflow-env.sh), then every integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  # CI clones afresh each run; keep build output beside the model cache so
  # the dependency build is reused (it is a plain cargo target directory).
  export CARGO_TARGET_DIR="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}/ci-target"
fi
echo "== model-free tests"
cargo test --locked --release --lib --bins "$@"
echo "== real models, MLflow, the installed binary"
scripts/fetch-models.sh
if [ -x scripts/mlflow-env.sh ]; then
  scripts/mlflow-env.sh >/dev/null
fi
# Doc tests are left out so the run closes on the integration binary's count.
cargo test --locked --release --test it "$@"
