#!/usr/bin/env bash
# The project's one test command. README and .ci/run both call this.
#
# Tests build in the release profile: it is the binary users install (and the
# one the install test puts in a temporary prefix, reusing this build), the
# gate is 4x faster than in the dev profile, and one profile means one build.
#
#   1. model-free: unit tests (policy, verdict, config, parsers) in seconds,
#      the job-store suite against redb and a throwaway PostgreSQL server
#      (scripts/postgres-env.sh: installed when missing, on loopback, gone
#      at exit);
#   2. the real models (scripts/fetch-models.sh) and a real MLflow server
#      (scripts/mlflow-env.sh), then every integration test, the shared
#      queue's (several servers on that PostgreSQL) among them.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/probegate-pg.XXXXXX")"
trap 'scripts/postgres-env.sh stop "$PG_DIR"' EXIT
PROBEGATE_TEST_POSTGRES_URL="$(scripts/postgres-env.sh start "$PG_DIR" | tail -1)"
export PROBEGATE_TEST_POSTGRES_URL
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  # CI clones afresh each run; keep build output beside the model cache so
  # the dependency build is reused (it is a plain cargo target directory).
  export CARGO_TARGET_DIR="${PROBEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/probegate}/ci-target"
fi
# Free space, said first: a runner short of disk fails tests far from the cause.
df -h "${TMPDIR:-/tmp}" "${CARGO_TARGET_DIR:-target}" 2>/dev/null | sed 's/^/disk: /' || true
echo "== model-free tests"
cargo test --locked --release --lib --bins "$@"
echo "== real models, MLflow, the installed binary"
scripts/fetch-models.sh
if [ -x scripts/mlflow-env.sh ]; then
  scripts/mlflow-env.sh >/dev/null
fi
# Doc tests are left out so the run closes on the integration binary's count.
cargo test --locked --release --test it "$@"
