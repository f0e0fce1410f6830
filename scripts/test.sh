#!/usr/bin/env bash
# The project's one test command: fetch (or reuse) the real models, then run
# every test. README and .ci/run both call this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  # CI clones afresh each run; keep build output beside the model cache so
  # the dependency build is reused (it is a plain cargo target directory).
  export CARGO_TARGET_DIR="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}/ci-target"
fi
# Doc tests are left out so the run closes on the integration binary's count.
cargo test --locked --lib --bins --tests "$@"
