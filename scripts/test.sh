#!/usr/bin/env bash
# The project's one test command: fetch (or reuse) the real models, then run
# every test. README and .ci/run both call this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo test --locked --all-targets "$@"
